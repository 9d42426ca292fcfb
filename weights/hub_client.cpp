#include "weights/hub_client.h"

#include <curl/curl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/logging.h"

namespace dsocr::weights {
namespace fs = std::filesystem;
namespace {

using json = nlohmann::json;

void init_curl_once() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct HttpResult {
  long status = 0;
  std::map<std::string, std::string> headers;  // lower-case names, last value wins
  std::string body;                            // unless streamed to a file
  std::string curl_error;                      // transport failure (status 0)
};

struct Transfer {
  HttpResult* result;
  std::FILE* sink = nullptr;  // body goes here when set (only for 2xx answers)
  const HubOptions* options;
  DownloadProgress progress;
  uint64_t already = 0;     // bytes present before this transfer (resume)
  long current_status = 0;  // of the response being received (redirects have their own)
  std::chrono::steady_clock::time_point last_report;
};

size_t on_header(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::string line(data, size * n);
  if (line.rfind("HTTP/", 0) == 0) {  // a new response (after a redirect, for instance)
    t->result->headers.clear();
    auto space = line.find(' ');
    t->current_status =
        space == std::string::npos ? 0 : std::strtol(line.c_str() + space + 1, nullptr, 10);
  }
  auto colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    std::string value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.erase(0, 1);
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' '))
      value.pop_back();
    t->result->headers[name] = value;
  }
  return size * n;
}

size_t on_body(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  // Only a successful body goes to the file; an error page is kept for the message instead.
  if (t->sink && t->current_status >= 200 && t->current_status < 300) {
    return std::fwrite(data, size, n, t->sink) * size;
  }
  t->result->body.append(data, size * n);
  return size * n;
}

int on_progress(void* user, curl_off_t total, curl_off_t now, curl_off_t, curl_off_t) {
  auto* t = static_cast<Transfer*>(user);
  if (!t->sink || !t->options->progress) return 0;
  auto clock = std::chrono::steady_clock::now();
  if (clock - t->last_report < std::chrono::milliseconds(100)) return 0;
  t->last_report = clock;
  t->progress.done = t->already + static_cast<uint64_t>(now);
  if (total > 0) t->progress.total = t->already + static_cast<uint64_t>(total);
  t->options->progress(t->progress);
  return 0;
}

std::string host_of(const std::string& url) {
  auto start = url.find("://");
  start = start == std::string::npos ? 0 : start + 3;
  auto end = url.find_first_of("/?#", start);
  return url.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

// One HTTP exchange. `sink` receives a 2xx body (appended); `resume_from` adds a Range header.
HttpResult http(const HubOptions& options, const std::string& method, const std::string& url,
                bool follow_redirects, std::FILE* sink = nullptr, uint64_t resume_from = 0,
                const std::string& file_name = "") {
  init_curl_once();
  HttpResult result;
  CURL* curl = curl_easy_init();
  if (!curl) {
    result.curl_error = "curl_easy_init failed";
    return result;
  }
  Transfer transfer{&result, nullptr, &options, {file_name, 0, 0}, resume_from, {}};
  curl_slist* headers = nullptr;
  headers = curl_slist_append(headers, "User-Agent: dsocr/0.1 (hub client; libcurl)");
  // The token goes to the hub itself only; libcurl also drops it on redirects to other hosts.
  if (!options.token.empty() && host_of(url) == host_of(options.endpoint)) {
    headers = curl_slist_append(headers, ("Authorization: Bearer " + options.token).c_str());
  }
  std::string range;
  if (resume_from > 0) {
    range = std::to_string(resume_from) + "-";
    curl_easy_setopt(curl, CURLOPT_RANGE, range.c_str());
  }
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, follow_redirects ? 1L : 0L);
  curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, options.connect_timeout_s);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1024L);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, options.low_speed_timeout_s);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &transfer);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &transfer);
  curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &transfer);
  curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
  if (method == "HEAD") curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  transfer.sink = sink;
  CURLcode rc = curl_easy_perform(curl);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &result.status);
  if (rc != CURLE_OK) {
    result.curl_error = curl_easy_strerror(rc);
    result.status = 0;
  }
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  return result;
}

std::string normalize_etag(std::string etag) {
  if (etag.rfind("W/", 0) == 0) etag.erase(0, 2);
  if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"')
    etag = etag.substr(1, etag.size() - 2);
  return etag;
}

bool is_sha256_hex(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

StatusOr<std::string> sha256_of_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return unavailable("cannot read " + path.string());
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (in.gcount() > 0) EVP_DigestUpdate(ctx, buf.data(), static_cast<size_t>(in.gcount()));
  }
  unsigned char digest[32];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, digest, &len);
  EVP_MD_CTX_free(ctx);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out.push_back(hex[digest[i] >> 4]);
    out.push_back(hex[digest[i] & 15]);
  }
  return out;
}

Status status_for(const HttpResult& r, const std::string& what) {
  if (r.status == 0) return unavailable(what + ": " + r.curl_error);
  if (r.status == 401 || r.status == 403) {
    return unauthenticated(what + ": HTTP " + std::to_string(r.status) +
                           " (a gated or private model? set HF_TOKEN to a token with access)");
  }
  if (r.status == 404) return not_found(what + ": HTTP 404 (no such repository, revision or file)");
  return unavailable(what + ": HTTP " + std::to_string(r.status));
}

bool retryable(const HttpResult& r) { return r.status == 0 || r.status == 429 || r.status >= 500; }

void backoff(int attempt) {
  std::this_thread::sleep_for(std::chrono::milliseconds(200 * (1 << std::min(attempt, 5))));
}

// GET with retries for small JSON answers.
StatusOr<HttpResult> get_with_retries(const HubOptions& options, const std::string& url,
                                      const std::string& what) {
  HttpResult r;
  for (int attempt = 0;; ++attempt) {
    r = http(options, "GET", url, /*follow_redirects=*/true);
    if (r.status >= 200 && r.status < 300) return r;
    if (!retryable(r) || attempt >= options.max_retries) return status_for(r, what);
    log::get("weights")->warn("{}: {}; retrying", what,
                              r.status ? "HTTP " + std::to_string(r.status) : r.curl_error);
    backoff(attempt);
  }
}

Status download_file(const HubOptions& options, const fs::path& repo_dir, const std::string& repo,
                     const std::string& commit, const std::string& file) {
  const std::string url = options.endpoint + "/" + repo + "/resolve/" + commit + "/" + file;
  const std::string what = repo + "/" + file;
  HttpResult head;
  for (int attempt = 0;; ++attempt) {
    head = http(options, "HEAD", url, /*follow_redirects=*/false);
    if (head.status >= 200 && head.status < 400) break;
    if (!retryable(head) || attempt >= options.max_retries) return status_for(head, what);
    backoff(attempt);
  }
  std::string etag = normalize_etag(
      head.headers.count("x-linked-etag") ? head.headers["x-linked-etag"] : head.headers["etag"]);
  if (etag.empty() || etag.find('/') != std::string::npos || etag.find("..") != std::string::npos) {
    return unavailable(what + ": the hub sent no usable ETag");
  }
  uint64_t size = 0;
  const std::string size_header = head.headers.count("x-linked-size")
                                      ? head.headers["x-linked-size"]
                                      : head.headers["content-length"];
  if (!size_header.empty()) size = std::strtoull(size_header.c_str(), nullptr, 10);

  std::error_code ec;
  const fs::path blob = repo_dir / "blobs" / etag;
  const fs::path pointer = repo_dir / "snapshots" / commit / file;
  fs::create_directories(pointer.parent_path(), ec);
  if (!fs::exists(blob, ec)) {
    const fs::path partial = blob.string() + ".incomplete";
    for (int attempt = 0;; ++attempt) {
      uint64_t have = fs::exists(partial, ec) ? fs::file_size(partial, ec) : 0;
      std::FILE* out = std::fopen(partial.c_str(), have > 0 ? "ab" : "wb");
      if (!out) return unavailable("cannot write " + partial.string());
      HttpResult got = http(options, "GET", url, /*follow_redirects=*/true, out, have, file);
      std::fclose(out);
      if (got.status == 200 && have > 0) {
        // The server ignored the Range: it sent the whole file after the partial one. Start over.
        fs::remove(partial, ec);
        if (attempt < options.max_retries) continue;
      }
      if (got.status == 416 && size > 0 && have == size) break;  // already complete
      if ((got.status == 200 || got.status == 206) && got.curl_error.empty()) {
        uint64_t now = fs::file_size(partial, ec);
        if (size == 0 || now == size) break;
        if (now > size) fs::remove(partial, ec);  // cannot be right: start again
      } else if (got.status >= 400 && !retryable(got)) {
        fs::remove(partial, ec);
        return status_for(got, what);
      }
      if (attempt >= options.max_retries) {
        return got.status == 0 || got.status >= 400 ? status_for(got, what)
                                                    : unavailable(what + ": incomplete download");
      }
      log::get("weights")->warn("{}: download interrupted ({}), resuming", what,
                                got.status ? "HTTP " + std::to_string(got.status) : got.curl_error);
      backoff(attempt);
    }
    if (is_sha256_hex(etag)) {
      DSOCR_ASSIGN_OR_RETURN(std::string digest, sha256_of_file(partial));
      if (digest != etag) {
        fs::remove(partial, ec);
        return data_loss(what + ": sha256 " + digest + " does not match the hub's " + etag);
      }
    }
    fs::rename(partial, blob, ec);
    if (ec) return unavailable("cannot place " + blob.string() + ": " + ec.message());
  }
  fs::remove(pointer, ec);
  fs::create_symlink(blob.lexically_relative(pointer.parent_path()), pointer, ec);
  if (ec) return unavailable("cannot link " + pointer.string() + ": " + ec.message());
  if (options.progress) options.progress({file, size, size});
  return Status();
}

}  // namespace

HubOptions HubOptions::from_environment() {
  HubOptions o;
  if (const char* e = std::getenv("HF_ENDPOINT"); e && *e) o.endpoint = e;
  while (!o.endpoint.empty() && o.endpoint.back() == '/') o.endpoint.pop_back();
  if (const char* t = std::getenv("HF_TOKEN"); t && *t) o.token = t;
  if (const char* off = std::getenv("HF_HUB_OFFLINE"); off && *off) {
    std::string v = off;
    o.offline = v == "1" || v == "true" || v == "TRUE" || v == "yes" || v == "ON" || v == "on";
  }
  o.cache_dir = hub_cache_dir();
  return o;
}

bool is_wanted_model_file(std::string_view name) {
  auto ends_with = [&](std::string_view suffix) {
    return name.size() >= suffix.size() && name.substr(name.size() - suffix.size()) == suffix;
  };
  return ends_with(".json") || ends_with(".safetensors");
}

bool is_tokenizer_file(std::string_view name) {
  for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json",
                        "special_tokens_map.json", "processor_config.json"}) {
    if (name == f) return true;
  }
  return false;
}

StatusOr<fs::path> download_snapshot(const HubRepoId& id, const HubOptions& options,
                                     const std::function<bool(std::string_view)>& wanted) {
  if (options.offline) {
    if (auto cached = find_cached_snapshot(options.cache_dir, id)) return *cached;
    return not_found("model '" + id.repo() + "@" + id.revision +
                     "' is not in the hub cache and HF_HUB_OFFLINE is set");
  }
  const std::string what = "hub " + options.endpoint + " model " + id.repo() + "@" + id.revision;
  DSOCR_ASSIGN_OR_RETURN(
      HttpResult info,
      get_with_retries(options,
                       options.endpoint + "/api/models/" + id.repo() + "/revision/" + id.revision,
                       what));
  json j = json::parse(info.body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("sha") || !j["sha"].is_string() ||
      !j.contains("siblings") || !j["siblings"].is_array()) {
    return unavailable(what + ": unexpected answer from the hub API");
  }
  const std::string commit = j["sha"].get<std::string>();
  if (commit.size() != 40 || commit.find('/') != std::string::npos) {
    return unavailable(what + ": the hub API sent a malformed commit id");
  }
  std::vector<std::string> files;
  for (const auto& s : j["siblings"]) {
    if (!s.contains("rfilename") || !s["rfilename"].is_string()) continue;
    std::string name = s["rfilename"].get<std::string>();
    if (name.find("..") != std::string::npos || name.front() == '/')
      continue;  // never leave the dir
    if (wanted(name)) files.push_back(name);
  }
  if (std::find(files.begin(), files.end(), "config.json") == files.end()) {
    return not_found(what + ": the repository has no config.json (not a model?)");
  }
  const fs::path repo_dir = hub_repo_dir(options.cache_dir, id);
  std::error_code ec;
  fs::create_directories(repo_dir / "blobs", ec);
  fs::create_directories(repo_dir / "refs", ec);
  if (ec) return unavailable("cannot create " + repo_dir.string() + ": " + ec.message());
  auto logger = log::get("weights");
  logger->info("downloading {} ({} files, commit {}) into {}", id.repo(), files.size(), commit,
               repo_dir.string());
  for (const auto& file : files) {
    DSOCR_RETURN_IF_ERROR(download_file(options, repo_dir, id.repo(), commit, file));
  }
  if (id.revision != commit) {
    std::ofstream ref(repo_dir / "refs" / id.revision, std::ios::trunc);
    ref << commit;  // huggingface_hub writes the commit without a newline
  }
  return repo_dir / "snapshots" / commit;
}

StatusOr<ModelSource> resolve_or_download_model(
    std::string_view spec, const HubOptions& options,
    const std::function<bool(std::string_view)>& wanted) {
  auto source = resolve_model_source(spec, options.cache_dir);
  if (source.ok() || source.status().code() != StatusCode::kNotFound) return source;
  auto id = parse_hub_repo_id(spec);
  if (!id.ok() || spec.starts_with("/") || spec.starts_with("."))
    return source;  // a missing local dir
  auto dir = download_snapshot(*id, options, wanted);
  if (!dir.ok()) {
    return Status(
        dir.status().code(),
        dir.status().message() + ". Or try --model demo (tiny random weights, runs anywhere).");
  }
  ModelSource downloaded;
  downloaded.kind = ModelSource::Kind::kHubCache;
  downloaded.spec = std::string(spec);
  downloaded.dir = *dir;
  downloaded.name = id->repo();
  return downloaded;
}

std::function<void(const DownloadProgress&)> terminal_progress_reporter() {
  const bool tty = isatty(STDERR_FILENO);
  auto last = std::make_shared<std::chrono::steady_clock::time_point>();
  return [tty, last](const DownloadProgress& p) {
    auto now = std::chrono::steady_clock::now();
    const bool done = p.total > 0 && p.done >= p.total;
    if (!done && now - *last < std::chrono::milliseconds(tty ? 200 : 5000)) return;
    *last = now;
    int pct = p.total ? static_cast<int>(100 * p.done / p.total) : 0;
    if (tty) {
      std::fprintf(stderr, "\r%-40.40s [%-25s] %3d%% %8.1f MB", p.file.c_str(),
                   std::string(pct / 4, '#').c_str(), pct, p.done / 1e6);
      if (done) std::fprintf(stderr, "\n");
    } else {
      std::fprintf(stderr, "download %s: %d%% (%.1f of %.1f MB)\n", p.file.c_str(), pct,
                   p.done / 1e6, p.total / 1e6);
    }
  };
}

}  // namespace dsocr::weights

#include "server/image_fetcher.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>
#include <vector>

#include "common/version.h"

namespace dsocr::server {
namespace {

bool starts_with_ci(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(s[i])) != prefix[i]) return false;
  }
  return true;
}

int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

StatusOr<std::string> decode_base64(std::string_view text) {
  std::string out;
  out.reserve(text.size() / 4 * 3 + 3);
  uint32_t acc = 0;
  int bits = 0;
  size_t padding = 0;
  for (char c : text) {
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    if (c == '=') {
      ++padding;
      continue;
    }
    int v = base64_value(c);
    if (v < 0 || padding > 0) return invalid_argument("the data: URI is not valid base64");
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  if (bits >= 6 || padding > 2) return invalid_argument("the data: URI is not valid base64");
  return out;
}

// Which media types we accept from a server or a data: URI: images and PDFs. Many servers label
// them application/octet-stream; the decoder (or the PDF check) sniffs the real format anyway.
bool acceptable_media_type(std::string_view type) {
  return type.empty() || starts_with_ci(type, "image/") ||
         starts_with_ci(type, "application/pdf") || starts_with_ci(type, "application/x-pdf") ||
         starts_with_ci(type, "application/octet-stream") ||
         starts_with_ci(type, "binary/octet-stream");
}

bool in_v4(uint32_t addr, uint32_t net, int prefix) {
  uint32_t mask = prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix);
  return (addr & mask) == (net & mask);
}

bool is_public_v4(uint32_t a) {
  struct Range {
    uint32_t net;
    int prefix;
  };
  static constexpr std::array<Range, 15> kBlocked = {{
      {0x00000000, 8},   // "this" network, 0.0.0.0
      {0x0A000000, 8},   // 10/8 private
      {0x64400000, 10},  // 100.64/10 carrier-grade NAT
      {0x7F000000, 8},   // loopback
      {0xA9FE0000, 16},  // 169.254/16 link-local, cloud metadata
      {0xAC100000, 12},  // 172.16/12 private
      {0xC0000000, 24},  // 192.0.0/24 IETF protocol assignments
      {0xC0000200, 24},  // 192.0.2/24 documentation
      {0xC0A80000, 16},  // 192.168/16 private
      {0xC6120000, 15},  // 198.18/15 benchmarking
      {0xC6336400, 24},  // 198.51.100/24 documentation
      {0xCB007100, 24},  // 203.0.113/24 documentation
      {0xE0000000, 4},   // multicast
      {0xF0000000, 4},   // reserved, broadcast
      {0xC0586300, 24},  // 192.88.99/24 6to4 relay anycast
  }};
  for (const Range& r : kBlocked) {
    if (in_v4(a, r.net, r.prefix)) return false;
  }
  return true;
}

uint32_t v4_at(const uint8_t* bytes) {
  return (uint32_t{bytes[0]} << 24) | (uint32_t{bytes[1]} << 16) | (uint32_t{bytes[2]} << 8) |
         bytes[3];
}

bool starts_with_bytes(const uint8_t* b, std::initializer_list<uint8_t> prefix) {
  return std::equal(prefix.begin(), prefix.end(), b);
}

bool is_public_v6(const in6_addr& a) {
  const uint8_t* b = a.s6_addr;
  // Forms that carry an IPv4 address: where the packet ends up is decided by that address (by the
  // kernel, a translator or a tunnel relay), so it is judged instead of the IPv6 one.
  if (starts_with_bytes(b, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF})) {  // mapped ::ffff:0:0/96
    return is_public_v4(v4_at(b + 12));
  }
  if (starts_with_bytes(b, {0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0})) {  // translated, RFC 2765
    return is_public_v4(v4_at(b + 12));
  }
  if (starts_with_bytes(b, {0, 0x64, 0xFF, 0x9B, 0, 0, 0, 0, 0, 0, 0, 0})) {  // NAT64 well-known
    return is_public_v4(v4_at(b + 12));
  }
  if (starts_with_bytes(b, {0x20, 0x02})) return is_public_v4(v4_at(b + 2));  // 6to4 2002::/16
  if (starts_with_bytes(b, {0x20, 0x01, 0, 0})) {
    // Teredo 2001::/32: the relay server's address, then the client's, stored inverted.
    const uint8_t client[4] = {static_cast<uint8_t>(~b[12]), static_cast<uint8_t>(~b[13]),
                               static_cast<uint8_t>(~b[14]), static_cast<uint8_t>(~b[15])};
    return is_public_v4(v4_at(b + 4)) && is_public_v4(v4_at(client));
  }
  // Local-use NAT64 (RFC 8215): the IPv4 address sits where the local prefix length puts it, which
  // cannot be known from here, and the range is local by definition.
  if (starts_with_bytes(b, {0, 0x64, 0xFF, 0x9B, 0, 0x01})) return false;
  // ::/96 covers ::, ::1 and the deprecated IPv4-compatible ::a.b.c.d, which nothing legitimate
  // uses any more.
  if (starts_with_bytes(b, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})) return false;
  if ((b[0] & 0xFE) == 0xFC) return false;                           // fc00::/7 unique local
  if (b[0] == 0xFE && (b[1] & 0xC0) == 0x80) return false;           // fe80::/10 link-local
  if (b[0] == 0xFE && (b[1] & 0xC0) == 0xC0) return false;           // fec0::/10 site-local
  if (b[0] == 0xFF) return false;                                    // multicast
  if (starts_with_bytes(b, {0x20, 0x01, 0x0D, 0xB8})) return false;  // documentation
  return true;
}

struct CurlUrlDeleter {
  void operator()(CURLU* u) const { curl_url_cleanup(u); }
};
struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct CurlMultiDeleter {
  void operator()(CURLM* m) const { curl_multi_cleanup(m); }
};
struct CurlListDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
struct CurlString {
  char* p = nullptr;
  ~CurlString() { curl_free(p); }
};

struct ParsedUrl {
  std::string scheme, host, port;  // host without IPv6 brackets
};

StatusOr<ParsedUrl> parse_http_url(const std::string& url) {
  std::unique_ptr<CURLU, CurlUrlDeleter> u(curl_url());
  if (!u || curl_url_set(u.get(), CURLUPART_URL, url.c_str(), 0) != CURLUE_OK) {
    return invalid_argument("image URL is not a valid URL");
  }
  CurlString scheme, host, port;
  curl_url_get(u.get(), CURLUPART_SCHEME, &scheme.p, 0);
  curl_url_get(u.get(), CURLUPART_HOST, &host.p, 0);
  curl_url_get(u.get(), CURLUPART_PORT, &port.p, CURLU_DEFAULT_PORT);
  if (!scheme.p || !host.p || !port.p) return invalid_argument("image URL has no host");
  ParsedUrl p{scheme.p, host.p, port.p};
  if (p.scheme != "http" && p.scheme != "https") {
    return invalid_argument("image URL scheme '" + p.scheme +
                            "' is not supported (http, https, data, file)");
  }
  if (p.host.size() >= 2 && p.host.front() == '[' && p.host.back() == ']') {
    p.host = p.host.substr(1, p.host.size() - 2);
  }
  return p;
}

using Clock = std::chrono::steady_clock;

// How often cancelled() is polled: often enough that a fetch stops within about this long after
// its client leaves, rarely enough that a probe doing a system call costs nothing measurable.
constexpr auto kPollInterval = std::chrono::milliseconds(50);

int64_t whole_ms(Clock::duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

// The time and the cancellation that bound one fetch() call, shared by all its hops.
// Not thread-safe: used by the fetching thread only.
class FetchBudget {
 public:
  FetchBudget(const FetchControl& control, int64_t total_timeout_ms)
      : control_(control), start_(Clock::now()), last_poll_(start_ - kPollInterval) {
    // Clamped so that adding it to now cannot overflow; a day is "no limit" for an image.
    const auto own =
        std::chrono::milliseconds(std::clamp<int64_t>(total_timeout_ms, 0, 86'400'000));
    own_deadline_ = start_ + own;
    deadline_ = std::min(control.deadline, own_deadline_);
  }

  // OK while time is left and the caller has not cancelled. cancelled() is asked at most once per
  // kPollInterval, however often this is called.
  Status check(std::string_view where) {
    const auto now = Clock::now();
    if (now >= deadline_) return timed_out(where, now);
    if (control_.cancelled && now - last_poll_ >= kPollInterval) {
      last_poll_ = now;
      if (control_.cancelled()) {
        return Status(StatusCode::kCancelled,
                      "fetching the image from " + std::string(where) + " was cancelled");
      }
    }
    return Status();
  }

  // The error for running out of time, also used when curl's own timer noticed first.
  Status timed_out(std::string_view where, Clock::time_point now) const {
    std::string message = "fetching the image from " + std::string(where) + " timed out after " +
                          std::to_string(whole_ms(now - start_)) + " ms";
    if (deadline_ < own_deadline_) message += " (the request's time for fetching images ran out)";
    return Status(StatusCode::kDeadlineExceeded, std::move(message));
  }

  Clock::time_point deadline() const { return deadline_; }
  // At least 1: curl reads 0 as "no timeout".
  long ms_left() const { return static_cast<long>(std::max<int64_t>(1, ms_until(deadline_))); }

 private:
  static int64_t ms_until(Clock::time_point t) {
    const auto now = Clock::now();
    return t <= now ? 0 : whole_ms(t - now) + 1;  // rounded up, so a wait never ends early
  }

  const FetchControl& control_;
  Clock::time_point start_;
  Clock::time_point own_deadline_;
  Clock::time_point deadline_;
  Clock::time_point last_poll_;  // start_ - kPollInterval at first: the first check() polls
};

StatusOr<std::vector<std::string>> system_resolve(const std::string& host,
                                                  const std::string& port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &found);
  if (rc != 0 || !found) {
    return invalid_argument("cannot resolve image host '" + host + "': " + gai_strerror(rc));
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> guard(found, freeaddrinfo);
  std::vector<std::string> addresses;
  for (addrinfo* ai = found; ai; ai = ai->ai_next) {
    char text[INET6_ADDRSTRLEN] = {};
    if (ai->ai_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(ai->ai_addr)->sin_addr, text,
                sizeof(text));
    } else if (ai->ai_family == AF_INET6) {
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(ai->ai_addr)->sin6_addr, text,
                sizeof(text));
    } else {
      continue;
    }
    addresses.emplace_back(text);
  }
  return addresses;
}

// A numeric host needs no lookup (and getaddrinfo would not block on it); nullopt for names.
std::optional<std::string> numeric_host(const std::string& host) {
  in_addr v4{};
  in6_addr v6{};
  char text[INET6_ADDRSTRLEN] = {};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) {
    return std::string(inet_ntop(AF_INET, &v4, text, sizeof(text)));
  }
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    return std::string(inet_ntop(AF_INET6, &v6, text, sizeof(text)));
  }
  return std::nullopt;
}

// Host lookups run on a thread of their own so that the fetch can stop waiting at its deadline or
// on cancellation: getaddrinfo cannot be interrupted, and its own retries (resolv.conf: 5 s per
// try and server) know nothing of our deadline. getaddrinfo_a was the alternative, but it cannot
// abandon a lookup in progress either (gai_cancel answers EAI_NOTCANCELED) and its request must
// outlive the lookup, so it would need the same shared ownership with less control over threads.
// An abandoned lookup keeps its thread until the resolver gives up; kMaxLookupThreads bounds how
// many exist at once, so a host whose DNS never answers cannot pile up threads.
constexpr int kMaxLookupThreads = 64;
std::atomic<int> lookup_threads{0};

struct PendingLookup {
  std::mutex mu;
  std::condition_variable done_cv;
  bool done = false;  // guarded by mu
  StatusOr<std::vector<std::string>> addresses = internal_error("the host lookup did not finish");
};

StatusOr<std::vector<std::string>> resolve_within_budget(const std::string& host,
                                                         const std::string& port,
                                                         const HostResolver& resolver,
                                                         FetchBudget& budget,
                                                         std::string_view where) {
  if (lookup_threads.fetch_add(1) >= kMaxLookupThreads) {
    lookup_threads.fetch_sub(1);
    return resource_exhausted("too many image host lookups are still running; retry later");
  }
  auto pending = std::make_shared<PendingLookup>();
  try {
    std::thread([pending, host, port, resolver] {
      auto addresses = resolver ? resolver(host, port) : system_resolve(host, port);
      {
        std::lock_guard lock(pending->mu);
        pending->addresses = std::move(addresses);
        pending->done = true;
      }
      pending->done_cv.notify_one();
      lookup_threads.fetch_sub(1);
    }).detach();
  } catch (const std::system_error&) {
    lookup_threads.fetch_sub(1);
    return resource_exhausted("cannot start a thread to look up the image host; retry later");
  }
  std::unique_lock lock(pending->mu);
  for (;;) {
    const auto wake = std::min(budget.deadline(), Clock::now() + kPollInterval);
    if (pending->done_cv.wait_until(lock, wake, [&] { return pending->done; })) {
      return std::move(pending->addresses);
    }
    DSOCR_RETURN_IF_ERROR(budget.check(where));
  }
}

// Resolves the URL's host once (a numeric host as itself) and returns the address to connect to,
// refusing non-public ones.
StatusOr<std::string> resolve_checked(const ParsedUrl& url, const ImageFetchOptions& options,
                                      FetchBudget& budget, std::string_view where) {
  std::vector<std::string> addresses;
  if (auto numeric = numeric_host(url.host)) {
    addresses.push_back(std::move(*numeric));
  } else {
    DSOCR_ASSIGN_OR_RETURN(
        addresses, resolve_within_budget(url.host, url.port, options.resolver, budget, where));
  }
  if (addresses.empty()) return invalid_argument("image host '" + url.host + "' has no address");
  for (const std::string& address : addresses) {
    // Only a numeric address can be pinned: a name would make curl look it up again.
    if (!numeric_host(address)) {
      return internal_error("the lookup of '" + url.host + "' gave a non-numeric address");
    }
    // Every address must pass: a host that resolves to one public and one private address could
    // otherwise be steered to the private one.
    if (!options.allow_private_addresses && !is_public_address(address)) {
      return invalid_argument("image host '" + url.host + "' resolves to a non-public address (" +
                              address +
                              "); the server refuses such URLs unless started with "
                              "--allow-private-image-urls");
    }
  }
  return addresses.front();
}

struct Download {
  std::string body;
  int64_t max_bytes = 0;
  bool too_large = false;
};

size_t on_body(char* data, size_t size, size_t count, void* user) {
  auto* d = static_cast<Download*>(user);
  const size_t n = size * count;
  if (static_cast<int64_t>(d->body.size() + n) > d->max_bytes) {
    d->too_large = true;
    return 0;  // aborts the transfer
  }
  d->body.append(data, n);
  return n;
}

}  // namespace

bool is_public_address(std::string_view numeric_address) {
  std::string text(numeric_address);
  in_addr v4{};
  if (inet_pton(AF_INET, text.c_str(), &v4) == 1) return is_public_v4(ntohl(v4.s_addr));
  in6_addr v6{};
  if (inet_pton(AF_INET6, text.c_str(), &v6) == 1) return is_public_v6(v6);
  return false;
}

StatusOr<std::string> decode_data_uri(std::string_view uri, int64_t max_bytes) {
  if (!starts_with_ci(uri, "data:")) return invalid_argument("not a data: URI");
  size_t comma = uri.find(',');
  if (comma == std::string_view::npos) return invalid_argument("the data: URI has no ','");
  std::string_view meta = uri.substr(5, comma - 5);
  std::string_view payload = uri.substr(comma + 1);
  if (meta.size() < 7 || !starts_with_ci(meta.substr(meta.size() - 7), ";base64")) {
    return invalid_argument("the data: URI must be base64 (data:image/png;base64,...)");
  }
  std::string_view media_type = meta.substr(0, meta.find(';'));
  if (!acceptable_media_type(media_type)) {
    return invalid_argument("the data: URI's media type '" + std::string(media_type) +
                            "' is not an image or PDF type");
  }
  // Decoded size is at most 3/4 of the text: refuse before allocating anything.
  if (static_cast<int64_t>(payload.size() / 4 * 3) > max_bytes + 3) {
    return payload_too_large("the data: URI's image is larger than the limit of " +
                             std::to_string(max_bytes) + " bytes");
  }
  auto bytes = decode_base64(payload);
  if (!bytes.ok()) return bytes.status();
  if (static_cast<int64_t>(bytes->size()) > max_bytes) {
    return payload_too_large("the data: URI's image is larger than the limit of " +
                             std::to_string(max_bytes) + " bytes");
  }
  if (bytes->empty()) return invalid_argument("the data: URI is empty");
  return bytes;
}

ImageFetcher::ImageFetcher(ImageFetchOptions options) : options_(std::move(options)) {
  curl_global_init(CURL_GLOBAL_DEFAULT);  // idempotent; once before any thread uses curl
}

StatusOr<std::string> ImageFetcher::fetch(std::string_view url) const {
  return fetch(url, FetchControl{});
}

StatusOr<std::string> ImageFetcher::fetch(std::string_view url, const FetchControl& control) const {
  if (starts_with_ci(url, "data:")) return decode_data_uri(url, options_.max_bytes);
  if (starts_with_ci(url, "http://") || starts_with_ci(url, "https://")) {
    return fetch_http(url, control);
  }
  if (starts_with_ci(url, "file://")) return read_local_file(url);
  return invalid_argument(
      "image URL must be a data: URI (data:image/png;base64,...), an http(s):// URL or a "
      "file:// URL");
}

StatusOr<std::string> ImageFetcher::fetch_http(std::string_view first_url,
                                               const FetchControl& control) const {
  FetchBudget budget(control, options_.total_timeout_ms);
  std::string url(first_url);
  for (int64_t hop = 0;; ++hop) {
    auto parsed = parse_http_url(url);
    if (!parsed.ok()) return parsed.status();
    const bool v6_host = parsed->host.find(':') != std::string::npos;
    const std::string where =
        parsed->scheme + "://" + (v6_host ? "[" + parsed->host + "]" : parsed->host);
    DSOCR_RETURN_IF_ERROR(budget.check(where));
    auto address = resolve_checked(*parsed, options_, budget, where);
    if (!address.ok()) return address.status();
    DSOCR_RETURN_IF_ERROR(budget.check(where));

    // CONNECT_TO rather than RESOLVE: RESOLVE's host field cannot hold an IPv6 literal (its
    // colons end the field), CONNECT_TO's empty host and port match whatever the URL names, and
    // TLS still verifies the URL's host name.
    const bool v6 = address->find(':') != std::string::npos;
    const std::string pinned = "::" + (v6 ? "[" + *address + "]" : *address) + ":" + parsed->port;
    std::unique_ptr<curl_slist, CurlListDeleter> connect_to(
        curl_slist_append(nullptr, pinned.c_str()));
    std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
    std::unique_ptr<CURLM, CurlMultiDeleter> multi(curl_multi_init());
    if (!connect_to || !curl || !multi) return internal_error("cannot set up a curl transfer");
    Download download{.max_bytes = options_.max_bytes};
    const std::string agent = "dsocr/" + std::string(version());
    CURL* c = curl.get();
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_CONNECT_TO, connect_to.get());
    // A proxy from the environment would connect elsewhere than the address just checked.
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    // curl's own timers end the transfer at the same deadline as the loop below; the loop alone
    // would do, but curl then reports which phase ran out.
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                     std::min(static_cast<long>(options_.connect_timeout_ms), budget.ms_left()));
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, budget.ms_left());
    curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(options_.max_bytes));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &download);
    curl_easy_setopt(c, CURLOPT_USERAGENT, agent.c_str());
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");  // gzip/deflate, counted after decoding

    // The multi interface rather than curl_easy_perform with a progress callback: while a server
    // sends nothing, curl calls that callback only about once a second, too seldom to stop within
    // ~100 ms of a cancellation. Here each wait lasts at most kPollInterval.
    if (curl_multi_add_handle(multi.get(), c) != CURLM_OK) {
      return internal_error("curl_multi_add_handle failed");
    }
    struct Detach {
      CURLM* m;
      CURL* c;
      ~Detach() { curl_multi_remove_handle(m, c); }
    } detach{multi.get(), c};
    for (;;) {
      int running = 0;
      CURLMcode mc = curl_multi_perform(multi.get(), &running);
      if (mc != CURLM_OK) {
        return internal_error(std::string("curl_multi_perform: ") + curl_multi_strerror(mc));
      }
      if (running == 0) break;
      DSOCR_RETURN_IF_ERROR(budget.check(where));
      const int wait_ms = static_cast<int>(
          std::min<long>(budget.ms_left(), std::chrono::milliseconds(kPollInterval).count()));
      mc = curl_multi_poll(multi.get(), nullptr, 0, wait_ms, nullptr);
      if (mc != CURLM_OK) {
        return internal_error(std::string("curl_multi_poll: ") + curl_multi_strerror(mc));
      }
    }
    CURLcode rc = CURLE_OK;
    int queued = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi.get(), &queued)) {
      if (msg->msg == CURLMSG_DONE) rc = msg->data.result;
    }
    if (download.too_large || rc == CURLE_FILESIZE_EXCEEDED) {
      return payload_too_large("the image at " + where + " is larger than the limit of " +
                               std::to_string(options_.max_bytes) + " bytes");
    }
    if (rc == CURLE_OPERATION_TIMEDOUT) {
      if (Clock::now() >= budget.deadline()) return budget.timed_out(where, Clock::now());
      return Status(StatusCode::kDeadlineExceeded,
                    "cannot fetch the image from " + where + ": " + curl_easy_strerror(rc));
    }
    if (rc != CURLE_OK) {
      return invalid_argument("cannot fetch the image from " + where + ": " +
                              curl_easy_strerror(rc));
    }
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 300 && status < 400) {
      char* location = nullptr;
      curl_easy_getinfo(c, CURLINFO_REDIRECT_URL, &location);
      if (!location) {
        return invalid_argument("the image server at " + where + " redirected nowhere");
      }
      if (hop >= options_.max_redirects) {
        return invalid_argument("too many redirects fetching the image from " + where);
      }
      url = location;
      continue;
    }
    if (status != 200) {
      return invalid_argument("the image server at " + where + " answered HTTP " +
                              std::to_string(status));
    }
    char* content_type = nullptr;
    curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &content_type);
    if (content_type && !acceptable_media_type(content_type)) {
      return invalid_argument("the URL at " + where + " is not an image or PDF (Content-Type " +
                              std::string(content_type) + ")");
    }
    if (download.body.empty()) {
      return invalid_argument("the image at " + where + " is empty");
    }
    return std::move(download.body);
  }
}

StatusOr<std::string> ImageFetcher::read_local_file(std::string_view url) const {
  namespace fs = std::filesystem;
  if (options_.allowed_local_media_dir.empty()) {
    return invalid_argument(
        "file:// image URLs are refused (start the server with --allowed-local-media-path DIR "
        "to allow files below DIR)");
  }
  std::string_view path_text = url.substr(7);
  if (path_text.starts_with("localhost/")) path_text.remove_prefix(9);
  if (!path_text.starts_with("/")) return invalid_argument("file:// URLs must be absolute");
  std::error_code ec;
  // canonical() resolves symlinks and "..", so the prefix test below sees where the file really is.
  fs::path real = fs::canonical(fs::path(std::string(path_text)), ec);
  if (ec) return invalid_argument("file:// image not found");
  fs::path root = fs::canonical(options_.allowed_local_media_dir, ec);
  if (ec) return invalid_argument("--allowed-local-media-path does not exist");
  auto [root_end, real_it] = std::mismatch(root.begin(), root.end(), real.begin(), real.end());
  if (root.empty() || root_end != root.end()) {
    return invalid_argument("file:// image is outside --allowed-local-media-path");
  }
  if (!fs::is_regular_file(real, ec)) return invalid_argument("file:// image is not a file");
  const auto size = fs::file_size(real, ec);
  if (ec) return invalid_argument("file:// image cannot be read");
  if (static_cast<int64_t>(size) > options_.max_bytes) {
    return payload_too_large("file:// image is larger than the limit of " +
                             std::to_string(options_.max_bytes) + " bytes");
  }
  std::ifstream in(real, std::ios::binary);
  std::string bytes(size, '\0');
  if (!in.read(bytes.data(), static_cast<std::streamsize>(size))) {
    return invalid_argument("file:// image cannot be read");
  }
  return bytes;
}

}  // namespace dsocr::server

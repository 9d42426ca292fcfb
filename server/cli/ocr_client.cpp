#include "server/cli/ocr_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <thread>

#include "common/flags.h"
#include "engine/engine.h"
#include "engine/model_resolution.h"
#include "server/completion_text.h"
#include "tokenizer/ocr_prompt.h"

namespace dsocr::cli {
namespace {

using json = nlohmann::json;

std::string finish_reason_of(engine::FinishReason reason) {
  return reason == engine::FinishReason::kLength ? "length" : "stop";
}

// `text` with every invalid UTF-8 sequence replaced by U+FFFD, as the server's JSON answers carry
// it: both modes write the same files.
std::string as_the_server_sends(const std::string& text) {
  return json::parse(json(text).dump(-1, ' ', false, json::error_handler_t::replace))
      .get<std::string>();
}

// ---------------------------------------------------------------------------------------------
// In-process: the engine's public API, as the server's chat handler uses it.

class EngineRecognizer : public PageRecognizer {
 public:
  EngineRecognizer(std::unique_ptr<engine::Engine> engine, std::string model_name,
                   std::string prompt, int64_t max_tokens)
      : engine_(std::move(engine)),
        model_name_(std::move(model_name)),
        prompt_(std::move(prompt)),
        max_tokens_(max_tokens) {
    if (auto eos = engine_->tokenizer()->token_to_id(tokenizer::kEosToken))
      end_ids_.push_back(*eos);
  }

  StatusOr<PageAnswer> recognize(const std::string& image, std::string_view) override {
    engine::GenerateRequest request;
    request.request_id = "ocr-" + std::to_string(next_id_++);
    request.prompt = prompt_;
    request.images.push_back(image);
    request.sampling.max_tokens = max_tokens_;  // greedy and the official n-gram rule: defaults
    DSOCR_ASSIGN_OR_RETURN(auto stream, engine_->submit(std::move(request)));
    server::CompletionText text(engine_->tokenizer(), /*skip_special_tokens=*/false, end_ids_, {});
    PageAnswer answer;
    while (true) {
      auto event = stream->next(std::chrono::milliseconds(1000));
      if (!event) continue;
      answer.text += text.push(event->token_ids);
      if (!event->finished) continue;
      if (!event->error.ok()) return event->error;
      if (event->finish_reason == engine::FinishReason::kCancelled) {
        return unavailable("the engine cancelled the page");
      }
      answer.text = as_the_server_sends(answer.text + text.finish());
      answer.finish_reason = finish_reason_of(event->finish_reason);
      return answer;
    }
  }

  std::string description() const override { return "engine (model " + model_name_ + ")"; }

 private:
  std::unique_ptr<engine::Engine> engine_;
  std::string model_name_;
  std::string prompt_;
  int64_t max_tokens_;
  std::vector<int32_t> end_ids_;
  std::atomic<uint64_t> next_id_{0};
};

// ---------------------------------------------------------------------------------------------
// Server mode: libcurl, one easy handle per request.

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct CurlListDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

struct HttpReply {
  long status = 0;
  std::string body;
  std::string retry_after;
};

size_t on_body(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

size_t on_header(char* data, size_t size, size_t n, void* user) {
  std::string_view line(data, size * n);
  constexpr std::string_view kName = "retry-after:";
  if (line.size() > kName.size()) {
    std::string lower(line.substr(0, kName.size()));
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (lower == kName) {
      std::string_view value = line.substr(kName.size());
      while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
        value.remove_prefix(1);
      while (!value.empty() && std::isspace(static_cast<unsigned char>(value.back())))
        value.remove_suffix(1);
      *static_cast<std::string*>(user) = std::string(value);
    }
  }
  return size * n;
}

// The error message of an OpenAI-shaped error body, or the start of the body.
std::string server_message(const HttpReply& reply) {
  auto body = json::parse(reply.body, nullptr, false);
  if (body.is_object() && body.contains("error") && body["error"].is_object() &&
      body["error"].contains("message") && body["error"]["message"].is_string()) {
    return body["error"]["message"].get<std::string>();
  }
  return reply.body.substr(0, 200);
}

class ServerRecognizer : public PageRecognizer {
 public:
  ServerRecognizer(ServerOptions server, RecognizeOptions options)
      : server_(std::move(server)), options_(std::move(options)) {}

  // GET /v1/models: the server answers, the key works, and the model's name.
  Status connect() {
    DSOCR_ASSIGN_OR_RETURN(HttpReply reply, request("GET", "/v1/models", ""));
    if (reply.status != 200) {
      return unavailable("GET " + base() + "/v1/models: HTTP " + std::to_string(reply.status) +
                         ": " + server_message(reply));
    }
    if (server_.model.empty()) {
      auto models = json::parse(reply.body, nullptr, false);
      if (!models.is_object() || !models.contains("data") || !models["data"].is_array() ||
          models["data"].empty() || !models["data"][0].contains("id") ||
          !models["data"][0]["id"].is_string()) {
        return unavailable("GET " + base() + "/v1/models: no model in the answer");
      }
      server_.model = models["data"][0]["id"].get<std::string>();
    }
    return Status();
  }

  StatusOr<PageAnswer> recognize(const std::string& image, std::string_view media_type) override {
    json content = json::array();
    content.push_back(
        {{"type", "image_url"},
         {"image_url",
          {{"url", "data:" + std::string(media_type) + ";base64," + base64_encode(image)}}}});
    json body = {{"model", server_.model}, {"stream", false}};
    if (!options_.prompt.empty()) {
      content.push_back({{"type", "text"}, {"text", options_.prompt}});
    } else {
      body["task"] = options_.task;
    }
    body["messages"] = json::array({{{"role", "user"}, {"content", std::move(content)}}});
    if (options_.max_tokens > 0) body["max_tokens"] = options_.max_tokens;
    const std::string payload = body.dump();
    for (int attempt = 0;; ++attempt) {
      DSOCR_ASSIGN_OR_RETURN(HttpReply reply, request("POST", "/v1/chat/completions", payload));
      if (reply.status == 200) return parse_answer(reply);
      auto delay = retry_delay_seconds(reply.status, attempt, reply.retry_after);
      if (!delay) {
        return Status(reply.status == 429 || reply.status == 503 ? StatusCode::kUnavailable
                                                                 : StatusCode::kInvalidArgument,
                      "HTTP " + std::to_string(reply.status) + ": " + server_message(reply));
      }
      std::this_thread::sleep_for(std::chrono::duration<double>(*delay));
    }
  }

  std::string description() const override { return base() + " (model " + server_.model + ")"; }

 private:
  // The URL without a trailing slash or /v1: routes are appended with their /v1.
  std::string base() const {
    std::string url = server_.url;
    while (!url.empty() && url.back() == '/') url.pop_back();
    if (url.size() >= 3 && url.compare(url.size() - 3, 3, "/v1") == 0) url.resize(url.size() - 3);
    return url;
  }

  StatusOr<HttpReply> request(const char* method, const std::string& route,
                              const std::string& payload) const {
    std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
    if (!curl) return internal_error("cannot set up a curl transfer");
    std::unique_ptr<curl_slist, CurlListDeleter> headers;
    auto add_header = [&](const std::string& h) {
      headers.reset(curl_slist_append(headers.release(), h.c_str()));
    };
    add_header("Content-Type: application/json");
    add_header("Expect:");  // no 100-continue round trip for the large bodies
    if (!server_.api_key.empty()) add_header("Authorization: Bearer " + server_.api_key);
    HttpReply reply;
    const std::string url = base() + route;
    CURL* c = curl.get();
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(server_.timeout_s * 1000));
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 10'000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply.body);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &reply.retry_after);
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");
    if (std::string_view(method) == "POST") {
      curl_easy_setopt(c, CURLOPT_POSTFIELDS, payload.data());
      curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(payload.size()));
    }
    if (CURLcode rc = curl_easy_perform(c); rc != CURLE_OK) {
      return unavailable(std::string(method) + " " + url + ": " + curl_easy_strerror(rc));
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &reply.status);
    return reply;
  }

  static StatusOr<PageAnswer> parse_answer(const HttpReply& reply) {
    auto body = json::parse(reply.body, nullptr, false);
    auto bad = [] { return internal_error("the server's answer is not a chat completion"); };
    if (!body.is_object() || !body.contains("choices") || !body["choices"].is_array() ||
        body["choices"].empty()) {
      return bad();
    }
    const json& choice = body["choices"][0];
    if (!choice.contains("message") || !choice["message"].contains("content") ||
        !choice["message"]["content"].is_string()) {
      return bad();
    }
    PageAnswer answer;
    answer.text = choice["message"]["content"].get<std::string>();
    auto reason = choice.find("finish_reason");
    answer.finish_reason = reason != choice.end() && *reason == "length" ? "length" : "stop";
    if (auto pages = body.find("pages");
        pages != body.end() && pages->is_array() && pages->size() == 1 && (*pages)[0].is_object()) {
      answer.server_page = (*pages)[0];
    }
    return answer;
  }

  ServerOptions server_;
  const RecognizeOptions options_;
};

}  // namespace

StatusOr<std::unique_ptr<PageRecognizer>> make_engine_recognizer(engine::EngineFlags engine_flags,
                                                                 int concurrency,
                                                                 const RecognizeOptions& options) {
  std::string prompt = options.prompt;
  if (prompt.empty()) {
    auto task_prompt = tokenizer::ocr_task_prompt(options.task);
    if (!task_prompt) return invalid_argument("--task must be document or free");
    prompt = std::string(*task_prompt);
  }
  engine_flags.max_num_seqs = concurrency;
  DSOCR_RETURN_IF_ERROR(engine_flags.validate());
  DSOCR_ASSIGN_OR_RETURN(engine::ResolvedModel model, engine::resolve_model(engine_flags.model));
  DSOCR_ASSIGN_OR_RETURN(auto engine, engine::Engine::create(engine_flags.to_options(model.dir)));
  return std::unique_ptr<PageRecognizer>(std::make_unique<EngineRecognizer>(
      std::move(engine), model.name, std::move(prompt), options.max_tokens));
}

StatusOr<std::unique_ptr<PageRecognizer>> make_server_recognizer(ServerOptions server,
                                                                 RecognizeOptions options) {
  if (options.prompt.empty() && !tokenizer::ocr_task_prompt(options.task)) {
    return invalid_argument("--task must be document or free");
  }
  curl_global_init(CURL_GLOBAL_DEFAULT);  // once, before any worker thread uses curl
  auto recognizer = std::make_unique<ServerRecognizer>(std::move(server), std::move(options));
  DSOCR_RETURN_IF_ERROR(recognizer->connect());
  return std::unique_ptr<PageRecognizer>(std::move(recognizer));
}

std::optional<double> retry_delay_seconds(long http_status, int attempt,
                                          std::string_view retry_after) {
  if ((http_status != 429 && http_status != 503) || attempt >= kMaxRetries) return std::nullopt;
  if (auto seconds = parse_double(retry_after);
      seconds.ok() && std::isfinite(*seconds) && *seconds >= 0) {
    return std::min(*seconds, 60.0);
  }
  return std::min(0.5 * std::pow(2.0, attempt), 8.0);
}

std::string base64_encode(std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t v = (static_cast<uint8_t>(bytes[i]) << 16) |
                       (static_cast<uint8_t>(bytes[i + 1]) << 8) |
                       static_cast<uint8_t>(bytes[i + 2]);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (const size_t rest = bytes.size() - i; rest) {
    uint32_t v = static_cast<uint8_t>(bytes[i]) << 16;
    if (rest == 2) v |= static_cast<uint8_t>(bytes[i + 1]) << 8;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

}  // namespace dsocr::cli

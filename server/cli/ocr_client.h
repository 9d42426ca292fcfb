// Where `dsocr ocr` sends a page: the engine in this process, or a running dsocr-server (or any
// server of the same API) over HTTP. Either way a page is one request with one image and the
// same prompt and greedy sampling the server uses by default, and the answer is the page's text
// (grounding tags included, the EOS removed) and its finish reason.
//
// Server mode: POST {server}/v1/chat/completions, non-streaming, the page as a data: URI, the
// Authorization header when an API key is set. 429 and 503 are retried (at most kMaxRetries
// times) after the server's Retry-After when it sends one in seconds, else after an exponential
// backoff; any other error status fails the page with the server's message.
//
// Thread-safety: recognize() may be called from several threads at once (that is how pages run
// concurrently); create() runs once, on the main thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "engine/engine_flags.h"

namespace dsocr::cli {

struct PageAnswer {
  std::string text;           // raw page text, tags included
  std::string finish_reason;  // "stop" | "length"
  // Server mode: the answer's own `pages[0]`, when the server sends one.
  std::optional<nlohmann::json> server_page;
};

struct RecognizeOptions {
  std::string prompt;             // literal prompt; empty: the task's official prompt
  std::string task = "document";  // document | free
  int64_t max_tokens = 0;         // 0: up to the context length (server: its default)
};

class PageRecognizer {
 public:
  virtual ~PageRecognizer() = default;
  // One page: `image` is the encoded image (PNG for a PDF page, the file's bytes for an image),
  // `media_type` its type ("image/png", ...).
  virtual StatusOr<PageAnswer> recognize(const std::string& image, std::string_view media_type) = 0;
  // Where pages go, for messages ("engine (demo, cpu)", "http://host:8000 (model demo)").
  virtual std::string description() const = 0;
};

// The engine of `engine_flags` (--model resolved here), with room for `concurrency` requests.
StatusOr<std::unique_ptr<PageRecognizer>> make_engine_recognizer(engine::EngineFlags engine_flags,
                                                                 int concurrency,
                                                                 const RecognizeOptions& options);

struct ServerOptions {
  std::string url;         // http(s)://host:port, with or without a trailing slash or /v1
  std::string api_key;     // empty: no Authorization header
  std::string model;       // empty: the first model of GET /v1/models
  double timeout_s = 600;  // per request
};

// Checks that the server answers (GET /v1/models, which also names the model when not given).
StatusOr<std::unique_ptr<PageRecognizer>> make_server_recognizer(ServerOptions server,
                                                                 RecognizeOptions options);

// Retries of one page on 429/503.
inline constexpr int kMaxRetries = 5;

// The wait before retry number `attempt` (0-based) of a request answered with `http_status`, or
// nullopt when it is not retried (another status, or retries used up). `retry_after` is the
// Retry-After header ("" when absent): a number of seconds (capped at 60) is honoured, anything
// else (an HTTP date) falls back to the backoff 0.5 s, 1 s, 2 s, ... capped at 8 s.
std::optional<double> retry_delay_seconds(long http_status, int attempt,
                                          std::string_view retry_after);

// RFC 4648 base64 with padding.
std::string base64_encode(std::string_view bytes);

}  // namespace dsocr::cli

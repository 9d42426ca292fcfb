// Logging for every dsocr module: spdlog loggers named after the module ("http", "engine",
// "vision", ...) that share one sink, one level and one format.
//
// Two formats: human text (the default) and JSON Lines for log collectors. Each line carries the
// request id of the request the current thread is working on, set with ScopedRequestId, so every
// line of one request can be found with one grep:
//   text: 2026-11-23 16:40:00.123 INFO  [http] [req=abc123] POST /v1/chat/completions 200
//   json:
//   {"ts":"2026-11-23T16:40:00.123Z","level":"info","logger":"http","req":"abc123","msg":"..."}
//
// Thread-safety: get() and the loggers it returns are safe from any thread. configure() may run
// at any time (it swaps formatter and level under spdlog's sink lock). ScopedRequestId is
// per-thread.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace dsocr::log {

enum class Format { kText, kJson };

struct Options {
  std::string level = "info";  // trace, debug, info, warn, error, critical, off
  Format format = Format::kText;
};

StatusOr<Format> parse_format(std::string_view name);

// Applies `options` to every logger, existing and future. Invalid level -> kInvalidArgument.
Status configure(const Options& options);

// The logger of one module, created on first use.
std::shared_ptr<spdlog::logger> get(std::string_view module);

// Replaces the shared sink (default: stderr). For tests that read what was logged.
void set_sink(const std::shared_ptr<spdlog::sinks::sink>& sink);

// Marks the current thread as working for one request until the scope ends (restores the
// previous id, so scopes nest).
class ScopedRequestId {
 public:
  explicit ScopedRequestId(std::string request_id);
  ~ScopedRequestId();
  ScopedRequestId(const ScopedRequestId&) = delete;
  ScopedRequestId& operator=(const ScopedRequestId&) = delete;

 private:
  std::string previous_;
};

// The id set by the innermost ScopedRequestId on this thread, or "".
const std::string& current_request_id();

}  // namespace dsocr::log

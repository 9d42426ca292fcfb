// ServerConfig: everything dsocr-server is told at start-up, from flags and DSOCR_* environment
// variables, validated once before anything starts. The engine's flags (--model, --device, --dtype,
// KV cache, batching, threads) are the ones `dsocr generate` and `dsocr bench` share
// (engine/engine_flags.h); the rest is the server's own.
//
// Thread-safety: a plain value; built on the main thread, then read-only.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"
#include "engine/engine_flags.h"

namespace dsocr::server {

struct ServerConfig {
  // Model, compute, KV cache, batching and threads (--model, --device, --max-model-len, ...).
  engine::EngineFlags engine;
  std::string served_model_name;  // empty: the model's own name
  // HTTP.
  std::string host = "127.0.0.1";
  int64_t port = 8000;
  int64_t http_threads = 16;            // handler threads kept while idle (more start on demand)
  int64_t max_connections = 2048;       // open client connections; 503 at accept above
  int64_t header_timeout_s = 10;        // from a request's first byte to the end of its head
  int64_t body_timeout_s = 60;          // for a whole request body
  int64_t idle_timeout_s = 60;          // a keep-alive connection with no request
  int64_t write_timeout_s = 60;         // a response write that makes no progress
  int64_t max_body_bytes = 64ll << 20;  // decoded, whatever the framing
  int64_t max_buffered_body_bytes = 1ll << 30;  // all request bodies held at once
  std::string api_key;                          // empty: no authentication
  int64_t keepalive_interval_ms = 5'000;
  int64_t drain_timeout_s = 30;
  // Images.
  int64_t max_image_bytes = 32ll << 20;
  int64_t max_images_per_request = 16;
  int64_t image_fetch_timeout_s = 30;
  int64_t image_max_redirects = 3;
  bool allow_private_image_urls = false;
  std::string allowed_local_media_path;
  // PDFs (their bytes count against max_image_bytes).
  int64_t max_pdf_pages = 200;        // pages selected from one PDF (413 above)
  int64_t pdf_render_timeout_s = 20;  // per page
  int64_t max_pages_in_flight = 16;   // pages of one request submitted to the engine at once
  // Logs.
  std::string log_level = "info";
  std::string log_format = "text";

  Status validate() const;
};

// Parses argv into a config. Sets *help_text (and returns OK) when --help was asked for.
StatusOr<ServerConfig> parse_server_config(int argc, const char* const* argv,
                                           std::string* help_text);

}  // namespace dsocr::server

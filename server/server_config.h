// ServerConfig: everything dsocr-server is told at start-up, from flags and DSOCR_* environment
// variables, validated once before anything starts.
//
// Thread-safety: a plain value; built on the main thread, then read-only.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace dsocr::server {

struct ServerConfig {
  // Model and compute.
  std::string model = "deepseek-ai/DeepSeek-OCR-2";
  std::string served_model_name;  // empty: the model's own name
  std::string device = "auto";
  std::string dtype = "auto";
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
  // Engine.
  int64_t max_model_len = 8192;
  int64_t max_num_seqs = 64;
  int64_t max_num_batched_tokens = 2048;
  int64_t max_queued_requests = 256;
  int64_t max_pending_image_bytes = 1ll << 30;  // 0: no limit (engine::EngineOptions)
  int64_t idle_memory_release_ms = 2'000;       // 0: never
  int64_t num_kv_blocks = 0;                    // 0: from free memory
  double kv_memory_fraction = 0.9;
  bool prefix_caching = true;
  int64_t vision_threads = 1;
  int64_t torch_threads = 0;
  // Logs.
  std::string log_level = "info";
  std::string log_format = "text";

  Status validate() const;
};

// Parses argv into a config. Sets *help_text (and returns OK) when --help was asked for.
StatusOr<ServerConfig> parse_server_config(int argc, const char* const* argv,
                                           std::string* help_text);

}  // namespace dsocr::server

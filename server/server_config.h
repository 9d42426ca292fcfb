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
  std::string model = "deepseek-ai/DeepSeek-OCR-2";
  std::string served_model_name;  // empty: the model's own name
  std::string host = "127.0.0.1";
  int64_t port = 8000;
  std::string device = "auto";
  int64_t http_threads = 32;
  int64_t max_body_bytes = 64ll << 20;
  std::string log_level = "info";
  std::string log_format = "text";

  Status validate() const;
};

// Parses argv into a config. Sets *help_text (and returns OK) when --help was asked for.
StatusOr<ServerConfig> parse_server_config(int argc, const char* const* argv,
                                           std::string* help_text);

}  // namespace dsocr::server

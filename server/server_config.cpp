#include "server/server_config.h"

#include "common/flags.h"
#include "common/logging.h"

namespace dsocr::server {

Status ServerConfig::validate() const {
  if (model.empty()) return invalid_argument("--model must not be empty");
  if (port < 0 || port > 65535) return out_of_range("--port must be in 0..65535");
  if (http_threads < 1 || http_threads > 4096) {
    return out_of_range("--http-threads must be in 1..4096");
  }
  if (max_body_bytes < 1024) return out_of_range("--max-body-bytes must be at least 1024");
  DSOCR_RETURN_IF_ERROR(log::parse_format(log_format).status().with_context("--log-format"));
  return Status();
}

StatusOr<ServerConfig> parse_server_config(int argc, const char* const* argv,
                                           std::string* help_text) {
  ServerConfig config;
  FlagSet flags("dsocr-server", "OpenAI-compatible inference server for DeepSeek-OCR-2.");
  flags.add_string("model", &config.model,
                   "model: 'demo' (built-in tiny random weights), a local directory, or a hub id "
                   "org/name[@revision] found in the Hugging Face cache",
                   "DSOCR_MODEL");
  flags.add_string("served-model-name", &config.served_model_name,
                   "the model id /v1/models lists and requests name (default: the model's name)",
                   "DSOCR_SERVED_MODEL_NAME");
  flags.add_string("host", &config.host, "address to listen on (0.0.0.0 for all)", "DSOCR_HOST");
  flags.add_int("port", &config.port, "port to listen on (0: any free port)", "DSOCR_PORT");
  flags.add_string("device", &config.device, "auto, cpu, cuda or cuda:N", "DSOCR_DEVICE");
  flags.add_int("http-threads", &config.http_threads, "HTTP worker threads", "DSOCR_HTTP_THREADS");
  flags.add_int("max-body-bytes", &config.max_body_bytes, "largest request body accepted",
                "DSOCR_MAX_BODY_BYTES");
  flags.add_string("log-level", &config.log_level,
                   "trace, debug, info, warn, error, critical or off", "DSOCR_LOG_LEVEL");
  flags.add_string("log-format", &config.log_format, "text or json", "DSOCR_LOG_FORMAT");
  DSOCR_RETURN_IF_ERROR(flags.parse(argc, argv));
  if (flags.help_requested()) {
    *help_text = flags.usage();
    return config;
  }
  if (!flags.positionals().empty()) {
    return invalid_argument("unexpected argument '" + flags.positionals().front() +
                            "' (flags start with --; see --help)");
  }
  DSOCR_RETURN_IF_ERROR(config.validate());
  return config;
}

}  // namespace dsocr::server

#include "server/server_config.h"

#include "common/flags.h"
#include "common/logging.h"

namespace dsocr::server {
namespace {


}  // namespace

Status ServerConfig::validate() const {
  DSOCR_RETURN_IF_ERROR(engine.validate());
  DSOCR_RETURN_IF_ERROR(check_flag_range("port", port, 0, 65535));
  DSOCR_RETURN_IF_ERROR(check_flag_range("http-threads", http_threads, 1, 8192));
  DSOCR_RETURN_IF_ERROR(check_flag_range("max-connections", max_connections, 1, 1 << 20));
  DSOCR_RETURN_IF_ERROR(check_flag_range("header-timeout", header_timeout_s, 1, 3600));
  DSOCR_RETURN_IF_ERROR(check_flag_range("body-timeout", body_timeout_s, 1, 86'400));
  DSOCR_RETURN_IF_ERROR(check_flag_range("idle-timeout", idle_timeout_s, 1, 86'400));
  DSOCR_RETURN_IF_ERROR(check_flag_range("write-timeout", write_timeout_s, 1, 86'400));
  DSOCR_RETURN_IF_ERROR(
      check_flag_range("max-buffered-body-bytes", max_buffered_body_bytes, 1024, 1ll << 40));

  DSOCR_RETURN_IF_ERROR(check_flag_range("max-body-bytes", max_body_bytes, 1024, 1ll << 34));
  DSOCR_RETURN_IF_ERROR(check_flag_range("keepalive-interval-ms", keepalive_interval_ms, 10, 600'000));
  DSOCR_RETURN_IF_ERROR(check_flag_range("drain-timeout", drain_timeout_s, 0, 86'400));
  DSOCR_RETURN_IF_ERROR(check_flag_range("max-image-bytes", max_image_bytes, 1024, 1ll << 31));
  DSOCR_RETURN_IF_ERROR(check_flag_range("max-images-per-request", max_images_per_request, 1, 1024));
  DSOCR_RETURN_IF_ERROR(check_flag_range("image-fetch-timeout", image_fetch_timeout_s, 1, 3600));
  DSOCR_RETURN_IF_ERROR(check_flag_range("image-max-redirects", image_max_redirects, 0, 20));
  DSOCR_RETURN_IF_ERROR(check_flag_range("max-pdf-pages", max_pdf_pages, 1, 100'000));
  DSOCR_RETURN_IF_ERROR(check_flag_range("pdf-render-timeout", pdf_render_timeout_s, 1, 3600));
  DSOCR_RETURN_IF_ERROR(check_flag_range("max-pages-in-flight", max_pages_in_flight, 1, 4096));
  DSOCR_RETURN_IF_ERROR(log::parse_format(log_format).status().with_context("--log-format"));
  return Status();
}

StatusOr<ServerConfig> parse_server_config(int argc, const char* const* argv,
                                           std::string* help_text) {
  ServerConfig c;
  FlagSet flags("dsocr-server", "OpenAI-compatible inference server for DeepSeek-OCR-2.");
  using engine::EngineFlag;
  add_engine_flags(&flags, &c.engine, {EngineFlag::kModel}, engine::EngineFlagEnv::kWith);
  flags.add_string("served-model-name", &c.served_model_name,
                   "the model id /v1/models lists and requests name (default: the model's name)",
                   "DSOCR_SERVED_MODEL_NAME");
  add_engine_flags(&flags, &c.engine,
                   {EngineFlag::kDevice, EngineFlag::kDtype, EngineFlag::kWeights,
                    EngineFlag::kKvCacheDtype, EngineFlag::kCudaGraphs},
                   engine::EngineFlagEnv::kWith);
  flags.add_string("host", &c.host, "address to listen on (0.0.0.0 for all)", "DSOCR_HOST");
  flags.add_int("port", &c.port, "port to listen on (0: any free port)", "DSOCR_PORT");
  flags.add_string("api-key", &c.api_key,
                   "require 'Authorization: Bearer KEY' on every route but /health, /metrics "
                   "and the playground's static files",
                   "DSOCR_API_KEY");
  flags.add_int("http-threads", &c.http_threads,
                "request handler threads kept while idle (each request being answered has its "
                "own; more start on demand)",
                "DSOCR_HTTP_THREADS");
  flags.add_int("max-connections", &c.max_connections,
                "open client connections at most (503 and close above)", "DSOCR_MAX_CONNECTIONS");
  flags.add_int("header-timeout", &c.header_timeout_s,
                "seconds from a request's first byte to the end of its headers (408 after)",
                "DSOCR_HEADER_TIMEOUT");
  flags.add_int("body-timeout", &c.body_timeout_s,
                "seconds for a whole request body to arrive (408 after)", "DSOCR_BODY_TIMEOUT");
  flags.add_int("idle-timeout", &c.idle_timeout_s,
                "seconds a keep-alive connection may wait for its next request",
                "DSOCR_IDLE_TIMEOUT");
  flags.add_int("write-timeout", &c.write_timeout_s,
                "seconds a response write may make no progress before the client counts as gone",
                "DSOCR_WRITE_TIMEOUT");
  flags.add_int("max-body-bytes", &c.max_body_bytes,
                "largest request body accepted, after any chunked or gzip decoding (413 above)",
                "DSOCR_MAX_BODY_BYTES");
  flags.add_int("max-buffered-body-bytes", &c.max_buffered_body_bytes,
                "request bodies held by the server at once (503 above)",
                "DSOCR_MAX_BUFFERED_BODY_BYTES");
  flags.add_int("keepalive-interval-ms", &c.keepalive_interval_ms,
                "SSE ': keep-alive' comment period while a stream waits", "DSOCR_KEEPALIVE_MS");
  flags.add_int("drain-timeout", &c.drain_timeout_s,
                "seconds SIGTERM waits for in-flight requests before cancelling them",
                "DSOCR_DRAIN_TIMEOUT");
  flags.add_int("max-image-bytes", &c.max_image_bytes, "largest encoded image or PDF (413 above)",
                "DSOCR_MAX_IMAGE_BYTES");
  flags.add_int("max-images-per-request", &c.max_images_per_request, "images in one request",
                "DSOCR_MAX_IMAGES_PER_REQUEST");
  flags.add_int("image-fetch-timeout", &c.image_fetch_timeout_s,
                "seconds allowed to fetch all of a request's image URLs (one deadline)",
                "DSOCR_IMAGE_FETCH_TIMEOUT");
  flags.add_int("image-max-redirects", &c.image_max_redirects, "redirects followed per image URL",
                "DSOCR_IMAGE_MAX_REDIRECTS");
  flags.add_bool("allow-private-image-urls", &c.allow_private_image_urls,
                 "allow image URLs on loopback, private and link-local addresses",
                 "DSOCR_ALLOW_PRIVATE_IMAGE_URLS");
  flags.add_string("allowed-local-media-path", &c.allowed_local_media_path,
                   "allow file:// image URLs below this directory (default: refused)",
                   "DSOCR_ALLOWED_LOCAL_MEDIA_PATH");
  flags.add_int("max-pdf-pages", &c.max_pdf_pages,
                "pages one request may select from a PDF (413 above; `pages` selects a range)",
                "DSOCR_MAX_PDF_PAGES");
  flags.add_int("pdf-render-timeout", &c.pdf_render_timeout_s,
                "seconds one PDF page may take to render (the request fails with a 400 above)",
                "DSOCR_PDF_RENDER_TIMEOUT");
  flags.add_int("max-pages-in-flight", &c.max_pages_in_flight,
                "pages of one PDF request given to the engine at once (later ones wait their turn)",
                "DSOCR_MAX_PAGES_IN_FLIGHT");
  add_engine_flags(
      &flags, &c.engine,
      {EngineFlag::kMaxModelLen, EngineFlag::kMaxNumSeqs, EngineFlag::kMaxNumBatchedTokens,
       EngineFlag::kMaxQueuedRequests, EngineFlag::kMaxPendingImageBytes,
       EngineFlag::kIdleMemoryReleaseMs, EngineFlag::kNumKvBlocks, EngineFlag::kKvMemoryFraction,
       EngineFlag::kPrefixCaching, EngineFlag::kVisionThreads, EngineFlag::kTorchThreads,
       EngineFlag::kCpuMemoryBudget},
      engine::EngineFlagEnv::kWith);
  flags.add_string("log-level", &c.log_level, "trace, debug, info, warn, error, critical or off",
                   "DSOCR_LOG_LEVEL");
  flags.add_string("log-format", &c.log_format, "text or json", "DSOCR_LOG_FORMAT");
  DSOCR_RETURN_IF_ERROR(flags.parse(argc, argv));
  if (flags.help_requested()) {
    *help_text = flags.usage();
    return c;
  }
  if (!flags.positionals().empty()) {
    return invalid_argument("unexpected argument '" + flags.positionals().front() +
                            "' (flags start with --; see --help)");
  }
  DSOCR_RETURN_IF_ERROR(c.validate());
  return c;
}

}  // namespace dsocr::server

#include "server/server_config.h"

#include "common/flags.h"
#include "common/logging.h"

namespace dsocr::server {
namespace {

Status in_range(const char* flag, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) {
    return out_of_range(std::string("--") + flag + " must be in " + std::to_string(lo) + ".." +
                        std::to_string(hi) + ", got " + std::to_string(v));
  }
  return Status();
}

}  // namespace

Status ServerConfig::validate() const {
  if (model.empty()) return invalid_argument("--model must not be empty");
  DSOCR_RETURN_IF_ERROR(in_range("port", port, 0, 65535));
  DSOCR_RETURN_IF_ERROR(in_range("http-threads", http_threads, 1, 8192));
  DSOCR_RETURN_IF_ERROR(in_range("max-connections", max_connections, 1, 1 << 20));
  DSOCR_RETURN_IF_ERROR(in_range("header-timeout", header_timeout_s, 1, 3600));
  DSOCR_RETURN_IF_ERROR(in_range("body-timeout", body_timeout_s, 1, 86'400));
  DSOCR_RETURN_IF_ERROR(in_range("idle-timeout", idle_timeout_s, 1, 86'400));
  DSOCR_RETURN_IF_ERROR(in_range("write-timeout", write_timeout_s, 1, 86'400));
  DSOCR_RETURN_IF_ERROR(
      in_range("max-buffered-body-bytes", max_buffered_body_bytes, 1024, 1ll << 40));

  DSOCR_RETURN_IF_ERROR(in_range("max-body-bytes", max_body_bytes, 1024, 1ll << 34));
  DSOCR_RETURN_IF_ERROR(in_range("keepalive-interval-ms", keepalive_interval_ms, 10, 600'000));
  DSOCR_RETURN_IF_ERROR(in_range("drain-timeout", drain_timeout_s, 0, 86'400));
  DSOCR_RETURN_IF_ERROR(in_range("max-image-bytes", max_image_bytes, 1024, 1ll << 31));
  DSOCR_RETURN_IF_ERROR(in_range("max-images-per-request", max_images_per_request, 1, 1024));
  DSOCR_RETURN_IF_ERROR(in_range("image-fetch-timeout", image_fetch_timeout_s, 1, 3600));
  DSOCR_RETURN_IF_ERROR(in_range("image-max-redirects", image_max_redirects, 0, 20));
  DSOCR_RETURN_IF_ERROR(in_range("max-model-len", max_model_len, 16, 1 << 20));
  DSOCR_RETURN_IF_ERROR(in_range("max-num-seqs", max_num_seqs, 1, 4096));
  DSOCR_RETURN_IF_ERROR(in_range("max-num-batched-tokens", max_num_batched_tokens, 16, 1 << 20));
  DSOCR_RETURN_IF_ERROR(in_range("max-queued-requests", max_queued_requests, 1, 1 << 20));
  DSOCR_RETURN_IF_ERROR(in_range("max-pending-image-bytes", max_pending_image_bytes, 0, 1ll << 40));
  DSOCR_RETURN_IF_ERROR(in_range("idle-memory-release-ms", idle_memory_release_ms, 0, 86'400'000));
  DSOCR_RETURN_IF_ERROR(in_range("num-kv-blocks", num_kv_blocks, 0, 1 << 24));
  DSOCR_RETURN_IF_ERROR(in_range("vision-threads", vision_threads, 1, 256));
  DSOCR_RETURN_IF_ERROR(in_range("torch-threads", torch_threads, 0, 1024));
  if (!(kv_memory_fraction > 0 && kv_memory_fraction <= 1)) {
    return out_of_range("--kv-memory-fraction must be in (0, 1]");
  }
  if (dtype != "auto" && dtype != "float32" && dtype != "bfloat16") {
    return invalid_argument("--dtype must be auto, float32 or bfloat16");
  }
  DSOCR_RETURN_IF_ERROR(log::parse_format(log_format).status().with_context("--log-format"));
  return Status();
}

StatusOr<ServerConfig> parse_server_config(int argc, const char* const* argv,
                                           std::string* help_text) {
  ServerConfig c;
  FlagSet flags("dsocr-server", "OpenAI-compatible inference server for DeepSeek-OCR-2.");
  flags.add_string("model", &c.model,
                   "model: 'demo' (built-in tiny random weights), a local directory, or a hub id "
                   "org/name[@revision] found in the Hugging Face cache",
                   "DSOCR_MODEL");
  flags.add_string("served-model-name", &c.served_model_name,
                   "the model id /v1/models lists and requests name (default: the model's name)",
                   "DSOCR_SERVED_MODEL_NAME");
  flags.add_string("device", &c.device, "auto, cpu, cuda or cuda:N", "DSOCR_DEVICE");
  flags.add_string("dtype", &c.dtype, "auto (bfloat16 on GPU, float32 on CPU), float32, bfloat16",
                   "DSOCR_DTYPE");
  flags.add_string("host", &c.host, "address to listen on (0.0.0.0 for all)", "DSOCR_HOST");
  flags.add_int("port", &c.port, "port to listen on (0: any free port)", "DSOCR_PORT");
  flags.add_string("api-key", &c.api_key,
                   "require 'Authorization: Bearer KEY' on every route but /health and /metrics",
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
  flags.add_int("max-image-bytes", &c.max_image_bytes, "largest encoded image (413 above)",
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
  flags.add_int("max-model-len", &c.max_model_len, "context limit: prompt + output tokens",
                "DSOCR_MAX_MODEL_LEN");
  flags.add_int("max-num-seqs", &c.max_num_seqs, "requests in the running batch at most",
                "DSOCR_MAX_NUM_SEQS");
  flags.add_int("max-num-batched-tokens", &c.max_num_batched_tokens, "tokens per engine step",
                "DSOCR_MAX_NUM_BATCHED_TOKENS");
  flags.add_int("max-queued-requests", &c.max_queued_requests,
                "requests waiting for image preparation before new ones get 429",
                "DSOCR_MAX_QUEUED_REQUESTS");
  flags.add_int("max-pending-image-bytes", &c.max_pending_image_bytes,
                "image memory (encoded bytes, then pixels) of requests not yet running before new "
                "ones get 429 (0: no limit)",
                "DSOCR_MAX_PENDING_IMAGE_BYTES");
  flags.add_int("idle-memory-release-ms", &c.idle_memory_release_ms,
                "hand cached memory back to the system after this long idle (0: never)",
                "DSOCR_IDLE_MEMORY_RELEASE_MS");
  flags.add_int("num-kv-blocks", &c.num_kv_blocks, "KV-cache blocks (0: size from free memory)",
                "DSOCR_NUM_KV_BLOCKS");
  flags.add_double("kv-memory-fraction", &c.kv_memory_fraction,
                   "share of the memory left after weights and activations given to KV blocks",
                   "DSOCR_KV_MEMORY_FRACTION");
  flags.add_bool("prefix-caching", &c.prefix_caching, "reuse KV blocks of identical prefixes",
                 "DSOCR_PREFIX_CACHING");
  flags.add_int("vision-threads", &c.vision_threads, "threads decoding and preprocessing images",
                "DSOCR_VISION_THREADS");
  flags.add_int("torch-threads", &c.torch_threads, "CPU compute threads (0: cores minus vision)",
                "DSOCR_TORCH_THREADS");
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

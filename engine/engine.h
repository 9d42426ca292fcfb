// Engine: the public, torch-free face of dsocr's inference engine, used by the server and CLI.
//
//   auto engine = Engine::create(options);            // loads the model (state kLoading -> kReady)
//   auto stream = engine->submit(request);            // fails fast: queue full, bad parameters
//   while (auto event = stream->next(timeout)) ...    // tokens, then one final event
//   stream->cancel();                                 // ends it wherever it is (below)
//
// Inside (docs/architecture.md walks one request through the files): a RequestPreparer decodes
// and preprocesses the images on the vision workers and builds the prompt, off the engine thread;
// prepared requests reach the one engine thread through a channel; it admits them into the
// Scheduler (engine/core/), and step by step has the ModelRunner (the model and the paged KV
// cache on one device) run what the scheduler planned. Each request is one record
// (engine/request.h) from submit() to its final event. Nothing here exposes those types.
//
// Every submitted request gets exactly one final event, whichever stage it is in when it ends:
// queued for preparation, being prepared (a cancel is seen between images; the image being
// decoded is finished), prepared but not yet with the engine thread, waiting for the scheduler,
// or running. A cancelled request ends with FinishReason::kCancelled, counts once in
// requests_cancelled, computes no token after the engine sees the cancel, and frees what it held
// (image bytes, pixels, KV blocks). drain() ends all of them by its deadline. A failed request's
// final event says why in StreamEvent::failure (request_stream.h).
//
// Errors in a step: when a model step throws (the model, the sampler, the device), the requests
// in that step fail (FailureReason::kStepFailed, counted in step_failures) and the engine keeps
// serving the others. Only a failure of the scheduler's bookkeeping, after which KV ownership is
// in doubt, fails everything and turns the engine kUnhealthy; a broken invariant caught by
// DSOCR_CHECK aborts the process.
//
// Memory: image memory of requests not yet running (encoded bytes queued for preparation,
// preprocessed pixels waiting for the vision encoder) is bounded by max_pending_image_bytes;
// pixels are freed once encoded. After a quiet spell the engine returns cached memory to the
// system (idle_memory_release_ms).
//
// Thread-safety: every method may be called from any thread.
// Invariants: stats() counts a request in exactly one of requests_finished/_cancelled/_failed,
// and does so before its final event is visible to the reader; state() only moves forward
// (kLoading -> kReady -> kDraining -> kStopped, or kUnhealthy -> kDraining -> kStopped).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "engine/core/batching.h"
#include "engine/core/sampling_params.h"
#include "engine/document.h"
#include "engine/request_stream.h"
#include "tokenizer/tokenizer.h"

namespace dsocr::engine {

struct EngineOptions {
  std::filesystem::path model_dir;  // config.json, weights, tokenizer.json
  std::string device = "auto";      // auto | cpu | cuda[:N]
  std::string dtype = "auto";       // auto (bf16 on GPU, f32 on CPU) | float32 | bfloat16
  // How the language model's weight matrices are kept on the CPU: auto (as the checkpoint stores
  // them, never wider than the compute dtype) | float32 | bfloat16 | int8 (model_runner.cpp).
  std::string weights = "auto";
  // The KV cache's dtype: auto (the compute dtype) | float32 | bfloat16 (model_runner.cpp).
  std::string kv_cache_dtype = "auto";
  int64_t block_size = 16;
  int64_t num_kv_blocks = 0;             // 0: size from memory (kv_memory_fraction)
  double kv_memory_fraction = 0.9;       // of the memory left after weights and activations
  int64_t max_kv_bytes_cpu = 2ll << 30;  // cap on CPU, where "free memory" is shared
  // On the CPU: the memory the engine plans within (weights, activations, KV cache; it refuses
  // to start when the model cannot fit: engine/memory_plan.h). 0: what the machine (or the
  // process's cgroup) has available at start, less a margin.
  int64_t cpu_memory_budget = 0;
  bool prefix_caching = true;
  // On CUDA: decode steps replayed from graphs captured at start-up (engine/decode_graphs.h).
  bool cuda_graphs = true;
  SchedulerConfig scheduler;
  size_t vision_threads = 1;
  size_t max_queued_requests = 256;
  // Budget for the image memory of requests accepted but not yet running: each image is charged
  // pending_image_bytes() at submit (its encoded bytes plus the most pixels preprocessing can
  // make of it), then its real pixel size once prepared, and nothing once the vision encoder has
  // run it (or its request ended). submit() fails with kResourceExhausted past it; 0: no limit.
  int64_t max_pending_image_bytes = 1ll << 30;
  // After this long with nothing to do, hand cached CPU memory back to the system (the tensor
  // allocator's free blocks, malloc's free pages); 0: never.
  int64_t idle_memory_release_ms = 2000;
  int torch_threads = 0;  // 0: cores minus vision threads
  // Fault injection, for tests: called on the engine thread before each model step with the ids
  // of the requests in it; returning true makes the step fail as if the model had thrown.
  std::function<bool(const std::vector<std::string>& request_ids)> step_fault;
};

// The message prefix of the error a request gets when prompt + max_tokens exceed the context
// (kOutOfRange); the server turns it into OpenAI's code of the same name.
inline constexpr std::string_view kContextLengthExceeded = "context_length_exceeded";

enum class EngineState { kLoading, kReady, kDraining, kUnhealthy, kStopped };
std::string_view engine_state_name(EngineState state);

// One request: the prompt text with one "<image>" marker per image (or none: markers are
// prepended, see tokenizer/ocr_prompt.h) and the images (encoded bytes or PDF pages), in order.
struct GenerateRequest {
  std::string request_id;
  std::string prompt;
  std::vector<ImageSource> images;
  SamplingParams sampling;
  bool return_logits = false;  // debugging: each token event carries the raw logits it came from
  // Prefix-cache isolation: requests share KV blocks (and cached_tokens, image encodings) only
  // with requests of the same salt. Empty: the shared cache.
  std::string cache_salt;
  // A later page of a document whose first page the engine already took: still taken while the
  // engine drains (until drain()'s deadline), so a document in flight at SIGTERM finishes like
  // any other request in flight instead of failing at its next page.
  bool later_page = false;
};

// What one image is charged against max_pending_image_bytes at submit: its encoded bytes (or a
// PDF page's rendered pixels) plus the most pixels preprocessing can make of it.
int64_t pending_image_bytes(size_t encoded_bytes);
int64_t pending_image_bytes(const ImageSource& image);

struct EngineStats {
  EngineState state = EngineState::kLoading;
  SchedulerStats scheduler;
  int64_t kv_blocks = 0, block_size = 0;
  uint64_t steps = 0;
  uint64_t prompt_tokens = 0, image_tokens = 0, generated_tokens = 0, cached_tokens = 0;
  uint64_t images_encoded = 0, image_cache_hits = 0;
  double vision_encode_seconds = 0;  // wall time of the vision-encoder steps
  uint64_t loops_detected = 0;
  uint64_t requests_finished = 0, requests_cancelled = 0, requests_failed = 0;
  uint64_t step_failures = 0;  // model steps that threw; their requests failed (kStepFailed)
  int64_t queued_for_preparation = 0;
  int64_t pending_image_bytes = 0;  // charged against max_pending_image_bytes now
  uint64_t idle_memory_releases = 0;
};

class Engine {
 public:
  static StatusOr<std::unique_ptr<Engine>> create(const EngineOptions& options);
  virtual ~Engine() = default;

  // Fails fast (kResourceExhausted) when too many requests are queued, kUnavailable when not
  // ready, kInvalidArgument for bad sampling parameters. Image and prompt errors arrive as the
  // stream's first (final) event.
  virtual StatusOr<std::shared_ptr<RequestStream>> submit(GenerateRequest request) = 0;

  virtual EngineState state() const = 0;
  virtual EngineStats stats() const = 0;
  // Stops accepting (except later pages: GenerateRequest::later_page), lets in-flight requests
  // finish up to `timeout`, then ends every request
  // still held (kCancelled with kUnavailable "the server is shutting down") and stops. Returns
  // at the deadline, plus the end of an engine step in progress; preparation tasks still queued
  // then do nothing.
  virtual void drain(std::chrono::milliseconds timeout) = 0;

  // Model facts for the API layer.
  virtual int64_t max_model_len() const = 0;
  virtual std::string detokenize(const std::vector<int32_t>& ids) const = 0;
  virtual std::vector<int32_t> tokenize(const std::string& text) const = 0;
  // The model's tokenizer (the engine's own: loaded once, shared).
  virtual std::shared_ptr<const tokenizer::Tokenizer> tokenizer() const = 0;
};

}  // namespace dsocr::engine

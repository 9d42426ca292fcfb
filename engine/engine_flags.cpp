#include "engine/engine_flags.h"

#include "common/check.h"
#include "common/memory.h"

namespace dsocr::engine {
namespace {


void add_one(FlagSet* flags, EngineFlags* v, EngineFlag flag, std::string_view help_override,
             bool with_env) {
  auto help = [&](const char* shared) {
    return help_override.empty() ? std::string(shared) : std::string(help_override);
  };
  auto env = [&](const char* name) { return with_env ? std::string(name) : std::string(); };
  switch (flag) {
    case EngineFlag::kModel:
      return flags->add_string(
          "model", &v->model,
          help("model: 'demo' (built-in tiny random weights), a local directory, or a hub id "
               "org/name[@revision] found in the Hugging Face cache"),
          env("DSOCR_MODEL"));
    case EngineFlag::kDevice:
      return flags->add_string("device", &v->device, help("auto, cpu, cuda or cuda:N"),
                               env("DSOCR_DEVICE"));
    case EngineFlag::kDtype:
      return flags->add_string("dtype", &v->dtype,
                               help("auto (bfloat16 on GPU, float32 on CPU), float32, bfloat16"),
                               env("DSOCR_DTYPE"));
    case EngineFlag::kWeights:
      return flags->add_string(
          "weights", &v->weights,
          help("how the language model's weight matrices are kept in memory on the CPU (compute "
               "stays in --dtype): auto (as the checkpoint stores them, at most --dtype's width), "
               "float32, bfloat16, int8 (a scale per 32 values: ~0.28x float32, a small error, "
               "docs/cpu.md)"),
          env("DSOCR_WEIGHTS"));
    case EngineFlag::kKvCacheDtype:
      return flags->add_string(
          "kv-cache-dtype", &v->kv_cache_dtype,
          help("dtype of the KV cache: auto (the compute dtype), float32, bfloat16 (half the KV "
               "memory and the memory a decode step reads at long contexts; docs/cpu.md)"),
          env("DSOCR_KV_CACHE_DTYPE"));
    case EngineFlag::kMaxModelLen:
      return flags->add_int("max-model-len", &v->max_model_len,
                            help("context limit: prompt + output tokens"),
                            env("DSOCR_MAX_MODEL_LEN"));
    case EngineFlag::kMaxNumSeqs:
      return flags->add_int("max-num-seqs", &v->max_num_seqs,
                            help("requests in the running batch at most"),
                            env("DSOCR_MAX_NUM_SEQS"));
    case EngineFlag::kMaxNumBatchedTokens:
      return flags->add_int("max-num-batched-tokens", &v->max_num_batched_tokens,
                            help("tokens per engine step"), env("DSOCR_MAX_NUM_BATCHED_TOKENS"));
    case EngineFlag::kMaxQueuedRequests:
      return flags->add_int("max-queued-requests", &v->max_queued_requests,
                            help("requests waiting for image preparation before new ones get 429"),
                            env("DSOCR_MAX_QUEUED_REQUESTS"));
    case EngineFlag::kMaxPendingImageBytes:
      return flags->add_int(
          "max-pending-image-bytes", &v->max_pending_image_bytes,
          help("image memory (encoded bytes, then pixels) of requests not yet running before new "
               "ones get 429 (0: no limit)"),
          env("DSOCR_MAX_PENDING_IMAGE_BYTES"));
    case EngineFlag::kIdleMemoryReleaseMs:
      return flags->add_int("idle-memory-release-ms", &v->idle_memory_release_ms,
                            help("hand cached memory back to the system after this long idle "
                                 "(0: never)"),
                            env("DSOCR_IDLE_MEMORY_RELEASE_MS"));
    case EngineFlag::kNumKvBlocks:
      return flags->add_int("num-kv-blocks", &v->num_kv_blocks,
                            help("KV-cache blocks (0: size from free memory)"),
                            env("DSOCR_NUM_KV_BLOCKS"));
    case EngineFlag::kKvMemoryFraction:
      return flags->add_double(
          "kv-memory-fraction", &v->kv_memory_fraction,
          help("share of the memory left after weights and activations given to KV blocks"),
          env("DSOCR_KV_MEMORY_FRACTION"));
    case EngineFlag::kPrefixCaching:
      return flags->add_bool("prefix-caching", &v->prefix_caching,
                             help("reuse KV blocks of identical prefixes"),
                             env("DSOCR_PREFIX_CACHING"));
    case EngineFlag::kCudaGraphs:
      return flags->add_bool(
          "cuda-graphs", &v->cuda_graphs,
          help("on a GPU, replay decode steps from CUDA graphs captured at start-up for bucketed "
               "batch sizes (fewer kernel launches per step; docs/gpu.md)"),
          env("DSOCR_CUDA_GRAPHS"));
    case EngineFlag::kVisionThreads:
      return flags->add_int("vision-threads", &v->vision_threads,
                            help("threads decoding and preprocessing images"),
                            env("DSOCR_VISION_THREADS"));
    case EngineFlag::kTorchThreads:
      return flags->add_int("torch-threads", &v->torch_threads,
                            help("CPU compute threads (0: cores minus vision)"),
                            env("DSOCR_TORCH_THREADS"));
    case EngineFlag::kCpuMemoryBudget:
      return flags->add_string(
          "cpu-memory-budget", &v->cpu_memory_budget,
          help("memory the engine plans within on the CPU (weights, activations, KV cache), e.g. "
               "12G; it refuses to start when the model cannot fit (auto: what the machine or its "
               "cgroup has available at start, less 10%)"),
          env("DSOCR_CPU_MEMORY_BUDGET"));
  }
  DSOCR_CHECK(false) << "unknown engine flag " << static_cast<int>(flag);
}

}  // namespace

void add_engine_flags(FlagSet* flags, EngineFlags* values, std::initializer_list<EngineFlagUse> use,
                      EngineFlagEnv env) {
  for (const EngineFlagUse& u : use)
    add_one(flags, values, u.flag, u.help, env == EngineFlagEnv::kWith);
}

Status EngineFlags::validate() const {
  if (model.empty()) return invalid_argument("--model must not be empty");
  DSOCR_RETURN_IF_ERROR(check_flag_range("max-model-len", max_model_len, 16, 1 << 20));
  DSOCR_RETURN_IF_ERROR(check_flag_range("max-num-seqs", max_num_seqs, 1, 4096));
  DSOCR_RETURN_IF_ERROR(check_flag_range("max-num-batched-tokens", max_num_batched_tokens, 16, 1 << 20));
  DSOCR_RETURN_IF_ERROR(check_flag_range("max-queued-requests", max_queued_requests, 1, 1 << 20));
  DSOCR_RETURN_IF_ERROR(check_flag_range("max-pending-image-bytes", max_pending_image_bytes, 0, 1ll << 40));
  DSOCR_RETURN_IF_ERROR(check_flag_range("idle-memory-release-ms", idle_memory_release_ms, 0, 86'400'000));
  DSOCR_RETURN_IF_ERROR(check_flag_range("num-kv-blocks", num_kv_blocks, 0, 1 << 24));
  DSOCR_RETURN_IF_ERROR(check_flag_range("vision-threads", vision_threads, 1, 256));
  DSOCR_RETURN_IF_ERROR(check_flag_range("torch-threads", torch_threads, 0, 1024));
  if (!(kv_memory_fraction > 0 && kv_memory_fraction <= 1)) {
    return out_of_range("--kv-memory-fraction must be in (0, 1]");
  }
  if (cpu_memory_budget != "auto") {
    auto bytes = parse_byte_size(cpu_memory_budget);
    if (!bytes.ok()) return invalid_argument("--cpu-memory-budget: " + bytes.status().message());
    if (*bytes < (int64_t{64} << 20))
      return out_of_range("--cpu-memory-budget must be at least 64M (or auto)");
  }
  if (dtype != "auto" && dtype != "float32" && dtype != "bfloat16") {
    return invalid_argument("--dtype must be auto, float32 or bfloat16");
  }
  if (kv_cache_dtype != "auto" && kv_cache_dtype != "float32" && kv_cache_dtype != "bfloat16") {
    return invalid_argument("--kv-cache-dtype must be auto, float32 or bfloat16, got '" +
                            kv_cache_dtype + "'");
  }
  if (weights != "auto" && weights != "float32" && weights != "bfloat16" && weights != "int8") {
    return invalid_argument("--weights must be auto, float32, bfloat16 or int8, got '" + weights +
                            "'");
  }
  return Status();
}

EngineOptions EngineFlags::to_options(const std::filesystem::path& model_dir) const {
  EngineOptions o;
  o.model_dir = model_dir;
  o.device = device;
  o.dtype = dtype;
  o.weights = weights;
  o.kv_cache_dtype = kv_cache_dtype;
  o.num_kv_blocks = num_kv_blocks;
  o.kv_memory_fraction = kv_memory_fraction;
  o.prefix_caching = prefix_caching;
  o.cuda_graphs = cuda_graphs;
  o.scheduler.max_model_len = max_model_len;
  o.scheduler.max_num_seqs = max_num_seqs;
  o.scheduler.max_num_batched_tokens = max_num_batched_tokens;
  o.vision_threads = static_cast<size_t>(vision_threads);
  o.max_queued_requests = static_cast<size_t>(max_queued_requests);
  o.max_pending_image_bytes = max_pending_image_bytes;
  o.idle_memory_release_ms = idle_memory_release_ms;
  o.torch_threads = static_cast<int>(torch_threads);
  if (auto budget = parse_byte_size(cpu_memory_budget); budget.ok()) o.cpu_memory_budget = *budget;
  return o;
}

}  // namespace dsocr::engine

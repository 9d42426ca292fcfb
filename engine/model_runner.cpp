#include "engine/model_runner.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>

#include <algorithm>
#include <set>
#include <stdexcept>
#include <thread>

#include "common/logging.h"
#include "common/memory.h"
#include "engine/decode_graphs.h"
#include "engine/device.h"
#include "engine/kernels/cpu_kernels.h"
#include "engine/kernels/forward_batch.h"
#include "engine/kernels/kv_cache.h"
#include "engine/kernels/paged_attention.h"
#include "engine/memory_plan.h"
#include "engine/model/language_model.h"
#include "engine/model/pixel_values.h"
#include "engine/model/vision_model.h"
#include "engine/sampler.h"
#include "weights/cpu_allocator.h"
#include "weights/loader.h"
#include "weights/safetensors.h"

namespace dsocr::engine {
namespace {

// An image encoding kept for reuse, per cache salt: a salted request must not learn (from its
// encode time) that another client sent the same page.
struct CachedEncoding {
  uint64_t cache_salt;
  uint64_t content_hash;
  at::Tensor embeddings;
};
constexpr size_t kImageCacheEntries = 16;

}  // namespace

struct ModelRunner::Impl {
  at::Device device{at::kCPU};
  at::ScalarType dtype = at::kFloat;
  at::ScalarType kv_dtype = at::kFloat;  // of the KV cache: dtype or narrower
  int64_t block_size = 16;
  model::VisionModel vision{nullptr};
  model::LanguageModel language{nullptr};
  KvCache cache;
  std::unique_ptr<DecodeGraphs> decode_graphs;  // null: decode steps run eagerly
  std::list<CachedEncoding> image_cache;  // most recently used first
  std::shared_ptr<spdlog::logger> logger = log::get("engine");
};

ModelRunner::ModelRunner(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ModelRunner::~ModelRunner() = default;

bool ModelRunner::on_cuda() const { return impl_->device.is_cuda(); }
bool ModelRunner::decode_graphs() const { return impl_->decode_graphs != nullptr; }

RunnerStats ModelRunner::stats() const {
  std::lock_guard lock(stats_mu_);
  return stats_;
}

namespace {

// The KV cache's dtype (EngineOptions::kv_cache_dtype): the compute dtype or narrower.
StatusOr<at::ScalarType> kv_cache_dtype(const std::string& name, at::ScalarType compute) {
  if (name == "auto") return compute;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float32") {
    if (compute != at::kFloat)
      return invalid_argument("--kv-cache-dtype float32 is wider than --dtype bfloat16");
    return at::kFloat;
  }
  return invalid_argument("--kv-cache-dtype must be auto, float32 or bfloat16, got '" + name + "'");
}

// How the language model's weight matrices are kept (EngineOptions::weights): nullopt for the
// modules in the compute dtype (the GPU's and float32's only way), or a StoredWeight format.
StatusOr<std::optional<cpu::WeightFormat>> stored_weight_format(const std::string& weights,
                                                                at::ScalarType compute,
                                                                bool cuda,
                                                                const weights::StateDict& state) {
  using Format = cpu::WeightFormat;
  if (cuda) {
    if (weights != "auto")
      return invalid_argument("--weights " + weights +
                              " is for the CPU; on a GPU the weights take --dtype");
    return std::optional<Format>();
  }
  const bool compute_f32 = compute == at::kFloat;
  if (weights == "int8") return std::optional<Format>(Format::kInt8);
  if (weights == "float32") {
    if (!compute_f32)
      return invalid_argument("--weights float32 is wider than --dtype bfloat16");
    return std::optional<Format>();
  }
  if (weights == "bfloat16")
    return compute_f32 ? std::optional<Format>(Format::kBFloat16) : std::optional<Format>();
  if (weights != "auto")
    return invalid_argument("--weights must be auto, float32, bfloat16 or int8, got '" + weights +
                            "'");
  // auto: a bfloat16 checkpoint computed in float32 keeps its matrices as stored.
  if (compute_f32) {
    const weights::TensorInfo* head = state.info("lm_head.weight");
    if (head != nullptr && head->dtype == weights::DType::kBF16)
      return std::optional<Format>(Format::kBFloat16);
  }
  return std::optional<Format>();
}

// The weights' bytes once loaded (a bf16 file loaded as float32 doubles; stored matrices take
// their format's), and whether any tensor is widened on the way.
std::pair<int64_t, bool> loaded_weight_bytes(const weights::StateDict& state, at::ScalarType dtype,
                                             std::optional<cpu::WeightFormat> stored) {
  int64_t bytes = 0;
  bool widened = false;
  for (const std::string& name : state.names()) {
    const weights::TensorInfo* info = state.info(name);
    int64_t element = static_cast<int64_t>(at::elementSize(dtype));
    if (stored && model::LanguageModelImpl::is_stored_matrix(name)) {
      element = cpu::weight_format_bytes(*stored);
      if (*stored == cpu::WeightFormat::kInt8 && info->shape.size() == 2)
        bytes += info->shape[0] * cpu::int8_groups(info->shape[1]) * 4;  // the group scales
    } else if (stored && model::LanguageModelImpl::is_embedding(name) &&
               *stored != cpu::WeightFormat::kFloat32) {
      element = 2;
    } else if (stored && model::VisionModelImpl::is_block_tensor(name) &&
               info->dtype == weights::DType::kBF16) {
      element = 2;  // the vision blocks kept as stored (vision_model.h)
    }
    bytes += info->numel() * element;
    if (element > weights::dtype_size(info->dtype)) widened = true;
  }
  return {bytes, widened};
}

// Blocks for the KV cache: the given count, or what fits after one maximal step (on the CPU,
// within the memory budget: engine/memory_plan.h).
StatusOr<int64_t> size_kv_cache(const EngineOptions& options, const weights::LanguageConfig& lc,
                                const std::string& device_name, at::Device device,
                                at::ScalarType dtype, at::ScalarType compute_dtype,
                                int64_t cpu_budget, int64_t weight_bytes,
                                model::LanguageModel& language, model::VisionModel& vision,
                                spdlog::logger& logger) {
  const int64_t per_block = KvCache::bytes_per_block(lc.num_hidden_layers, options.block_size,
                                                     lc.num_key_value_heads, lc.head_dim(),
                                                     at::elementSize(dtype));
  const int64_t needed =
      (options.scheduler.max_model_len + options.block_size - 1) / options.block_size;
  if (options.num_kv_blocks > 0) {
    if (options.num_kv_blocks < needed)
      logger.warn("--num-kv-blocks {} holds fewer than one maximal request ({} blocks)",
                  options.num_kv_blocks, needed);
    return options.num_kv_blocks;
  }
  // Peak activations: one maximal step through a throwaway cache, then measure what is left.
  int64_t probe_bytes = 0;
  {
    KvCache probe = KvCache::allocate(lc.num_hidden_layers, needed, options.block_size,
                                      lc.num_key_value_heads, lc.head_dim(), dtype, device);
    const int64_t t =
        std::min(options.scheduler.max_num_batched_tokens, needed * options.block_size);
    ForwardBatch batch;
    auto opts = at::TensorOptions().dtype(at::kLong).device(device);
    batch.input_ids = at::zeros({t}, opts);
    batch.positions = at::arange(t, opts);
    batch.slot_mapping = at::arange(t, opts);
    SequenceSlice seq{0, t, t, {}};
    for (int64_t b = 0; b < needed; ++b) seq.block_table.push_back(static_cast<int32_t>(b));
    batch.sequences.push_back(seq);
    batch.logits_rows = at::full({1}, t - 1, opts);
    (void)language->forward(batch, probe);
    probe_bytes = per_block * needed;
  }
  if (!device.is_cuda()) {
    // The step's activations and the throwaway cache are in the CPU allocator's cache now. The
    // activations stay (every step needs them again); the throwaway cache is no part of the
    // footprint, so the cache is emptied and the activations counted by their cached size.
    const auto cached = static_cast<int64_t>(weights::cpu_allocator_stats().cached_bytes);
    const int64_t activations = std::max<int64_t>(0, cached - probe_bytes);
    weights::release_cached_cpu_memory();
    KvCacheRequest kv{.bytes_per_block = per_block,
                      .blocks_per_request = needed,
                      .max_num_seqs = options.scheduler.max_num_seqs,
                      .memory_fraction = options.kv_memory_fraction,
                      .cap_bytes = options.max_kv_bytes_cpu,
                      .max_model_len = options.scheduler.max_model_len};
    DSOCR_ASSIGN_OR_RETURN(
        CpuMemoryPlan plan,
        plan_kv_cache(cpu_budget, weight_bytes, process_resident_bytes() + activations, kv));
    logger.info("{}", plan.describe());
    return plan.kv_blocks;
  }
  // The vision encoder's peak: the largest batches one step may encode (the per-step image-token
  // budget filled with 6-tile pages, or with untiled pages: 6 * 144 + 256 + 1 and 256 + 1 tokens).
  // Its activations stay in the caching allocator's pool, so the free memory read below is what
  // is left beside the language model's maximal step and the vision batch.
  {
    const int64_t budget_tokens = options.scheduler.max_image_tokens_per_step;
    const auto opts = at::TensorOptions().dtype(compute_dtype).device(device);
    const int64_t tiled_pages = std::max<int64_t>(1, budget_tokens / (6 * 144 + 256 + 1));
    const int64_t plain_pages = std::max<int64_t>(1, budget_tokens / (256 + 1));
    model::PixelBatch tiled{at::zeros({tiled_pages, 3, 1024, 1024}, opts),
                            at::zeros({tiled_pages * 6, 3, 768, 768}, opts),
                            std::vector<int>(static_cast<size_t>(tiled_pages), 6)};
    (void)vision->encode(tiled);
    model::PixelBatch plain{at::zeros({plain_pages, 3, 1024, 1024}, opts), at::Tensor(),
                            std::vector<int>(static_cast<size_t>(plain_pages), 0)};
    (void)vision->encode(plain);
  }
  // Decode temporaries the probes did not make: a full batch's float32 logits, the sampler's copy
  // and, for sampled rows, its sort (values, ids, float64 probabilities, prefix sums, masks: ~72
  // bytes a logit together); FlashInfer's workspaces (allocated after this reading).
  int64_t decode_temporaries =
      options.scheduler.max_num_seqs * lc.vocab_size * 72 + (int64_t{160} << 20);
  // CUDA graphs keep each captured size's logits (float32) and a step's activations in their
  // pool.
  if (options.cuda_graphs) {
    for (int64_t size : decode_graph_sizes(options.scheduler.max_num_seqs))
      decode_temporaries += size * lc.vocab_size * 4;
    decode_temporaries += 256ll << 20;
  }
  const int64_t free_bytes = free_memory_bytes(device_name);
  const int64_t budget =
      static_cast<int64_t>(options.kv_memory_fraction * static_cast<double>(std::max<int64_t>(
                                                            0, free_bytes - decode_temporaries)));
  int64_t blocks = std::min(budget / per_block, needed * options.scheduler.max_num_seqs);
  if (blocks < needed) {
    logger.warn(
        "only {} KV blocks fit in free memory ({} free, {} kept for decode temporaries); "
        "using the {} one request needs, which may not fit",
        blocks, format_bytes(free_bytes), format_bytes(decode_temporaries), needed);
    blocks = needed;
  }
  logger.info(
      "GPU memory: {} free after the weights and a maximal language-model step and "
      "vision batch; {} kept for decode temporaries; {} KV blocks ({} tokens, {} sequences "
      "of {} tokens), {} left",
      format_bytes(free_bytes), format_bytes(decode_temporaries), blocks,
      blocks * options.block_size, blocks / needed, options.scheduler.max_model_len,
      format_bytes(std::max<int64_t>(0, free_bytes - decode_temporaries - blocks * per_block)));
  return blocks;
}

}  // namespace

StatusOr<std::unique_ptr<ModelRunner>> ModelRunner::load(const EngineOptions& options,
                                                         const weights::ModelConfig& config,
                                                         PendingImageBudget* budget) {
  auto impl = std::make_unique<Impl>();
  spdlog::logger& logger = *impl->logger;
  DeviceInfo info = probe_devices();
  DSOCR_ASSIGN_OR_RETURN(std::string device_name, resolve_device(options.device, info));
  impl->device = at::Device(device_name);
  if (options.dtype == "auto") {
    impl->dtype = impl->device.is_cuda() ? at::kBFloat16 : at::kFloat;
  } else {
    DSOCR_ASSIGN_OR_RETURN(impl->dtype, weights::parse_compute_dtype(options.dtype));
  }
  impl->block_size = options.block_size;
  DSOCR_ASSIGN_OR_RETURN(impl->kv_dtype, kv_cache_dtype(options.kv_cache_dtype, impl->dtype));

  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int threads = options.torch_threads > 0
                          ? options.torch_threads
                          : std::max(1, cores - static_cast<int>(options.vision_threads) + 1);
  at::set_num_threads(std::min(threads, cores));
  if (!impl->device.is_cuda()) {
    const int kernel_threads = cpu::parallel_threads();
    if (kernel_threads < at::get_num_threads())
      logger.warn("CPU kernels use {} of {} threads: cpu_kernels.cpp was built without OpenMP",
                  kernel_threads, at::get_num_threads());
    else
      logger.info("CPU: {} threads for model steps", at::get_num_threads());
  }

  DSOCR_ASSIGN_OR_RETURN(auto state, weights::StateDict::open(options.model_dir));
  // On the CPU the weights must fit the memory budget before any of them is loaded.
  DSOCR_ASSIGN_OR_RETURN(
      const std::optional<cpu::WeightFormat> stored,
      stored_weight_format(options.weights, impl->dtype, impl->device.is_cuda(), state));
  const auto [weight_bytes, widened] = loaded_weight_bytes(state, impl->dtype, stored);
  int64_t cpu_budget = 0;
  if (!impl->device.is_cuda()) {
    const int64_t resident = process_resident_bytes();
    cpu_budget = options.cpu_memory_budget > 0
                     ? options.cpu_memory_budget
                     : default_cpu_memory_budget(available_memory_bytes(), resident);
    DSOCR_RETURN_IF_ERROR(check_weights_fit(cpu_budget, resident, weight_bytes,
                                            widened && impl->dtype == at::kFloat,
                                            stored != cpu::WeightFormat::kInt8));
  }
  const auto started = Clock::now();
  impl->vision = model::VisionModel(config);
  // Narrow --weights on the CPU keep the vision blocks as a bfloat16 checkpoint stores them too.
  DSOCR_RETURN_IF_ERROR(impl->vision->load(state, impl->dtype, impl->device, stored.has_value())
                            .with_context("vision weights"));
  impl->language = model::LanguageModel(config.language);
  DSOCR_RETURN_IF_ERROR(
      impl->language->load(state, impl->dtype, impl->device, stored)
          .with_context("language weights"));
  const char* compute = impl->dtype == at::kFloat ? "float32" : "bfloat16";
  logger.info("model {} loaded on {} ({}, language-model matrices {}, ~{} of weights) in {:.1f} s",
              options.model_dir.string(), device_name, compute,
              stored ? cpu::weight_format_name(*stored) : compute, format_bytes(weight_bytes),
              ms_between(started, Clock::now()) / 1000);

  const auto& lc = config.language;
  DSOCR_ASSIGN_OR_RETURN(
      const int64_t blocks,
      size_kv_cache(options, lc, device_name, impl->device, impl->kv_dtype, impl->dtype, cpu_budget,
                    weight_bytes, impl->language, impl->vision, logger));
  // On CUDA one block more than the block manager hands out: the scratch block that padding
  // rows of a graph-replayed decode step write into.
  const int64_t scratch_blocks = impl->device.is_cuda() ? 1 : 0;
  impl->cache =
      KvCache::allocate(lc.num_hidden_layers, blocks + scratch_blocks, options.block_size,
                        lc.num_key_value_heads, lc.head_dim(), impl->kv_dtype, impl->device);
  const bool graphs = options.cuda_graphs && impl->device.is_cuda();
  const int64_t needed_blocks =
      (options.scheduler.max_model_len + options.block_size - 1) / options.block_size;
  impl->cache.gpu_attention =
      make_gpu_attention(impl->device, lc.num_attention_heads, lc.num_key_value_heads,
                         lc.head_dim(), options.block_size, blocks + scratch_blocks, impl->kv_dtype,
                         graphs ? options.scheduler.max_num_seqs : 0, needed_blocks);
  if (graphs)
    impl->decode_graphs =
        DecodeGraphs::capture(impl->language, impl->cache, static_cast<int32_t>(blocks),
                              options.scheduler.max_num_seqs, logger);
  logger.info("KV cache: {} blocks of {} tokens ({} tokens, {}, {:.2f} GiB)", blocks,
              options.block_size, blocks * options.block_size,
              impl->kv_dtype == at::kFloat ? "float32" : "bfloat16",
              KvCache::bytes_per_block(lc.num_hidden_layers, options.block_size,
                                       lc.num_key_value_heads, lc.head_dim(),
                                       at::elementSize(impl->kv_dtype)) *
                  blocks / double(1ll << 30));
  std::unique_ptr<ModelRunner> runner(new ModelRunner(std::move(impl)));
  runner->device_name_ = device_name;
  runner->num_kv_blocks_ = blocks;
  runner->budget_ = budget;
  runner->step_fault_ = options.step_fault;
  return runner;
}

void ModelRunner::drop_embeddings(Request& request) {
  for (RequestImage& image : request.image_states) image.on_device = at::Tensor();
}

void ModelRunner::keep_encoding(Request& request, int image_index, const at::Tensor& embeddings) {
  RequestImage& image = request.image_states[image_index];
  image.on_device = embeddings;
  image.kept = impl_->device.is_cuda() ? embeddings.to(at::kCPU) : embeddings;
  image.pixels = vision::PreprocessedImage{};
  budget_->uncharge(request, std::exchange(image.charged_pixel_bytes, 0));
}

void ModelRunner::encode_images(const StepPlan& plan) {
  if (plan.images.empty()) return;
  Impl& m = *impl_;
  std::vector<const vision::PreprocessedImage*> batch;
  std::vector<std::pair<Request*, int>> targets;
  uint64_t cache_hits = 0;
  for (const ImageToEncode& e : plan.images) {
    Request& request = Request::of(e.seq);
    const int i = e.image_index;
    RequestImage& image = request.image_states[i];
    if (image.kept.defined()) {  // again, after a preemption
      image.on_device = image.kept.to(m.device);
      continue;
    }
    const uint64_t content = request.images[i].content_hash;
    auto hit = std::find_if(m.image_cache.begin(), m.image_cache.end(), [&](const auto& entry) {
      return entry.content_hash == content && entry.cache_salt == request.cache_salt_hash;
    });
    if (hit != m.image_cache.end()) {
      keep_encoding(request, i, hit->embeddings);
      m.image_cache.splice(m.image_cache.begin(), m.image_cache, hit);
      ++cache_hits;
      continue;
    }
    batch.push_back(&image.pixels);
    targets.emplace_back(&request, i);
  }
  double elapsed_ms = 0;
  size_t encoded = 0;
  if (!batch.empty()) {
    const auto started = Clock::now();
    model::PixelBatch pixels = model::make_pixel_batch(batch, m.dtype, m.device);
    std::vector<at::Tensor> blocks = m.vision->encode(pixels);
    // On CUDA the kernels are queued, not finished; waiting here makes the time the encoder's.
    if (m.device.is_cuda()) torch::cuda::synchronize(m.device.index());
    elapsed_ms = ms_between(started, Clock::now());
    pixels = {};
    encoded = blocks.size();
    for (size_t k = 0; k < blocks.size(); ++k) {
      auto [request, i] = targets[k];
      m.image_cache.push_front({request->cache_salt_hash, batch[k]->content_hash, blocks[k]});
      keep_encoding(*request, i, blocks[k]);  // frees the pixels batch[k] points to
    }
    // A request waits for the whole batch, so each one in it is charged the batch's time (once).
    std::set<Request*> charged;
    for (auto& target : targets)
      if (charged.insert(target.first).second) target.first->encode_ms += elapsed_ms;
    while (m.image_cache.size() > kImageCacheEntries) m.image_cache.pop_back();
  }
  std::lock_guard lock(stats_mu_);
  stats_.image_cache_hits += cache_hits;
  stats_.images_encoded += encoded;
  stats_.vision_encode_seconds += elapsed_ms / 1000.0;
}

at::Tensor ModelRunner::forward(const StepPlan& plan) {
  Impl& m = *impl_;
  if (m.decode_graphs) {
    at::Tensor logits = forward_decode_graph(plan);
    if (logits.defined()) return logits;
  }
  std::vector<int64_t> ids, positions, slots, logits_rows, image_rows;
  std::vector<at::Tensor> image_parts;
  ForwardBatch batch;
  const int64_t bs = m.block_size;
  for (const ScheduledChunk& chunk : plan.chunks) {
    const Sequence& seq = *chunk.seq;
    const int64_t q_start = static_cast<int64_t>(ids.size());
    for (int64_t p = chunk.begin; p < chunk.begin + chunk.num_tokens; ++p) {
      ids.push_back(seq.tokens[p]);
      positions.push_back(p);
      slots.push_back(static_cast<int64_t>(seq.kv.blocks[p / bs]) * bs + p % bs);
    }
    SequenceSlice slice{q_start, chunk.num_tokens, chunk.begin + chunk.num_tokens,
                        std::vector<int32_t>(seq.kv.blocks.begin(), seq.kv.blocks.end())};
    batch.sequences.push_back(std::move(slice));
    if (chunk.samples) logits_rows.push_back(q_start + chunk.num_tokens - 1);
    // Image rows of this chunk, taken from the image's embedding block (spec §8.3).
    const Request& request = Request::of(chunk.seq);
    for (size_t i = 0; i < seq.images.size(); ++i) {
      const SequenceImage& img = seq.images[i];
      const int64_t lo = std::max(chunk.begin, img.offset);
      const int64_t hi = std::min(chunk.begin + chunk.num_tokens, img.offset + img.length);
      if (lo >= hi) continue;
      const at::Tensor& embeddings = request.image_states[i].on_device;
      if (!embeddings.defined())
        throw std::logic_error("image " + std::to_string(i) + " of request " +
                               request.stream->request_id() + " is not encoded");
      image_parts.push_back(embeddings.slice(0, lo - img.offset, hi - img.offset));
      for (int64_t p = lo; p < hi; ++p) image_rows.push_back(q_start + (p - chunk.begin));
    }
  }
  // The step's index vectors cross to the device in one copy (from pinned memory on CUDA, without
  // waiting), each then a view of it.
  const std::vector<const std::vector<int64_t>*> parts = {&ids, &positions, &slots, &logits_rows,
                                                          &image_rows};
  size_t total = 0;
  for (const auto* v : parts) total += v->size();
  at::Tensor host =
      at::empty({static_cast<int64_t>(total)},
                at::TensorOptions().dtype(at::kLong).pinned_memory(m.device.is_cuda()));
  int64_t* out = host.data_ptr<int64_t>();
  for (const auto* v : parts) out = std::copy(v->begin(), v->end(), out);
  const at::Tensor packed = m.device.is_cuda() ? host.to(m.device, /*non_blocking=*/true) : host;
  int64_t offset = 0;
  const auto next = [&](const std::vector<int64_t>& v) {
    at::Tensor view = packed.slice(0, offset, offset + static_cast<int64_t>(v.size()));
    offset += static_cast<int64_t>(v.size());
    return view;
  };
  batch.input_ids = next(ids);
  batch.positions = next(positions);
  batch.slot_mapping = next(slots);
  batch.logits_rows = next(logits_rows);
  if (!image_rows.empty()) {
    batch.image_rows = next(image_rows);
    batch.image_embeds = at::cat(image_parts, 0);
  }
  return m.language->forward(batch, m.cache);
}

at::Tensor ModelRunner::forward_decode_graph(const StepPlan& plan) {
  std::optional<DecodeRows> rows = graph_decode_rows(plan, impl_->block_size);
  return rows ? impl_->decode_graphs->run(std::move(*rows)) : at::Tensor();
}

StepOutput ModelRunner::run(const StepPlan& plan) {
  if (step_fault_) {
    std::vector<std::string> ids;
    for (const ScheduledChunk& c : plan.chunks) ids.push_back(Request::of(c.seq).stream->request_id());
    if (step_fault_(ids)) throw std::runtime_error("injected step fault");
  }
  encode_images(plan);
  at::Tensor logits = forward(plan);

  std::vector<SamplingRow> rows;
  bool want_logits = false;
  for (const ScheduledChunk& c : plan.chunks) {
    if (!c.samples) continue;
    Request& request = Request::of(c.seq);
    rows.push_back({&c.seq->params, c.seq->tokens, c.seq->prompt_len, &request.rng});
    want_logits = want_logits || request.return_logits;
  }
  StepOutput out;
  out.sampled = sample_tokens(logits, rows);
  if (want_logits) out.logits = logits.to(at::kCPU, at::kFloat).contiguous();
  return out;
}

}  // namespace dsocr::engine

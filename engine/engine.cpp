// The engine thread, request preparation and the model runner (torch side of engine.h).
#include "engine/engine.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <list>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>

#include "common/check.h"
#include "common/logging.h"
#include "common/memory.h"
#include "engine/cpu_kernels.h"
#include "engine/device.h"
#include "engine/forward_batch.h"
#include "engine/kv_cache.h"
#include "engine/language_model.h"
#include "engine/sampler.h"
#include "tokenizer/ocr_prompt.h"
#include "tokenizer/tokenizer.h"
#include "vision/pixel_values.h"
#include "vision/vision_model.h"
#include "vision/vision_workers.h"
#include "weights/cpu_allocator.h"
#include "weights/loader.h"
#include "weights/model_config.h"
#include "weights/safetensors.h"

namespace dsocr::engine {

std::string_view engine_state_name(EngineState state) {
  switch (state) {
    case EngineState::kLoading:
      return "loading";
    case EngineState::kReady:
      return "ready";
    case EngineState::kDraining:
      return "draining";
    case EngineState::kUnhealthy:
      return "unhealthy";
    case EngineState::kStopped:
      return "stopped";
  }
  return "unknown";
}

namespace {

using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// A request's event queue between the engine thread (producer) and its reader.
class StreamImpl : public RequestStream {
 public:
  StreamImpl(std::string id, std::function<void(uint64_t)> on_cancel, uint64_t seq_id)
      : id_(std::move(id)), on_cancel_(std::move(on_cancel)), seq_id_(seq_id) {}

  std::optional<StreamEvent> next(std::chrono::milliseconds timeout) override {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, timeout,
                      [&] { return !events_.empty() || (done_ && events_.empty()); }))
      return std::nullopt;
    if (events_.empty()) return std::nullopt;
    StreamEvent e = std::move(events_.front());
    events_.pop_front();
    return e;
  }
  void cancel() override {
    {
      std::lock_guard lock(mu_);
      if (done_ || cancelled_) return;
      cancelled_ = true;
    }
    on_cancel_(seq_id_);
  }
  const std::string& request_id() const override { return id_; }

  void push(StreamEvent e) {
    {
      std::lock_guard lock(mu_);
      if (done_) return;
      done_ = e.finished;
      events_.push_back(std::move(e));
    }
    cv_.notify_all();
  }
  bool done() const {
    std::lock_guard lock(mu_);
    return done_;
  }

 private:
  std::string id_;
  std::function<void(uint64_t)> on_cancel_;
  uint64_t seq_id_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<StreamEvent> events_;
  bool done_ = false, cancelled_ = false;
};

// A request after preparation, on its way to the engine thread.
struct PreparedRequest {
  uint64_t seq_id;
  std::shared_ptr<StreamImpl> stream;
  GenerateRequest request;
  tokenizer::OcrPrompt prompt;
  std::vector<vision::PreprocessedImage> images;
  Clock::time_point submitted, prepared;
};

// Engine-thread bookkeeping of a live request.
struct LiveRequest {
  std::shared_ptr<StreamImpl> stream;
  std::vector<vision::PreprocessedImage> images;
  std::vector<at::Tensor> embeddings;  // per image, defined while needed
  std::mt19937_64 rng;
  Clock::time_point submitted, prepared, first_scheduled, first_token;
  bool scheduled = false, produced = false, return_logits = false;
  int64_t image_tokens = 0;
  double encode_ms = 0;
};

class EngineImpl : public Engine {
 public:
  explicit EngineImpl(const EngineOptions& options) : options_(options) {}
  ~EngineImpl() override { stop(); }

  Status init();

  StatusOr<std::shared_ptr<RequestStream>> submit(GenerateRequest request) override;
  EngineState state() const override { return state_.load(); }
  EngineStats stats() const override;
  void drain(std::chrono::milliseconds timeout) override;
  int64_t max_model_len() const override { return options_.scheduler.max_model_len; }
  std::string detokenize(const std::vector<int32_t>& ids) const override {
    return tokenizer_->decode(ids, false);
  }
  std::vector<int32_t> tokenize(const std::string& text) const override {
    return tokenizer_->encode(text, false);
  }

 private:
  void prepare(uint64_t seq_id, std::shared_ptr<StreamImpl> stream, GenerateRequest request,
               Clock::time_point submitted);
  void fail(const std::shared_ptr<StreamImpl>& stream, Status status);
  void request_cancel(uint64_t seq_id);
  void loop();
  void step();
  void admit(PreparedRequest prepared);
  void encode_images(const StepPlan& plan);
  at::Tensor run_model(const StepPlan& plan);
  void finish(Sequence* seq);
  void stop();
  StatusOr<int64_t> size_kv_cache();

  EngineOptions options_;
  std::string device_name_;
  at::Device device_{at::kCPU};
  at::ScalarType dtype_ = at::kFloat;
  weights::ModelConfig config_;
  std::shared_ptr<const tokenizer::Tokenizer> tokenizer_;
  std::optional<tokenizer::OcrPromptBuilder> prompt_builder_;
  vision::VisionModel vision_{nullptr};
  LanguageModel language_{nullptr};
  KvCache cache_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<vision::VisionWorkers> workers_;
  std::atomic<EngineState> state_{EngineState::kLoading};

  // Shared with other threads (mu_).
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<PreparedRequest> inbox_;
  std::vector<uint64_t> cancels_;
  bool stopping_ = false;
  std::atomic<uint64_t> next_seq_id_{1};
  std::atomic<int64_t> preparing_{0};
  EngineStats counters_;       // guarded by mu_ (copied into stats())
  SchedulerStats last_sched_;  // guarded by mu_

  // Engine thread only.
  std::unordered_map<uint64_t, LiveRequest> live_;
  std::list<std::pair<uint64_t, at::Tensor>> image_cache_;  // content hash -> embeddings (LRU)
  std::thread thread_;
  std::shared_ptr<spdlog::logger> logger_ = log::get("engine");
};

Status EngineImpl::init() {
  DeviceInfo info = probe_devices();
  DSOCR_ASSIGN_OR_RETURN(device_name_, resolve_device(options_.device, info));
  device_ = at::Device(device_name_);
  if (options_.dtype == "auto") {
    dtype_ = device_.is_cuda() ? at::kBFloat16 : at::kFloat;
  } else {
    DSOCR_ASSIGN_OR_RETURN(dtype_, weights::parse_compute_dtype(options_.dtype));
  }

  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int threads = options_.torch_threads > 0
                    ? options_.torch_threads
                    : std::max(1, cores - static_cast<int>(options_.vision_threads) + 1);
  at::set_num_threads(std::min(threads, cores));
  if (!device_.is_cuda()) {
    const int kernel_threads = cpu::parallel_threads();
    if (kernel_threads < at::get_num_threads())
      logger_->warn("CPU kernels use {} of {} threads: cpu_kernels.cpp was built without OpenMP",
                    kernel_threads, at::get_num_threads());
    else
      logger_->info("CPU: {} threads for model steps", at::get_num_threads());
  }

  DSOCR_ASSIGN_OR_RETURN(config_,
                         weights::ModelConfig::from_file(options_.model_dir / "config.json"));
  DSOCR_ASSIGN_OR_RETURN(tokenizer_,
                         tokenizer::Tokenizer::from_file(options_.model_dir / "tokenizer.json"));
  DSOCR_ASSIGN_OR_RETURN(auto builder, tokenizer::OcrPromptBuilder::create(tokenizer_));
  prompt_builder_ = std::move(builder);
  DSOCR_ASSIGN_OR_RETURN(auto state, weights::StateDict::open(options_.model_dir));
  auto started = Clock::now();
  vision_ = vision::VisionModel(config_);
  DSOCR_RETURN_IF_ERROR(vision_->load(state, dtype_, device_).with_context("vision weights"));
  language_ = LanguageModel(config_.language);
  DSOCR_RETURN_IF_ERROR(language_->load(state, dtype_, device_).with_context("language weights"));
  logger_->info("model {} loaded on {} ({}) in {:.1f} s", options_.model_dir.string(), device_name_,
                dtype_ == at::kFloat ? "float32" : "bfloat16",
                ms_between(started, Clock::now()) / 1000);

  options_.scheduler.eos_token_id = static_cast<int32_t>(config_.language.eos_token_id);
  options_.scheduler.max_model_len =
      std::min(options_.scheduler.max_model_len, config_.language.max_position_embeddings);
  DSOCR_ASSIGN_OR_RETURN(int64_t blocks, size_kv_cache());
  const auto& lc = config_.language;
  cache_ = KvCache::allocate(lc.num_hidden_layers, blocks, options_.block_size,
                             lc.num_key_value_heads, lc.head_dim(), dtype_, device_);
  scheduler_ =
      std::make_unique<Scheduler>(options_.scheduler, static_cast<int>(blocks),
                                  static_cast<int>(options_.block_size), options_.prefix_caching);
  logger_->info(
      "KV cache: {} blocks of {} tokens ({} tokens, {:.2f} GiB)", blocks, options_.block_size,
      blocks * options_.block_size,
      KvCache::bytes_per_block(lc.num_hidden_layers, options_.block_size, lc.num_key_value_heads,
                               lc.head_dim(), at::elementSize(dtype_)) *
          blocks / double(1ll << 30));
  vision::VisionWorkersOptions wo;
  wo.threads = options_.vision_threads;
  wo.queue_capacity = options_.max_queued_requests;
  workers_ = std::make_unique<vision::VisionWorkers>(wo);
  reuse_heap_for_large_allocations();  // loading is over: common/memory.h
  state_ = EngineState::kReady;
  thread_ = std::thread([this] { loop(); });
  return Status();
}

StatusOr<int64_t> EngineImpl::size_kv_cache() {
  const auto& lc = config_.language;
  const int64_t per_block =
      KvCache::bytes_per_block(lc.num_hidden_layers, options_.block_size, lc.num_key_value_heads,
                               lc.head_dim(), at::elementSize(dtype_));
  const int64_t needed =
      (options_.scheduler.max_model_len + options_.block_size - 1) / options_.block_size;
  if (options_.num_kv_blocks > 0) {
    if (options_.num_kv_blocks < needed)
      logger_->warn("--num-kv-blocks {} holds fewer than one maximal request ({} blocks)",
                    options_.num_kv_blocks, needed);
    return options_.num_kv_blocks;
  }
  // Peak activations: one maximal step through a throwaway cache, then measure what is left.
  {
    KvCache probe = KvCache::allocate(lc.num_hidden_layers, needed, options_.block_size,
                                      lc.num_key_value_heads, lc.head_dim(), dtype_, device_);
    const int64_t t =
        std::min(options_.scheduler.max_num_batched_tokens, needed * options_.block_size);
    ForwardBatch batch;
    auto opts = at::TensorOptions().dtype(at::kLong).device(device_);
    batch.input_ids = at::zeros({t}, opts);
    batch.positions = at::arange(t, opts);
    batch.slot_mapping = at::arange(t, opts);
    SequenceSlice seq{0, t, t, {}};
    for (int64_t b = 0; b < needed; ++b) seq.block_table.push_back(static_cast<int32_t>(b));
    batch.sequences.push_back(seq);
    batch.logits_rows = at::full({1}, t - 1, opts);
    (void)language_->forward(batch, probe);
  }
  int64_t free_bytes = free_memory_bytes(device_name_);
  int64_t budget =
      static_cast<int64_t>(options_.kv_memory_fraction * static_cast<double>(free_bytes));
  if (!device_.is_cuda()) budget = std::min(budget, options_.max_kv_bytes_cpu);
  int64_t blocks = std::min(budget / per_block, needed * options_.scheduler.max_num_seqs);
  if (blocks < needed) {
    logger_->warn("only {} KV blocks fit in free memory; using the {} one request needs", blocks,
                  needed);
    blocks = needed;
  }
  return blocks;
}

StatusOr<std::shared_ptr<RequestStream>> EngineImpl::submit(GenerateRequest request) {
  if (state_ != EngineState::kReady)
    return Status(StatusCode::kUnavailable,
                  std::string("engine is ") + std::string(engine_state_name(state_.load())));
  DSOCR_RETURN_IF_ERROR(request.sampling.validate());
  const uint64_t seq_id = next_seq_id_++;
  auto stream = std::make_shared<StreamImpl>(
      request.request_id, [this](uint64_t id) { request_cancel(id); }, seq_id);
  const auto submitted = Clock::now();
  ++preparing_;
  bool posted =
      workers_->try_post([this, seq_id, stream, submitted, r = std::move(request)]() mutable {
        prepare(seq_id, stream, std::move(r), submitted);
      });
  if (!posted) {
    --preparing_;
    return resource_exhausted("too many requests are waiting for preparation (" +
                              std::to_string(options_.max_queued_requests) + "); retry later");
  }
  return std::shared_ptr<RequestStream>(stream);
}

void EngineImpl::fail(const std::shared_ptr<StreamImpl>& stream, Status status) {
  StreamEvent e;
  e.finished = true;
  e.finish_reason = FinishReason::kError;
  e.error = std::move(status);
  stream->push(std::move(e));
  std::lock_guard lock(mu_);
  ++counters_.requests_failed;
}

void EngineImpl::prepare(uint64_t seq_id, std::shared_ptr<StreamImpl> stream,
                         GenerateRequest request, Clock::time_point submitted) {
  struct Done {
    std::atomic<int64_t>& n;
    ~Done() { --n; }
  } done{preparing_};
  if (stream->done()) return;
  PreparedRequest p{seq_id, stream, std::move(request), {}, {}, submitted, {}};
  std::vector<int64_t> counts;
  for (size_t i = 0; i < p.request.images.size(); ++i) {
    auto image = vision::decode_and_preprocess(p.request.images[i], {});
    if (!image.ok()) {
      fail(stream, image.status().with_context("image " + std::to_string(i + 1)));
      return;
    }
    counts.push_back(image->plan.image_tokens);
    p.images.push_back(std::move(image).value());
  }
  p.request.images.clear();  // the bytes are no longer needed
  auto text = tokenizer::chat_prompt_text(std::span<const std::string>(&p.request.prompt, 1),
                                          counts.size());
  if (!text.ok()) return fail(stream, text.status());
  auto prompt = prompt_builder_->build(*text, counts);
  if (!prompt.ok()) return fail(stream, prompt.status());
  p.prompt = std::move(prompt).value();
  const int64_t prompt_len = static_cast<int64_t>(p.prompt.ids.size());
  const int64_t limit = options_.scheduler.max_model_len;
  if (prompt_len + std::max<int64_t>(p.request.sampling.max_tokens, 1) > limit) {
    return fail(
        stream,
        Status(StatusCode::kOutOfRange,
               std::string(kContextLengthExceeded) + ": this model's maximum context length is " +
                   std::to_string(limit) + " tokens; the prompt has " + std::to_string(prompt_len) +
                   " tokens (" + std::to_string(p.prompt.num_image_tokens()) +
                   " of them image tokens) and max_tokens is " +
                   std::to_string(p.request.sampling.max_tokens)));
  }
  p.prepared = Clock::now();
  StreamEvent accepted;
  accepted.accepted = true;
  stream->push(std::move(accepted));
  {
    std::lock_guard lock(mu_);
    inbox_.push_back(std::move(p));
  }
  wake_.notify_one();
}

void EngineImpl::request_cancel(uint64_t seq_id) {
  {
    std::lock_guard lock(mu_);
    cancels_.push_back(seq_id);
  }
  wake_.notify_one();
}

void EngineImpl::admit(PreparedRequest p) {
  auto seq = std::make_unique<Sequence>();
  seq->id = p.seq_id;
  seq->tokens = p.prompt.ids;
  seq->prompt_len = static_cast<int64_t>(seq->tokens.size());
  seq->params = p.request.sampling;
  const int64_t max_new = seq->params.max_tokens > 0
                              ? seq->params.max_tokens
                              : options_.scheduler.max_model_len - seq->prompt_len;
  seq->max_total_tokens = std::min(options_.scheduler.max_model_len, seq->prompt_len + max_new);
  LiveRequest live;
  live.stream = p.stream;
  live.return_logits = p.request.return_logits;
  for (size_t i = 0; i < p.prompt.image_spans.size(); ++i) {
    const auto& span = p.prompt.image_spans[i];
    seq->images.push_back({static_cast<int64_t>(span.offset), static_cast<int64_t>(span.length),
                           p.images[i].content_hash, false});
    live.image_tokens += static_cast<int64_t>(span.length);
  }
  live.images = std::move(p.images);
  live.embeddings.resize(live.images.size());
  live.rng.seed(seq->params.seed ? *seq->params.seed : std::random_device{}());
  live.submitted = p.submitted;
  live.prepared = p.prepared;
  live_.emplace(seq->id, std::move(live));
  scheduler_->add(std::move(seq));
}

void EngineImpl::encode_images(const StepPlan& plan) {
  if (plan.images.empty()) return;
  std::vector<const vision::PreprocessedImage*> batch;
  std::vector<std::pair<LiveRequest*, int>> targets;
  for (const ImageToEncode& e : plan.images) {
    LiveRequest& live = live_.at(e.seq->id);
    const auto& image = live.images[e.image_index];
    auto hit = std::find_if(image_cache_.begin(), image_cache_.end(),
                            [&](const auto& entry) { return entry.first == image.content_hash; });
    if (hit != image_cache_.end()) {
      live.embeddings[e.image_index] = hit->second;
      image_cache_.splice(image_cache_.begin(), image_cache_, hit);
      std::lock_guard lock(mu_);
      ++counters_.image_cache_hits;
      continue;
    }
    batch.push_back(&image);
    targets.emplace_back(&live, e.image_index);
  }
  if (batch.empty()) return;
  const auto started = Clock::now();
  vision::PixelBatch pixels = vision::make_pixel_batch(batch, dtype_, device_);
  std::vector<at::Tensor> blocks = vision_->encode(pixels);
  // On CUDA the kernels are queued, not finished; waiting here makes the time the encoder's.
  if (device_.is_cuda()) torch::cuda::synchronize(device_.index());
  const double elapsed_ms = ms_between(started, Clock::now());
  for (size_t i = 0; i < blocks.size(); ++i) {
    targets[i].first->embeddings[targets[i].second] = blocks[i];
    image_cache_.emplace_front(batch[i]->content_hash, blocks[i]);
  }
  // A request waits for the whole batch, so each one in it is charged the batch's time (once).
  std::set<LiveRequest*> charged;
  for (auto& target : targets)
    if (charged.insert(target.first).second) target.first->encode_ms += elapsed_ms;
  constexpr size_t kImageCacheEntries = 16;
  while (image_cache_.size() > kImageCacheEntries) image_cache_.pop_back();
  std::lock_guard lock(mu_);
  counters_.images_encoded += blocks.size();
  counters_.vision_encode_seconds += elapsed_ms / 1000.0;
}

at::Tensor EngineImpl::run_model(const StepPlan& plan) {
  std::vector<int64_t> ids, positions, slots, logits_rows, image_rows;
  std::vector<at::Tensor> image_parts;
  ForwardBatch batch;
  const int64_t bs = options_.block_size;
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
    const LiveRequest& live = live_.at(seq.id);
    for (size_t i = 0; i < seq.images.size(); ++i) {
      const SequenceImage& img = seq.images[i];
      const int64_t lo = std::max(chunk.begin, img.offset);
      const int64_t hi = std::min(chunk.begin + chunk.num_tokens, img.offset + img.length);
      if (lo >= hi) continue;
      DSOCR_CHECK(live.embeddings[i].defined())
          << "image " << i << " of request " << seq.id << " not encoded";
      image_parts.push_back(live.embeddings[i].slice(0, lo - img.offset, hi - img.offset));
      for (int64_t p = lo; p < hi; ++p) image_rows.push_back(q_start + (p - chunk.begin));
    }
  }
  auto to_device = [&](const std::vector<int64_t>& v) {
    return at::tensor(v, at::kLong).to(device_);
  };
  batch.input_ids = to_device(ids);
  batch.positions = to_device(positions);
  batch.slot_mapping = to_device(slots);
  batch.logits_rows = to_device(logits_rows);
  if (!image_rows.empty()) {
    batch.image_rows = to_device(image_rows);
    batch.image_embeds = at::cat(image_parts, 0);
  }
  return language_->forward(batch, cache_);
}

void EngineImpl::finish(Sequence* seq) {
  // The final event is built first and sent last, so that a client holding it reads engine
  // totals (stats()) that already count its request.
  auto it = live_.find(seq->id);
  std::shared_ptr<StreamImpl> stream;
  StreamEvent e;
  if (it != live_.end()) {
    LiveRequest& live = it->second;
    const auto now = Clock::now();
    e.finished = true;
    e.finish_reason = seq->finish_reason;
    e.usage.prompt_tokens = seq->prompt_len;
    e.usage.image_tokens = live.image_tokens;
    e.usage.cached_tokens = seq->num_cached_tokens;
    e.usage.completion_tokens = seq->output_len();
    e.timings.prepare_ms = ms_between(live.submitted, live.prepared);
    e.timings.queue_ms = live.scheduled ? ms_between(live.prepared, live.first_scheduled) : 0;
    e.timings.ttft_ms = live.produced ? ms_between(live.submitted, live.first_token) : 0;
    e.timings.total_ms = ms_between(live.submitted, now);
    e.timings.encode_ms = live.encode_ms;
    e.prompt_ids.assign(seq->tokens.begin(), seq->tokens.begin() + seq->prompt_len);
    stream = std::move(live.stream);
    live_.erase(it);
  }
  {
    std::lock_guard lock(mu_);
    counters_.prompt_tokens += static_cast<uint64_t>(seq->prompt_len);
    counters_.image_tokens += static_cast<uint64_t>(e.usage.image_tokens);
    counters_.cached_tokens += static_cast<uint64_t>(seq->num_cached_tokens);
    counters_.generated_tokens += static_cast<uint64_t>(seq->output_len());
    if (seq->finish_reason == FinishReason::kCancelled)
      ++counters_.requests_cancelled;
    else
      ++counters_.requests_finished;
    if (seq->finish_reason == FinishReason::kLoop) ++counters_.loops_detected;
  }
  scheduler_->release(seq->id);
  if (stream) stream->push(std::move(e));
}

void EngineImpl::step() {
  StepPlan plan = scheduler_->schedule();
  for (uint64_t id : plan.preempted) {
    auto it = live_.find(id);
    if (it != live_.end())
      for (auto& e : it->second.embeddings) e = at::Tensor();
  }
  if (plan.empty()) {
    // Nothing runs and the next request still does not fit: this cache can never serve it.
    Sequence* head = scheduler_->next_waiting();
    if (scheduler_->stats().running == 0 && head != nullptr) {
      const uint64_t id = head->id;
      scheduler_->abort(id);
      fail(live_.at(id).stream,
           resource_exhausted("the request needs more KV cache than the engine has"));
      live_.erase(id);
      scheduler_->release(id);
    }
    return;
  }
  const auto now = Clock::now();
  for (const ScheduledChunk& c : plan.chunks) {
    LiveRequest& live = live_.at(c.seq->id);
    if (!live.scheduled) {
      live.scheduled = true;
      live.first_scheduled = now;
    }
  }
  encode_images(plan);
  at::Tensor logits = run_model(plan);

  std::vector<SamplingRow> rows;
  for (const ScheduledChunk& c : plan.chunks)
    if (c.samples)
      rows.push_back({&c.seq->params, c.seq->tokens, c.seq->prompt_len, &live_.at(c.seq->id).rng});
  std::vector<int32_t> sampled = sample_tokens(logits, rows);
  std::vector<Sequence*> finished = scheduler_->update(plan, sampled);

  const auto produced_at = Clock::now();
  at::Tensor cpu_logits;
  size_t k = 0;
  for (const ScheduledChunk& c : plan.chunks) {
    if (!c.samples) continue;
    const int64_t row = static_cast<int64_t>(k);
    const int32_t token = sampled[k++];
    auto it = live_.find(c.seq->id);
    if (it == live_.end()) continue;
    LiveRequest& live = it->second;
    if (!live.produced) {
      live.produced = true;
      live.first_token = produced_at;
    }
    StreamEvent e;
    e.token_ids.push_back(token);
    if (live.return_logits) {
      if (!cpu_logits.defined()) cpu_logits = logits.to(at::kCPU).contiguous();
      const float* begin = cpu_logits.data_ptr<float>() + row * cpu_logits.size(1);
      e.logits.assign(begin, begin + cpu_logits.size(1));
    }
    live.stream->push(std::move(e));
    // Embeddings are no longer needed once their span is in the cache.
    for (size_t i = 0; i < c.seq->images.size(); ++i)
      if (c.seq->num_computed >= c.seq->images[i].offset + c.seq->images[i].length)
        live.embeddings[i] = at::Tensor();
  }
  for (Sequence* seq : finished) finish(seq);
  std::lock_guard lock(mu_);
  ++counters_.steps;
  last_sched_ = scheduler_->stats();
}

void EngineImpl::loop() {
  log::ScopedRequestId no_request("");
  while (true) {
    std::deque<PreparedRequest> incoming;
    std::vector<uint64_t> cancels;
    {
      std::unique_lock lock(mu_);
      wake_.wait(lock, [&] {
        return stopping_ || !inbox_.empty() || !cancels_.empty() || scheduler_->has_work();
      });
      if (stopping_) break;
      incoming.swap(inbox_);
      cancels.swap(cancels_);
    }
    for (auto& p : incoming) admit(std::move(p));
    for (uint64_t id : cancels) {
      if (scheduler_->abort(id)) finish(scheduler_->find(id));
    }
    if (!scheduler_->has_work()) {
      std::lock_guard lock(mu_);
      last_sched_ = scheduler_->stats();
      continue;
    }
    try {
      step();
    } catch (const std::exception& e) {
      logger_->error("engine step failed: {}", e.what());
      state_ = EngineState::kUnhealthy;
      for (auto& [id, live] : live_) {
        scheduler_->abort(id);
        fail(live.stream,
             Status(StatusCode::kInternal, std::string("engine step failed: ") + e.what()));
        scheduler_->release(id);
      }
      live_.clear();
    }
  }
  // Stopped: every request still here is cancelled.
  for (auto& [id, live] : live_) {
    StreamEvent e;
    e.finished = true;
    e.finish_reason = FinishReason::kCancelled;
    e.error = Status(StatusCode::kUnavailable, "the server is shutting down");
    live.stream->push(std::move(e));
  }
  live_.clear();
}

EngineStats EngineImpl::stats() const {
  std::lock_guard lock(mu_);
  EngineStats s = counters_;
  s.state = state_.load();
  s.scheduler = last_sched_;
  s.kv_blocks = cache_.num_blocks;
  s.block_size = options_.block_size;
  s.queued_for_preparation = preparing_.load();
  return s;
}

void EngineImpl::drain(std::chrono::milliseconds timeout) {
  if (state_ == EngineState::kReady || state_ == EngineState::kUnhealthy)
    state_ = EngineState::kDraining;
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    {
      std::lock_guard lock(mu_);
      if (inbox_.empty() && preparing_ == 0 && last_sched_.running == 0 && last_sched_.waiting == 0)
        break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  stop();
}

void EngineImpl::stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  state_ = EngineState::kStopped;
  if (!device_.is_cuda()) {
    const weights::CpuAllocatorStats a = weights::cpu_allocator_stats();
    logger_->info("CPU tensor memory: {} large allocations reused, {} mapped anew, {:.2f} GiB held",
                  a.hits, a.misses, a.mapped_bytes / double(1ll << 30));
  }
}

}  // namespace

StatusOr<std::unique_ptr<Engine>> Engine::create(const EngineOptions& options) {
  use_mmap_for_large_allocations();
  weights::install_caching_cpu_allocator();
  auto engine = std::make_unique<EngineImpl>(options);
  DSOCR_RETURN_IF_ERROR(engine->init());
  return std::unique_ptr<Engine>(std::move(engine));
}

}  // namespace dsocr::engine

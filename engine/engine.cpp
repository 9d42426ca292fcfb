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
#include "vision/preprocess.h"
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

// A request's event queue between the threads that produce its events and its reader. Whichever
// thread ends the request first (the engine thread, a preparation worker, a cancel, drain) claims
// the final event (claim_final()) and then sends it; a claimed stream takes no other event, so the
// final event is the last one and comes exactly once.
class StreamImpl : public RequestStream {
 public:
  StreamImpl(std::string id, std::function<void(uint64_t)> on_cancel, uint64_t seq_id)
      : id_(std::move(id)), on_cancel_(std::move(on_cancel)), seq_id_(seq_id) {}

  std::optional<StreamEvent> next(std::chrono::milliseconds timeout) override {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return !events_.empty() || done_; }))
      return std::nullopt;
    if (events_.empty()) return std::nullopt;
    StreamEvent e = std::move(events_.front());
    events_.pop_front();
    return e;
  }
  void cancel() override {
    {
      std::lock_guard lock(mu_);
      if (claimed_ || cancelled_) return;
      cancelled_ = true;
    }
    on_cancel_(seq_id_);
  }
  const std::string& request_id() const override { return id_; }

  // An "accepted" or token event; dropped once the request has ended.
  void push(StreamEvent e) {
    {
      std::lock_guard lock(mu_);
      if (claimed_) return;
      events_.push_back(std::move(e));
    }
    cv_.notify_all();
  }
  // True for exactly one caller, who must then push_final().
  bool claim_final() {
    std::lock_guard lock(mu_);
    if (claimed_) return false;
    claimed_ = true;
    return true;
  }
  void push_final(StreamEvent e) {
    {
      std::lock_guard lock(mu_);
      DSOCR_CHECK(claimed_ && !done_) << "final event of " << id_ << " not claimed or sent twice";
      done_ = true;
      events_.push_back(std::move(e));
    }
    cv_.notify_all();
  }
  bool cancelled() const {
    std::lock_guard lock(mu_);
    return cancelled_;
  }
  bool ended() const {
    std::lock_guard lock(mu_);
    return claimed_;
  }

 private:
  std::string id_;
  std::function<void(uint64_t)> on_cancel_;
  uint64_t seq_id_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<StreamEvent> events_;
  bool cancelled_ = false;
  bool claimed_ = false;  // its final event is on its way: no other event is taken
  bool done_ = false;     // its final event is in events_
};

// One request from submit() to its final event, shared by every thread it passes through. The
// engine keeps the open ones (EngineImpl::open_) so that drain() can end them wherever they are.
struct Ticket {
  Ticket(uint64_t id, std::shared_ptr<StreamImpl> s, GenerateRequest r, Clock::time_point t)
      : seq_id(id), stream(std::move(s)), submitted(t), queued(std::move(r)) {}

  // The request, until a preparation worker takes it. A cancel or drain before then drops it
  // (its image bytes with it) and the worker's task finds nothing to do.
  std::optional<GenerateRequest> take() {
    std::lock_guard lock(mu);
    std::optional<GenerateRequest> r = std::move(queued);
    queued.reset();
    return r;
  }

  const uint64_t seq_id;
  const std::shared_ptr<StreamImpl> stream;
  const Clock::time_point submitted;
  // Bytes held against max_pending_image_bytes; only ever lowered after submit (uncharge()).
  std::atomic<int64_t> charged_bytes{0};

 private:
  std::mutex mu;
  std::optional<GenerateRequest> queued;  // guarded by mu
};

// A request after preparation, on its way to the engine thread.
struct PreparedRequest {
  std::shared_ptr<Ticket> ticket;
  GenerateRequest request;  // without its image bytes
  tokenizer::OcrPrompt prompt;
  std::vector<vision::PreprocessedImage> images;
  Clock::time_point prepared;
};

// Engine-thread bookkeeping of a live request.
struct LiveRequest {
  std::shared_ptr<Ticket> ticket;
  uint64_t cache_salt = 0;                        // cache_salt_hash() of its salt
  std::vector<vision::PreprocessedImage> images;  // pixels, until encoded
  std::vector<int64_t> pixel_bytes;               // of each image still charged to the budget
  std::vector<at::Tensor> embeddings;             // per image, on the device while needed
  // Per image once encoded, on the host: a recompute after preemption needs the embeddings
  // again, and the pixels are gone by then (smaller than the pixels, and off the GPU).
  std::vector<at::Tensor> encoded;
  std::mt19937_64 rng;
  Clock::time_point prepared, first_scheduled, first_token;
  bool scheduled = false, produced = false, return_logits = false;
  int64_t image_tokens = 0;
  double encode_ms = 0;
};

// An image encoding kept for reuse, per cache salt: a salted request must not learn (from its
// encode time) that another client sent the same page.
struct CachedEncoding {
  uint64_t cache_salt;
  uint64_t content_hash;
  at::Tensor embeddings;
};

int64_t pixel_bytes(const vision::PreprocessedImage& image) {
  int64_t n = static_cast<int64_t>(image.global_view.pixels.size());
  for (const auto& tile : image.tiles) n += static_cast<int64_t>(tile.pixels.size());
  return n;
}

StreamEvent cancelled_event() {
  StreamEvent e;
  e.finished = true;
  e.finish_reason = FinishReason::kCancelled;
  return e;
}

StreamEvent shutdown_event() {
  StreamEvent e = cancelled_event();
  e.error = Status(StatusCode::kUnavailable, "the server is shutting down");
  return e;
}

StreamEvent error_event(Status status) {
  StreamEvent e;
  e.finished = true;
  e.finish_reason = FinishReason::kError;
  e.error = std::move(status);
  return e;
}

class EngineImpl : public Engine {
 public:
  explicit EngineImpl(const EngineOptions& options) : options_(options) {}
  ~EngineImpl() override {
    stop();
    if (thread_.joinable()) thread_.join();  // the step drain() did not wait for
    // Before the members its tasks use go: queued tasks find their requests ended and return.
    workers_.reset();
  }

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
  void prepare(const std::shared_ptr<Ticket>& ticket);
  // Ends a request with `final` unless it has ended already (threads race to end it: the engine
  // thread, a worker, a cancel, drain): counts it, returns its budget and forgets it before the
  // event is visible, so that a client holding its final event reads stats() that include it.
  // `seq` adds its token counts; `publish_scheduler` (engine thread only) publishes the
  // scheduler's stats with it. False when it had already ended.
  bool end_request(std::shared_ptr<Ticket> ticket, StreamEvent final, const Sequence* seq = nullptr,
                   bool publish_scheduler = false);
  bool try_charge(int64_t bytes);
  void uncharge(Ticket& ticket, int64_t bytes);
  void request_cancel(uint64_t seq_id);
  void loop();
  void step();
  void admit(PreparedRequest prepared);
  void encode_images(const StepPlan& plan);
  void keep_encoding(LiveRequest& live, int image_index, const at::Tensor& embeddings);
  at::Tensor run_model(const StepPlan& plan);
  void finish(Sequence* seq);
  void release_idle_memory();
  // Ends every open request (shutdown_event()), stops the engine thread and waits up to `grace`
  // for it to leave its step; the destructor waits for the rest.
  void stop(std::chrono::milliseconds grace = std::chrono::hours(1));
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
  std::condition_variable all_ended_;  // open_ became empty, or the engine thread left its loop
  std::deque<PreparedRequest> inbox_;
  std::vector<uint64_t> cancels_;
  // Every request without its final event yet, wherever it is.
  std::unordered_map<uint64_t, std::shared_ptr<Ticket>> open_;
  bool stopping_ = false;
  bool loop_exited_ = false;
  std::atomic<uint64_t> next_seq_id_{1};
  std::atomic<int64_t> preparing_{0};
  std::atomic<int64_t> pending_bytes_{0};  // sum of the open tickets' charged_bytes
  EngineStats counters_;                   // guarded by mu_ (copied into stats())
  SchedulerStats last_sched_;              // guarded by mu_

  // Engine thread only.
  std::unordered_map<uint64_t, LiveRequest> live_;
  std::list<CachedEncoding> image_cache_;  // most recently used first
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
  int64_t charge = 0;
  for (const std::string& image : request.images) charge += pending_image_bytes(image.size());
  if (!try_charge(charge))
    return resource_exhausted("too much image data is waiting to be processed (" +
                              std::to_string(pending_bytes_.load() >> 20) + " of " +
                              std::to_string(options_.max_pending_image_bytes >> 20) +
                              " MiB pending, this request needs " + std::to_string(charge >> 20) +
                              " MiB); retry later");
  const uint64_t seq_id = next_seq_id_++;
  auto stream = std::make_shared<StreamImpl>(
      request.request_id, [this](uint64_t id) { request_cancel(id); }, seq_id);
  auto ticket = std::make_shared<Ticket>(seq_id, stream, std::move(request), Clock::now());
  ticket->charged_bytes = charge;
  {
    std::lock_guard lock(mu_);
    if (stopping_) {
      pending_bytes_ -= charge;
      return Status(StatusCode::kUnavailable, "engine is stopping");
    }
    open_.emplace(seq_id, ticket);
  }
  ++preparing_;
  if (!workers_->try_post([this, ticket] { prepare(ticket); })) {
    --preparing_;
    {
      std::lock_guard lock(mu_);
      open_.erase(seq_id);
      pending_bytes_ -= ticket->charged_bytes.exchange(0);
      if (open_.empty()) all_ended_.notify_all();
    }
    return resource_exhausted("too many requests are waiting for preparation (" +
                              std::to_string(options_.max_queued_requests) + "); retry later");
  }
  return std::shared_ptr<RequestStream>(stream);
}

bool EngineImpl::try_charge(int64_t bytes) {
  const int64_t limit = options_.max_pending_image_bytes;
  int64_t pending = pending_bytes_.load();
  do {
    if (bytes > 0 && limit > 0 && pending + bytes > limit) return false;
  } while (!pending_bytes_.compare_exchange_weak(pending, pending + bytes));
  return true;
}

void EngineImpl::uncharge(Ticket& ticket, int64_t bytes) {
  int64_t held = ticket.charged_bytes.load(), given = 0;
  do {
    given = std::clamp<int64_t>(bytes, 0, held);
  } while (!ticket.charged_bytes.compare_exchange_weak(held, held - given));
  pending_bytes_ -= given;
}

bool EngineImpl::end_request(std::shared_ptr<Ticket> ticket, StreamEvent final, const Sequence* seq,
                             bool publish_scheduler) {
  if (!ticket->stream->claim_final()) return false;
  (void)ticket->take();  // image bytes still queued for preparation go now
  {
    std::lock_guard lock(mu_);
    switch (final.finish_reason) {
      case FinishReason::kCancelled:
        ++counters_.requests_cancelled;
        break;
      case FinishReason::kError:
        ++counters_.requests_failed;
        break;
      default:
        ++counters_.requests_finished;
    }
    if (final.finish_reason == FinishReason::kLoop) ++counters_.loops_detected;
    if (seq != nullptr) {
      counters_.prompt_tokens += static_cast<uint64_t>(seq->prompt_len);
      counters_.image_tokens += static_cast<uint64_t>(final.usage.image_tokens);
      counters_.cached_tokens += static_cast<uint64_t>(seq->num_cached_tokens);
      counters_.generated_tokens += static_cast<uint64_t>(seq->output_len());
    }
    // The flake this prevents: a client that read its final event saw KV blocks its request
    // had already freed, because the stats were published after the event.
    if (publish_scheduler) last_sched_ = scheduler_->stats();
    pending_bytes_ -= ticket->charged_bytes.exchange(0);
    open_.erase(ticket->seq_id);
    if (open_.empty()) all_ended_.notify_all();
  }
  ticket->stream->push_final(std::move(final));
  return true;
}

void EngineImpl::prepare(const std::shared_ptr<Ticket>& ticket) {
  struct Done {
    std::atomic<int64_t>& n;
    ~Done() { --n; }
  } done{preparing_};
  std::optional<GenerateRequest> request = ticket->take();
  if (!request) return;  // ended while queued
  StreamImpl& stream = *ticket->stream;
  PreparedRequest p{ticket, std::move(*request), {}, {}, {}};
  std::vector<int64_t> counts;
  int64_t pixels = 0;
  for (size_t i = 0; i < p.request.images.size(); ++i) {
    // Between images: a cancel (or drain) ends the request here, not after all of them.
    if (stream.cancelled()) {
      end_request(ticket, cancelled_event());
      return;
    }
    if (stream.ended()) return;
    auto image = vision::decode_and_preprocess(p.request.images[i], {});
    if (!image.ok()) {
      end_request(ticket,
                  error_event(image.status().with_context("image " + std::to_string(i + 1))));
      return;
    }
    counts.push_back(image->plan.image_tokens);
    pixels += pixel_bytes(*image);
    p.images.push_back(std::move(image).value());
  }
  p.request.images.clear();  // the bytes are no longer needed
  // From the worst case charged at submit down to what the pixels really take.
  uncharge(*ticket, ticket->charged_bytes.load() - pixels);
  auto text = tokenizer::chat_prompt_text(std::span<const std::string>(&p.request.prompt, 1),
                                          counts.size());
  if (!text.ok()) {
    end_request(ticket, error_event(text.status()));
    return;
  }
  auto prompt = prompt_builder_->build(*text, counts);
  if (!prompt.ok()) {
    end_request(ticket, error_event(prompt.status()));
    return;
  }
  p.prompt = std::move(prompt).value();
  const int64_t prompt_len = static_cast<int64_t>(p.prompt.ids.size());
  const int64_t limit = options_.scheduler.max_model_len;
  // Compared without adding: max_tokens may be near INT64_MAX, and the sum would wrap.
  if (std::max<int64_t>(p.request.sampling.max_tokens, 1) > limit - prompt_len) {
    end_request(ticket, error_event(Status(StatusCode::kOutOfRange,
                                           std::string(kContextLengthExceeded) +
                                               ": this model's maximum context length is " +
                                               std::to_string(limit) + " tokens; the prompt has " +
                                               std::to_string(prompt_len) + " tokens (" +
                                               std::to_string(p.prompt.num_image_tokens()) +
                                               " of them image tokens) and max_tokens is " +
                                               std::to_string(p.request.sampling.max_tokens))));
    return;
  }
  if (stream.cancelled()) {
    end_request(ticket, cancelled_event());
    return;
  }
  p.prepared = Clock::now();
  StreamEvent accepted;
  accepted.accepted = true;
  stream.push(std::move(accepted));
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;  // stop() has ended it
    inbox_.push_back(std::move(p));
  }
  wake_.notify_one();
}

void EngineImpl::request_cancel(uint64_t seq_id) {
  std::shared_ptr<Ticket> ticket;
  {
    std::lock_guard lock(mu_);
    auto it = open_.find(seq_id);
    if (it == open_.end()) return;  // ended already
    ticket = it->second;
    cancels_.push_back(seq_id);
  }
  wake_.notify_one();
  // Still queued for preparation: no stage will look at it before its task's turn comes, so it
  // ends here and frees its bytes now. Later stages check the stream's cancelled flag (workers
  // between images, the engine thread at admission) or get the id above (the scheduler).
  if (ticket->take()) end_request(ticket, cancelled_event());
}

void EngineImpl::admit(PreparedRequest p) {
  auto seq = std::make_unique<Sequence>();
  seq->id = p.ticket->seq_id;
  seq->tokens = p.prompt.ids;
  seq->prompt_len = static_cast<int64_t>(seq->tokens.size());
  seq->params = p.request.sampling;
  const int64_t max_new = seq->params.max_tokens > 0
                              ? seq->params.max_tokens
                              : options_.scheduler.max_model_len - seq->prompt_len;
  seq->max_total_tokens =
      seq->prompt_len + std::min(max_new, options_.scheduler.max_model_len - seq->prompt_len);
  seq->cache_salt_hash = cache_salt_hash(p.request.cache_salt);
  LiveRequest live;
  live.ticket = p.ticket;
  live.cache_salt = seq->cache_salt_hash;
  live.return_logits = p.request.return_logits;
  for (size_t i = 0; i < p.prompt.image_spans.size(); ++i) {
    const auto& span = p.prompt.image_spans[i];
    seq->images.push_back({static_cast<int64_t>(span.offset), static_cast<int64_t>(span.length),
                           p.images[i].content_hash, false});
    live.image_tokens += static_cast<int64_t>(span.length);
    live.pixel_bytes.push_back(pixel_bytes(p.images[i]));
  }
  live.images = std::move(p.images);
  live.embeddings.resize(live.images.size());
  live.encoded.resize(live.images.size());
  live.rng.seed(seq->params.seed ? *seq->params.seed : std::random_device{}());
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
    const int i = e.image_index;
    if (live.encoded[i].defined()) {  // again, after a preemption
      live.embeddings[i] = live.encoded[i].to(device_);
      continue;
    }
    const uint64_t content = e.seq->images[i].content_hash;
    auto hit = std::find_if(image_cache_.begin(), image_cache_.end(), [&](const auto& entry) {
      return entry.content_hash == content && entry.cache_salt == live.cache_salt;
    });
    if (hit != image_cache_.end()) {
      live.embeddings[i] = hit->embeddings;
      keep_encoding(live, i, hit->embeddings);
      image_cache_.splice(image_cache_.begin(), image_cache_, hit);
      std::lock_guard lock(mu_);
      ++counters_.image_cache_hits;
      continue;
    }
    batch.push_back(&live.images[i]);
    targets.emplace_back(&live, i);
  }
  if (batch.empty()) return;
  const auto started = Clock::now();
  vision::PixelBatch pixels = vision::make_pixel_batch(batch, dtype_, device_);
  std::vector<at::Tensor> blocks = vision_->encode(pixels);
  // On CUDA the kernels are queued, not finished; waiting here makes the time the encoder's.
  if (device_.is_cuda()) torch::cuda::synchronize(device_.index());
  const double elapsed_ms = ms_between(started, Clock::now());
  pixels = {};
  for (size_t k = 0; k < blocks.size(); ++k) {
    auto [live, i] = targets[k];
    live->embeddings[i] = blocks[k];
    image_cache_.push_front({live->cache_salt, batch[k]->content_hash, blocks[k]});
    keep_encoding(*live, i, blocks[k]);  // frees the pixels batch[k] points to
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

void EngineImpl::keep_encoding(LiveRequest& live, int image_index, const at::Tensor& embeddings) {
  live.encoded[image_index] = device_.is_cuda() ? embeddings.to(at::kCPU) : embeddings;
  live.images[image_index] = vision::PreprocessedImage{};
  uncharge(*live.ticket, std::exchange(live.pixel_bytes[image_index], 0));
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
  auto it = live_.find(seq->id);
  DSOCR_CHECK(it != live_.end()) << "finished request " << seq->id << " is not live";
  LiveRequest& live = it->second;
  const auto now = Clock::now();
  const Clock::time_point submitted = live.ticket->submitted;
  StreamEvent e;
  e.finished = true;
  e.finish_reason = seq->finish_reason;
  e.usage.prompt_tokens = seq->prompt_len;
  e.usage.image_tokens = live.image_tokens;
  e.usage.cached_tokens = seq->num_cached_tokens;
  e.usage.completion_tokens = seq->output_len();
  e.timings.prepare_ms = ms_between(submitted, live.prepared);
  e.timings.queue_ms = live.scheduled ? ms_between(live.prepared, live.first_scheduled) : 0;
  e.timings.ttft_ms = live.produced ? ms_between(submitted, live.first_token) : 0;
  e.timings.total_ms = ms_between(submitted, now);
  e.timings.encode_ms = live.encode_ms;
  e.prompt_ids.assign(seq->tokens.begin(), seq->tokens.begin() + seq->prompt_len);
  std::shared_ptr<Ticket> ticket = std::move(live.ticket);
  live_.erase(it);
  end_request(std::move(ticket), std::move(e), seq, /*publish_scheduler=*/true);
  scheduler_->release(seq->id);
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
      std::shared_ptr<Ticket> ticket = live_.at(id).ticket;
      live_.erase(id);
      scheduler_->release(id);
      end_request(
          std::move(ticket),
          error_event(resource_exhausted("the request needs more KV cache than the engine has")),
          nullptr, /*publish_scheduler=*/true);
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
    live.ticket->stream->push(std::move(e));
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
  const std::chrono::milliseconds idle_release(options_.idle_memory_release_ms);
  auto last_busy = Clock::now();
  bool released = true;  // nothing to hand back since the last release (or start)
  while (true) {
    std::deque<PreparedRequest> incoming;
    std::vector<uint64_t> cancels;
    bool idle = false;
    {
      std::unique_lock lock(mu_);
      auto has_input = [&] {
        return stopping_ || !inbox_.empty() || !cancels_.empty() || scheduler_->has_work();
      };
      if (released || idle_release.count() <= 0)
        wake_.wait(lock, has_input);
      else
        idle = !wake_.wait_until(lock, last_busy + idle_release, has_input);
      if (stopping_) break;
      incoming.swap(inbox_);
      cancels.swap(cancels_);
    }
    if (idle) {
      if (preparing_ == 0) {
        release_idle_memory();
        released = true;
      } else {
        last_busy = Clock::now();  // the workers are busy: not idle yet
      }
      continue;
    }
    released = false;
    // A request cancelled on its way here (after its worker's last look) is never admitted.
    for (auto& p : incoming) {
      if (p.ticket->stream->cancelled())
        end_request(p.ticket, cancelled_event(), nullptr, /*publish_scheduler=*/true);
      else if (!p.ticket->stream->ended())
        admit(std::move(p));
    }
    incoming.clear();  // the pixels of those not admitted
    for (uint64_t id : cancels) {
      if (scheduler_->abort(id)) finish(scheduler_->find(id));
    }
    if (!scheduler_->has_work()) {
      std::lock_guard lock(mu_);
      last_sched_ = scheduler_->stats();
      last_busy = Clock::now();
      continue;
    }
    try {
      step();
    } catch (const std::exception& e) {
      logger_->error("engine step failed: {}", e.what());
      state_ = EngineState::kUnhealthy;
      for (auto& [id, live] : live_) {
        scheduler_->abort(id);
        scheduler_->release(id);
        end_request(live.ticket,
                    error_event(Status(StatusCode::kInternal,
                                       std::string("engine step failed: ") + e.what())),
                    nullptr, /*publish_scheduler=*/true);
      }
      live_.clear();
    }
    last_busy = Clock::now();
  }
  // Stopped: stop() has ended every open request; this only catches up with the bookkeeping.
  for (auto& [id, live] : live_) end_request(live.ticket, shutdown_event());
  live_.clear();
  std::lock_guard lock(mu_);
  inbox_.clear();
  loop_exited_ = true;
  all_ended_.notify_all();
}

void EngineImpl::release_idle_memory() {
  const weights::CpuAllocatorStats before = weights::cpu_allocator_stats();
  weights::release_cached_cpu_memory();
  release_free_heap_memory();
  logger_->debug("idle: returned {:.1f} MiB of cached tensor memory and malloc's free pages",
                 before.cached_bytes / double(1 << 20));
  std::lock_guard lock(mu_);
  ++counters_.idle_memory_releases;
}

EngineStats EngineImpl::stats() const {
  std::lock_guard lock(mu_);
  EngineStats s = counters_;
  s.state = state_.load();
  s.scheduler = last_sched_;
  s.kv_blocks = cache_.num_blocks;
  s.block_size = options_.block_size;
  s.queued_for_preparation = preparing_.load();
  s.pending_image_bytes = pending_bytes_.load();
  return s;
}

void EngineImpl::drain(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  EngineState from = state_.load();
  while ((from == EngineState::kReady || from == EngineState::kUnhealthy) &&
         !state_.compare_exchange_weak(from, EngineState::kDraining)) {
  }
  {
    std::unique_lock lock(mu_);
    all_ended_.wait_until(lock, deadline, [&] { return open_.empty() || stopping_; });
  }
  // A step in progress may take seconds (a batch of pages through the vision encoder on a CPU);
  // its requests have their final events already, so drain does not wait for it.
  stop(std::chrono::milliseconds(100));
}

void EngineImpl::stop(std::chrono::milliseconds grace) {
  std::vector<std::shared_ptr<Ticket>> left;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    for (const auto& [id, ticket] : open_) left.push_back(ticket);
  }
  wake_.notify_all();
  // Ended here, not by the stages holding them: a worker may be inside a long decode and the
  // engine thread inside a step; both see the ended streams and drop them.
  for (auto& ticket : left) end_request(ticket, shutdown_event());
  if (!left.empty()) logger_->info("stopped with {} requests unfinished", left.size());
  bool exited = !thread_.joinable();  // never started: init() failed
  if (!exited) {
    std::unique_lock lock(mu_);
    exited = all_ended_.wait_for(lock, grace, [&] { return loop_exited_; });
  }
  if (exited && thread_.joinable()) thread_.join();
  if (!exited) logger_->info("the engine thread ends its step in the background");
  state_ = EngineState::kStopped;
  if (!device_.is_cuda()) {
    const weights::CpuAllocatorStats a = weights::cpu_allocator_stats();
    logger_->info("CPU tensor memory: {} large allocations reused, {} mapped anew, {:.2f} GiB held",
                  a.hits, a.misses, a.mapped_bytes / double(1ll << 30));
  }
}

}  // namespace

int64_t pending_image_bytes(size_t encoded_bytes) {
  // Preprocessing makes at most kMaxTiles local tiles and one global view, all 8-bit RGB.
  constexpr int64_t kMostPixelBytes =
      (int64_t{vision::kMaxTiles} * vision::kTileSize * vision::kTileSize +
       int64_t{vision::kGlobalViewSize} * vision::kGlobalViewSize) *
      3;
  return static_cast<int64_t>(encoded_bytes) + kMostPixelBytes;
}

StatusOr<std::unique_ptr<Engine>> Engine::create(const EngineOptions& options) {
  use_mmap_for_large_allocations();
  weights::install_caching_cpu_allocator();
  auto engine = std::make_unique<EngineImpl>(options);
  DSOCR_RETURN_IF_ERROR(engine->init());
  return std::unique_ptr<Engine>(std::move(engine));
}

}  // namespace dsocr::engine

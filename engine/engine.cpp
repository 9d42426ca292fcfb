// The engine loop: the thin layer that ties the stages of engine.h together.
//
//   submit() --> RequestPreparer (vision workers) --> inbox (Channel) --> engine thread:
//                 admit into the Scheduler, plan a step, ModelRunner::run() it, hand out tokens.
//
// Every request is one Request record (engine/request.h) from submit() to its final event; the
// engine keeps the open ones in requests_ so that drain() can end them wherever they are.
//
// Error policy of a step (issue #17): an exception from the model runner (the model, the sampler,
// a CUDA error) fails the requests of that step (kStepFailed, counted in step_failures) and the
// engine goes on serving the others: the runner only wrote K/V into those requests' own blocks,
// which their abort frees. An exception from the scheduler's bookkeeping leaves shared state
// (KV block ownership) in doubt: every request then fails and the engine turns kUnhealthy. A
// broken invariant that DSOCR_CHECK catches aborts the process.
#include "engine/engine.h"

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>

#include "common/channel.h"
#include "common/check.h"
#include "common/logging.h"
#include "common/memory.h"
#include "engine/model_runner.h"
#include "engine/request.h"
#include "engine/request_preparer.h"
#include "tokenizer/ocr_prompt.h"
#include "vision/preprocess.h"
#include "weights/cpu_allocator.h"
#include "weights/model_config.h"

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

bool PendingImageBudget::try_charge(int64_t bytes) {
  int64_t used = used_.load();
  do {
    if (bytes > 0 && limit_ > 0 && used + bytes > limit_) return false;
  } while (!used_.compare_exchange_weak(used, used + bytes));
  return true;
}

void PendingImageBudget::uncharge(Request& request, int64_t bytes) {
  int64_t held = request.charged_bytes.load(), given = 0;
  do {
    given = std::clamp<int64_t>(bytes, 0, held);
  } while (!request.charged_bytes.compare_exchange_weak(held, held - given));
  used_ -= given;
}

namespace {

class EngineImpl : public Engine {
 public:
  explicit EngineImpl(const EngineOptions& options)
      : options_(options),
        budget_(options.max_pending_image_bytes),
        inbox_(std::max<size_t>(options.max_queued_requests, 1)) {}
  ~EngineImpl() override {
    stop();
    if (thread_.joinable()) thread_.join();  // the step drain() did not wait for
    // Before the members its tasks use go: queued tasks find their requests ended and return.
    preparer_.reset();
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
  std::shared_ptr<const tokenizer::Tokenizer> tokenizer() const override { return tokenizer_; }

 private:
  // Ends a request with `final` unless it has ended already (threads race to end it: the engine
  // thread, a worker, a cancel, drain): counts it, returns its budget and forgets it before the
  // event is visible, so that a client holding its final event reads stats() that include it.
  // `counted` adds its token counts; `publish_scheduler` (engine thread only) publishes the
  // scheduler's stats with it. False when it had already ended.
  bool end_request(const std::shared_ptr<Request>& request, StreamEvent final,
                   bool counted = false, bool publish_scheduler = false);
  std::shared_ptr<Request> find_open(uint64_t id);
  void on_prepared(std::shared_ptr<Request> request);
  void loop();
  void admit(const std::shared_ptr<Request>& request);
  void end_cancelled();
  void step();
  void fail_step(const StepPlan& plan, const std::string& what);
  void fail_all(const std::string& what);
  void finish(Sequence* seq);
  void release_idle_memory();
  // Ends every open request (shutdown_event()), stops the engine thread and waits up to `grace`
  // for it to leave its step; the destructor waits for the rest.
  void stop(std::chrono::milliseconds grace = std::chrono::hours(1));

  EngineOptions options_;
  weights::ModelConfig config_;
  std::shared_ptr<const tokenizer::Tokenizer> tokenizer_;
  PendingImageBudget budget_;
  std::unique_ptr<ModelRunner> runner_;
  std::unique_ptr<Scheduler> scheduler_;        // engine thread only
  // Engine thread only: keeps alive the records the scheduler points at (it does not own them);
  // pruned of finished ones once per loop turn, after the last use of the turn's pointers.
  std::vector<std::shared_ptr<Request>> admitted_;
  std::unique_ptr<RequestPreparer> preparer_;
  Channel<std::shared_ptr<Request>> inbox_;     // prepared, on their way to the engine thread
  std::atomic<EngineState> state_{EngineState::kLoading};
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> next_id_{1};

  mutable std::mutex mu_;
  std::condition_variable all_ended_;  // requests_ became empty, or the engine thread left
  // Every request without its final event yet, wherever it is.
  std::unordered_map<uint64_t, std::shared_ptr<Request>> requests_;  // guarded by mu_
  bool loop_exited_ = false;                                          // guarded by mu_
  EngineStats counters_;       // guarded by mu_ (copied into stats())
  SchedulerStats last_sched_;  // guarded by mu_

  std::thread thread_;
  std::shared_ptr<spdlog::logger> logger_ = log::get("engine");
};

Status EngineImpl::init() {
  DSOCR_ASSIGN_OR_RETURN(config_,
                         weights::ModelConfig::from_file(options_.model_dir / "config.json"));
  DSOCR_ASSIGN_OR_RETURN(tokenizer_,
                         tokenizer::Tokenizer::from_file(options_.model_dir / "tokenizer.json"));
  DSOCR_ASSIGN_OR_RETURN(auto prompt_builder, tokenizer::OcrPromptBuilder::create(tokenizer_));
  options_.scheduler.eos_token_id = static_cast<int32_t>(config_.language.eos_token_id);
  options_.scheduler.max_model_len =
      std::min(options_.scheduler.max_model_len, config_.language.max_position_embeddings);
  DSOCR_ASSIGN_OR_RETURN(runner_, ModelRunner::load(options_, config_, &budget_));
  scheduler_ = std::make_unique<Scheduler>(options_.scheduler,
                                           static_cast<int>(runner_->num_kv_blocks()),
                                           static_cast<int>(options_.block_size),
                                           options_.prefix_caching);
  RequestPreparer::Options po;
  po.threads = options_.vision_threads;
  po.queue_capacity = options_.max_queued_requests;
  po.max_model_len = options_.scheduler.max_model_len;
  preparer_ = std::make_unique<RequestPreparer>(
      po, std::move(prompt_builder), &budget_,
      RequestPreparer::Callbacks{
          .on_prepared = [this](std::shared_ptr<Request> r) { on_prepared(std::move(r)); },
          .end = [this](const std::shared_ptr<Request>& r,
                        StreamEvent final) { end_request(r, std::move(final)); }});
  reuse_heap_for_large_allocations();  // loading is over: common/memory.h
  state_ = EngineState::kReady;
  thread_ = std::thread([this] { loop(); });
  return Status();
}

StatusOr<std::shared_ptr<RequestStream>> EngineImpl::submit(GenerateRequest request) {
  const EngineState state = state_.load();
  if (state != EngineState::kReady && !(state == EngineState::kDraining && request.later_page))
    return Status(StatusCode::kUnavailable,
                  std::string("engine is ") + std::string(engine_state_name(state_.load())));
  DSOCR_RETURN_IF_ERROR(request.sampling.validate());
  int64_t charge = 0;
  for (const ImageSource& image : request.images) charge += pending_image_bytes(image);
  if (!budget_.try_charge(charge))
    return resource_exhausted("too much image data is waiting to be processed (" +
                              std::to_string(budget_.used() >> 20) + " of " +
                              std::to_string(budget_.limit() >> 20) +
                              " MiB pending, this request needs " + std::to_string(charge >> 20) +
                              " MiB); retry later");
  // Accepted, one per token, final: a request produces no more events than this.
  const int64_t max_tokens = request.sampling.max_tokens > 0
                                 ? std::min(request.sampling.max_tokens, max_model_len())
                                 : max_model_len();
  auto stream = std::make_shared<RequestStream>(request.request_id,
                                                static_cast<size_t>(max_tokens) + 2);
  const uint64_t id = next_id_++;
  auto record = std::make_shared<Request>(id, stream, std::move(request));
  record->charged_bytes = charge;
  {
    std::lock_guard lock(mu_);
    if (stopping_) {
      budget_.release_all(*record);
      return Status(StatusCode::kUnavailable, "engine is stopping");
    }
    requests_.emplace(id, record);
  }
  // Still queued for preparation: no stage will look at it before its task's turn comes, so a
  // cancel ends it here and frees its bytes now. Later stages check the cancelled flag.
  std::weak_ptr<Request> weak = record;
  stream->set_cancel_hook([this, weak] {
    if (auto r = weak.lock(); r && r->take()) end_request(r, cancelled_event());
  });
  if (!preparer_->post(record)) {
    std::lock_guard lock(mu_);
    requests_.erase(id);
    budget_.release_all(*record);
    if (requests_.empty()) all_ended_.notify_all();
    return resource_exhausted("too many requests are waiting for preparation (" +
                              std::to_string(options_.max_queued_requests) + "); retry later");
  }
  return stream;
}

bool EngineImpl::end_request(const std::shared_ptr<Request>& request, StreamEvent final,
                             bool counted, bool publish_scheduler) {
  if (!request->stream->claim_final()) return false;
  (void)request->take();  // image bytes still queued for preparation go now
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
    if (counted) {
      counters_.prompt_tokens += static_cast<uint64_t>(request->prompt_len);
      counters_.image_tokens += static_cast<uint64_t>(final.usage.image_tokens);
      counters_.cached_tokens += static_cast<uint64_t>(request->num_cached_tokens);
      counters_.generated_tokens += static_cast<uint64_t>(request->output_len());
    }
    // The flake this prevents: a client that read its final event saw KV blocks its request
    // had already freed, because the stats were published after the event.
    if (publish_scheduler) last_sched_ = scheduler_->stats();
    budget_.release_all(*request);
    requests_.erase(request->id);
    if (requests_.empty()) all_ended_.notify_all();
  }
  request->stream->push_final(std::move(final));
  return true;
}

void EngineImpl::on_prepared(std::shared_ptr<Request> request) {
  if (stopping_) return;  // stop() has ended it
  // Blocks only while the inbox is full, i.e. the engine thread is behind: backpressure.
  if (inbox_.push(std::move(request)) != ChannelResult::kOk) return;  // closed: stop() ended it
}

void EngineImpl::admit(const std::shared_ptr<Request>& request) {
  // A request cancelled on its way here (after its worker's last look) is never admitted.
  if (request->stream->cancelled()) {
    end_request(request, cancelled_event(), false, /*publish_scheduler=*/true);
    return;
  }
  if (request->stream->ended()) return;
  scheduler_->add(request.get());
  admitted_.push_back(request);
}

std::shared_ptr<Request> EngineImpl::find_open(uint64_t id) {
  std::lock_guard lock(mu_);
  auto it = requests_.find(id);
  return it == requests_.end() ? nullptr : it->second;
}

void EngineImpl::end_cancelled() {
  for (Sequence* seq : scheduler_->sequences()) {
    Request& request = Request::of(seq);
    if (request.stream->cancelled()) {
      scheduler_->abort(seq);
      finish(seq);
    } else if (request.stream->ended()) {  // drain ended it
      scheduler_->abort(seq);
    }
  }
}

void EngineImpl::finish(Sequence* seq) {
  Request& request = Request::of(seq);
  std::shared_ptr<Request> record = find_open(seq->id);
  if (!record) return;  // ended elsewhere (drain); the scheduler has let go of it
  const auto now = Clock::now();
  StreamEvent e;
  e.finished = true;
  e.finish_reason = seq->finish_reason;
  e.usage.prompt_tokens = seq->prompt_len;
  e.usage.image_tokens = request.image_tokens;
  e.usage.cached_tokens = seq->num_cached_tokens;
  e.usage.completion_tokens = seq->output_len();
  e.timings.prepare_ms = ms_between(request.submitted, request.prepared);
  e.timings.queue_ms = request.scheduled ? ms_between(request.prepared, request.first_scheduled) : 0;
  e.timings.ttft_ms = request.produced ? ms_between(request.submitted, request.first_token) : 0;
  e.timings.total_ms = ms_between(request.submitted, now);
  e.timings.encode_ms = request.encode_ms;
  e.prompt_ids.assign(seq->tokens.begin(), seq->tokens.begin() + seq->prompt_len);
  end_request(record, std::move(e), /*counted=*/true, /*publish_scheduler=*/true);
}

void EngineImpl::fail_step(const StepPlan& plan, const std::string& what) {
  std::set<Sequence*> in_step;
  for (const ScheduledChunk& c : plan.chunks) in_step.insert(c.seq);
  logger_->error("engine step failed ({} requests fail, the engine goes on): {}", in_step.size(),
                 what);
  {
    std::lock_guard lock(mu_);  // counted before the final events are visible, like the rest
    ++counters_.step_failures;
  }
  for (Sequence* seq : in_step) {
    scheduler_->abort(seq);
    if (std::shared_ptr<Request> record = find_open(seq->id)) {
      const std::string& id = record->stream->request_id();
      end_request(record,
                  error_event(Status(StatusCode::kInternal,
                                     "engine step failed" +
                                         (id.empty() ? std::string() : " for request " + id) +
                                         ": " + what),
                              FailureReason::kStepFailed),
                  false, /*publish_scheduler=*/true);
    }
  }
}

void EngineImpl::fail_all(const std::string& what) {
  logger_->error("engine bookkeeping failed, the engine is unhealthy: {}", what);
  state_ = EngineState::kUnhealthy;
  for (Sequence* seq : scheduler_->sequences()) {
    scheduler_->abort(seq);
    if (std::shared_ptr<Request> record = find_open(seq->id))
      end_request(record,
                  error_event(Status(StatusCode::kInternal, "engine failed: " + what),
                              FailureReason::kStepFailed),
                  false, /*publish_scheduler=*/true);
  }
}

void EngineImpl::step() {
  StepPlan plan = scheduler_->schedule();
  for (uint64_t id : plan.preempted)
    if (Sequence* seq = scheduler_->find(id)) runner_->drop_embeddings(Request::of(seq));
  if (plan.empty()) {
    // Nothing runs and the next request still does not fit: this cache can never serve it.
    Sequence* head = scheduler_->next_waiting();
    if (scheduler_->stats().running == 0 && head != nullptr) {
      scheduler_->abort(head);
      if (std::shared_ptr<Request> record = find_open(head->id))
        end_request(record,
                    error_event(resource_exhausted(
                                    "the request needs more KV cache than the engine has"),
                                FailureReason::kExceedsKvCache),
                    false, /*publish_scheduler=*/true);
    }
    return;
  }
  const auto now = Clock::now();
  for (const ScheduledChunk& c : plan.chunks) {
    Request& request = Request::of(c.seq);
    if (!request.scheduled) {
      request.scheduled = true;
      request.first_scheduled = now;
    }
  }
  StepOutput out;
  try {
    out = runner_->run(plan);
  } catch (const std::exception& e) {
    fail_step(plan, e.what());
    return;
  }
  std::vector<Sequence*> finished = scheduler_->update(plan, out.sampled);

  const auto produced_at = Clock::now();
  size_t k = 0;
  for (const ScheduledChunk& c : plan.chunks) {
    Request& request = Request::of(c.seq);
    // Embeddings are no longer needed once their span is in the cache.
    for (size_t i = 0; i < c.seq->images.size(); ++i)
      if (c.seq->num_computed >= c.seq->images[i].offset + c.seq->images[i].length)
        request.image_states[i].on_device = at::Tensor();
    if (!c.samples) continue;
    const int64_t row = static_cast<int64_t>(k);
    const int32_t token = out.sampled[k++];
    if (!request.produced) {
      request.produced = true;
      request.first_token = produced_at;
    }
    StreamEvent e;
    e.token_ids.push_back(token);
    if (request.return_logits) {
      const float* begin = out.logits.data_ptr<float>() + row * out.logits.size(1);
      e.logits.assign(begin, begin + out.logits.size(1));
    }
    request.stream->push(std::move(e));
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
  while (!stopping_) {
    std::vector<std::shared_ptr<Request>> incoming;
    std::shared_ptr<Request> next;
    if (!scheduler_->has_work()) {
      ChannelResult r;
      if (released || idle_release.count() <= 0) {
        r = inbox_.pop(&next);
      } else {
        r = inbox_.pop(&next, std::max(last_busy + idle_release - Clock::now(),
                                       Clock::duration::zero()));
      }
      if (r == ChannelResult::kClosed || stopping_) break;
      if (r == ChannelResult::kTimeout) {
        if (preparer_->queued() == 0) {
          release_idle_memory();
          released = true;
        } else {
          last_busy = Clock::now();  // the workers are busy: not idle yet
        }
        continue;
      }
      incoming.push_back(std::move(next));
    }
    while (inbox_.try_pop(&next) == ChannelResult::kOk) incoming.push_back(std::move(next));
    if (stopping_) break;
    released = false;
    for (const auto& request : incoming) admit(request);
    incoming.clear();  // the pixels of those not admitted
    end_cancelled();
    if (scheduler_->has_work()) {
      try {
        step();
      } catch (const std::exception& e) {
        fail_all(e.what());
      }
    } else {
      std::lock_guard lock(mu_);
      last_sched_ = scheduler_->stats();
    }
    std::erase_if(admitted_, [](const auto& r) { return r->status == SequenceStatus::kFinished; });
    last_busy = Clock::now();
  }
  // Stopped: stop() has ended every open request; the scheduler lets go of them.
  for (Sequence* seq : scheduler_->sequences()) scheduler_->abort(seq);
  admitted_.clear();
  std::lock_guard lock(mu_);
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
  const RunnerStats runner = runner_ ? runner_->stats() : RunnerStats{};
  std::lock_guard lock(mu_);
  EngineStats s = counters_;
  s.state = state_.load();
  s.scheduler = last_sched_;
  s.kv_blocks = runner_ ? runner_->num_kv_blocks() : 0;
  s.block_size = options_.block_size;
  s.images_encoded = runner.images_encoded;
  s.image_cache_hits = runner.image_cache_hits;
  s.vision_encode_seconds = runner.vision_encode_seconds;
  s.queued_for_preparation = preparer_ ? preparer_->queued() : 0;
  s.pending_image_bytes = budget_.used();
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
    all_ended_.wait_until(lock, deadline, [&] { return requests_.empty() || stopping_; });
  }
  // A step in progress may take seconds (a batch of pages through the vision encoder on a CPU);
  // its requests have their final events already, so drain does not wait for it.
  stop(std::chrono::milliseconds(100));
}

void EngineImpl::stop(std::chrono::milliseconds grace) {
  std::vector<std::shared_ptr<Request>> left;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    for (const auto& [id, request] : requests_) left.push_back(request);
  }
  inbox_.close();  // wakes the engine thread
  // Ended here, not by the stages holding them: a worker may be inside a long decode and the
  // engine thread inside a step; both see the ended streams and drop them.
  for (auto& request : left) end_request(request, shutdown_event());
  if (!left.empty()) logger_->info("stopped with {} requests unfinished", left.size());
  bool exited = !thread_.joinable();  // never started: init() failed
  if (!exited) {
    std::unique_lock lock(mu_);
    exited = all_ended_.wait_for(lock, grace, [&] { return loop_exited_; });
  }
  if (exited && thread_.joinable()) thread_.join();
  if (!exited) logger_->info("the engine thread ends its step in the background");
  state_ = EngineState::kStopped;
  if (runner_ && !runner_->on_cuda()) {
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

int64_t pending_image_bytes(const ImageSource& image) {
  if (!image.document) return pending_image_bytes(image.encoded.size());
  const DocumentPage* page = image.document->page(image.page_number);
  const int64_t rendered = page ? int64_t{page->width} * page->height * 3 : 0;
  return pending_image_bytes(static_cast<size_t>(rendered));
}

StatusOr<std::unique_ptr<Engine>> Engine::create(const EngineOptions& options) {
  use_mmap_for_large_allocations();
  weights::install_caching_cpu_allocator();
  auto engine = std::make_unique<EngineImpl>(options);
  DSOCR_RETURN_IF_ERROR(engine->init());
  return std::unique_ptr<Engine>(std::move(engine));
}

}  // namespace dsocr::engine

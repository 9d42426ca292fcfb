// FakeEngine: an engine::Engine that replies with a scripted token sequence, for testing the HTTP
// layer without a model. Each request gets the "accepted" event, then one event per token spaced
// by token_delay, then a final event with usage, like the real engine; cancel() ends it with
// kCancelled. Knobs make submit fail (queue full, not ready), make preparation fail, or make the
// engine step that would produce a given token fail (kStepFailed, as a model that throws). Its
// streams are the engine's own RequestStream; its tokenizer() is whatever the test sets. A
// per-request `script` can give each request (e.g. each PDF page) its own reply, pace and error.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/engine.h"

namespace dsocr::server::testing {

class FakeEngine : public engine::Engine {
 public:
  // What every request gets.
  std::vector<int32_t> reply;  // token ids; the engine appends nothing itself
  engine::FinishReason finish = engine::FinishReason::kStop;
  std::chrono::milliseconds token_delay{0};
  Status submit_error;   // returned by submit() when set
  Status prepare_error;  // sent as the first (final) event when set
  engine::FailureReason prepare_failure = engine::FailureReason::kInvalidInput;  // with it
  // >= 0: the step that would produce token number fail_step_at (0-based) fails instead, after
  // the accepted event and the tokens before it; the final event carries step_error.
  int64_t fail_step_at = -1;
  Status step_error = internal_error("engine step failed: injected fault");
  std::shared_ptr<const tokenizer::Tokenizer> tok;  // what tokenizer() returns
  int64_t prompt_tokens = 300, image_tokens = 257, cached_tokens = 16;
  std::atomic<engine::EngineState> engine_state{engine::EngineState::kReady};
  // The accepted event's size of every encoded image (a PDF page reports its render size).
  engine::ImageSize image_size{1000, 800};
  // When set, what one request gets instead of reply / token_delay / prepare_error.
  struct Script {
    std::vector<int32_t> reply;
    std::chrono::milliseconds token_delay{0};
    Status prepare_error;
  };
  std::function<Script(const engine::GenerateRequest&)> script;
  // When it says so, submit() fails as the real engine does over its pending-image budget.
  std::function<bool(const engine::GenerateRequest&)> over_budget;
  std::atomic<int> refused_over_budget{0};

  // What happened.
  std::atomic<int> submitted{0}, cancelled{0}, finished{0}, live{0}, step_failures{0};
  std::atomic<int> most_live{0};  // the most requests live at once
  std::mutex mu;
  std::vector<engine::GenerateRequest> requests;  // guarded by mu

  ~FakeEngine() override {
    for (auto& t : threads_) t.join();
  }

  StatusOr<std::shared_ptr<engine::RequestStream>> submit(engine::GenerateRequest r) override {
    if (!submit_error.ok()) return submit_error;
    const engine::EngineState state = engine_state;
    if (state != engine::EngineState::kReady &&
        !(state == engine::EngineState::kDraining && r.later_page))
      return unavailable("engine is draining");
    if (over_budget && over_budget(r)) {
      ++refused_over_budget;
      return resource_exhausted("too much image data is waiting to be processed; retry later");
    }
    ++submitted;
    Script plan = script ? script(r) : Script{reply, token_delay, prepare_error};
    std::vector<engine::ImageSize> sizes;
    for (const engine::ImageSource& image : r.images) {
      const engine::DocumentPage* page =
          image.document ? image.document->page(image.page_number) : nullptr;
      sizes.push_back(page ? engine::ImageSize{page->width, page->height} : image_size);
    }
    auto stream = std::make_shared<engine::RequestStream>(r.request_id, plan.reply.size() + 2);
    {
      std::lock_guard lock(mu);
      requests.push_back(r);
      threads_.emplace_back([this, stream, plan = std::move(plan), sizes = std::move(sizes)] {
        produce(stream, plan, sizes);
      });
    }
    return stream;
  }
  engine::EngineState state() const override { return engine_state; }
  engine::EngineStats stats() const override {
    engine::EngineStats s;
    s.state = engine_state;
    s.scheduler.running = live;
    s.requests_cancelled = static_cast<uint64_t>(cancelled.load());
    s.step_failures = static_cast<uint64_t>(step_failures.load());
    return s;
  }
  void drain(std::chrono::milliseconds) override {}
  int64_t max_model_len() const override { return 8192; }
  std::string detokenize(const std::vector<int32_t>&) const override { return {}; }
  std::vector<int32_t> tokenize(const std::string&) const override { return {}; }
  std::shared_ptr<const tokenizer::Tokenizer> tokenizer() const override { return tok; }

 private:
  void produce(const std::shared_ptr<engine::RequestStream>& stream, const Script& plan,
               const std::vector<engine::ImageSize>& sizes) {
    const int now_live = ++live;
    for (int seen = most_live.load();
         now_live > seen && !most_live.compare_exchange_weak(seen, now_live);) {
    }
    bool step_failed = false;
    auto final_event = [&](engine::FinishReason reason, int64_t produced) {
      engine::StreamEvent e;
      e.finished = true;
      e.finish_reason = reason;
      if (reason == engine::FinishReason::kError) {
        e.error = step_failed ? step_error : plan.prepare_error;
        e.failure = step_failed ? engine::FailureReason::kStepFailed : prepare_failure;
      }
      e.usage = {prompt_tokens, image_tokens, cached_tokens, produced};
      e.timings = {.queue_ms = 1, .prepare_ms = 2, .ttft_ms = 3, .total_ms = 4, .encode_ms = 1};
      // Not live any more once the reader can see the end (a reader that then submits another
      // request must not find this one still counted).
      --live;
      if (stream->claim_final()) stream->push_final(std::move(e));
    };
    if (!plan.prepare_error.ok()) return final_event(engine::FinishReason::kError, 0);
    engine::StreamEvent accepted;
    accepted.accepted = true;
    accepted.image_sizes = sizes;
    stream->push(accepted);
    int64_t produced = 0;
    for (int32_t id : plan.reply) {
      const auto until = std::chrono::steady_clock::now() + plan.token_delay;
      while (std::chrono::steady_clock::now() < until && !stream->cancelled()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      if (stream->cancelled()) {
        ++cancelled;
        return final_event(engine::FinishReason::kCancelled, produced);
      }
      if (produced == fail_step_at) {
        step_failed = true;
        ++step_failures;
        return final_event(engine::FinishReason::kError, produced);
      }
      engine::StreamEvent e;
      e.token_ids = {id};
      stream->push(std::move(e));
      ++produced;
    }
    ++finished;
    final_event(finish, produced);
  }

  std::vector<std::thread> threads_;  // guarded by mu
};

}  // namespace dsocr::server::testing

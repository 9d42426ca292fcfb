// RequestPreparer: turns a submitted request into one the engine thread can schedule, off that
// thread: decodes and preprocesses its images (one at a time, on the vision workers), builds and
// tokenises its prompt (tokenizer/ocr_prompt.h), checks it fits the context, and fills the
// record's Sequence part. A prepared request gets its "accepted" event and goes to `on_prepared`;
// one that fails gets its final error event through `end` (FailureReason kInvalidInput or
// kContextLengthExceeded).
//
// Cancellation: a cancel (the stream's flag) or a drain (the stream already ended) is seen
// between images and before the hand-off; the image being decoded is finished first. A request
// cancelled while still queued here is ended by the engine's cancel hook, and its task then finds
// nothing to do (Request::take()).
//
// Memory: the record's charge against the pending-image budget goes from the worst case made at
// submit down to the real pixel size once its images are preprocessed.
//
// Thread-safety: post() and queued() may be called from any thread; the callbacks run on the
// worker threads. The destructor waits for the task running on each worker; queued tasks run
// first and find their requests ended (stop the engine before destroying this).
// Invariants: queued() counts the posted tasks not yet returned; every posted request either
// reaches on_prepared (with its "accepted" event sent and its Sequence part filled) or gets its
// final event, or was ended by another thread before its task ran.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>

#include "engine/request.h"
#include "tokenizer/ocr_prompt.h"
#include "tokenizer/tokenizer.h"
#include "vision/vision_workers.h"

namespace dsocr::engine {

class RequestPreparer {
 public:
  struct Options {
    size_t threads = 1;
    size_t queue_capacity = 256;
    int64_t max_model_len = 8192;
  };
  struct Callbacks {
    std::function<void(std::shared_ptr<Request>)> on_prepared;
    // Ends a request with its final event (the engine's end_request()).
    std::function<void(const std::shared_ptr<Request>&, StreamEvent)> end;
  };

  RequestPreparer(const Options& options, tokenizer::OcrPromptBuilder prompt_builder,
                  PendingImageBudget* budget, Callbacks callbacks);
  ~RequestPreparer();

  // Queues the request's preparation; false when the queue is full.
  bool post(std::shared_ptr<Request> request);
  // Requests posted and not yet done (queued or being prepared).
  int64_t queued() const { return in_flight_.load(); }

 private:
  void prepare(const std::shared_ptr<Request>& request);

  const Options options_;
  const tokenizer::OcrPromptBuilder prompt_builder_;
  PendingImageBudget* const budget_;
  const Callbacks callbacks_;
  std::atomic<int64_t> in_flight_{0};
  std::unique_ptr<vision::VisionWorkers> workers_;  // last: its threads use the members above
};

// Final events with the standard shapes.
StreamEvent cancelled_event();
StreamEvent shutdown_event();
StreamEvent error_event(Status status, FailureReason failure);

}  // namespace dsocr::engine

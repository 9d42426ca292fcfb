// Request: the engine's one record of one request, from submit() to its final event.
//
// The record is the scheduler's Sequence (it derives from it, so the scheduler plans with the
// very object the engine keeps, and the engine gets its record back from a plan with
// Request::of()) plus what the other stages need: the stream, the image budget it holds, the
// prepared pixels, the image embeddings, its random generator and its timings.
//
// Who touches what (in the order a request travels):
//   - submit() creates it; `stream`, `submitted` and `return_logits` never change after.
//   - The queued GenerateRequest waits in `queued_` (take(), any thread, under its mutex) until
//     a preparation worker takes it, or a cancel or drain drops it.
//   - The worker fills the Sequence part and `images`, then hands the record to the engine
//     thread through the inbox channel, whose lock orders those writes before the engine
//     thread's reads. From then on the Sequence part and `images` belong to the engine thread.
//   - `charged_bytes` (the record's share of the pending-image budget) only goes down after
//     submit, from any thread (PendingImageBudget).
// Invariant: image_states.size() == Sequence::images.size() once prepared; an image's `on_device`
// embeddings are defined whenever the scheduler has marked it encoded and its span is not yet
// fully computed (ModelRunner checks it before each step).
#pragma once

#include <ATen/core/Tensor.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <vector>

#include "engine/core/scheduler.h"
#include "engine/engine.h"
#include "vision/preprocess.h"

namespace dsocr::engine {

using Clock = std::chrono::steady_clock;

inline double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// The engine's side of the scheduler's SequenceImage of the same index.
struct RequestImage {
  vision::PreprocessedImage pixels;  // until encoded
  int64_t charged_pixel_bytes = 0;   // of `pixels`, still held against the budget
  at::Tensor on_device;              // embeddings, while its span is being computed
  // On the host once encoded: a recompute after preemption needs the embeddings again, and the
  // pixels are gone by then (smaller than the pixels, and off the GPU).
  at::Tensor kept;
};

struct Request : Sequence {
  Request(uint64_t request_id, std::shared_ptr<RequestStream> request_stream,
          GenerateRequest request)
      : stream(std::move(request_stream)),
        submitted(Clock::now()),
        return_logits(request.return_logits),
        queued_(std::move(request)) {
    id = request_id;
  }

  // The record behind a Sequence the scheduler hands back (the engine only schedules Requests).
  static Request& of(Sequence* seq) { return *static_cast<Request*>(seq); }

  // The request as submitted, until a preparation worker takes it; a cancel or drain before
  // then drops it (its image bytes with it) and the worker's task finds nothing to do.
  std::optional<GenerateRequest> take() {
    std::lock_guard lock(mu_);
    std::optional<GenerateRequest> r = std::move(queued_);
    queued_.reset();
    return r;
  }

  const std::shared_ptr<RequestStream> stream;
  const Clock::time_point submitted;
  const bool return_logits;
  std::atomic<int64_t> charged_bytes{0};

  // Preparation's output, then the engine thread's.
  std::vector<RequestImage> image_states;  // parallel to Sequence::images
  int64_t image_tokens = 0;
  Clock::time_point prepared;

  // Engine thread only.
  std::mt19937_64 rng;
  Clock::time_point first_scheduled, first_token;
  bool scheduled = false, produced = false;
  double encode_ms = 0;

 private:
  std::mutex mu_;
  std::optional<GenerateRequest> queued_;  // guarded by mu_
};

// The budget for image memory of requests not yet running (EngineOptions::
// max_pending_image_bytes): charged at submit, lowered as preparation and encoding free memory,
// returned whole when the request ends.
// Thread-safety: any thread. Invariant: used() == the sum of the live records' charged_bytes.
class PendingImageBudget {
 public:
  explicit PendingImageBudget(int64_t limit) : limit_(limit) {}
  // Takes `bytes` unless that would pass the limit (0: no limit).
  bool try_charge(int64_t bytes);
  // Gives back up to `bytes` of what `request` holds.
  void uncharge(Request& request, int64_t bytes);
  void release_all(Request& request) { used_ -= request.charged_bytes.exchange(0); }
  int64_t used() const { return used_.load(); }
  int64_t limit() const { return limit_; }

 private:
  const int64_t limit_;
  std::atomic<int64_t> used_{0};
};

}  // namespace dsocr::engine

// RequestStream: one request's events, from the engine (or whatever produces them) to the reader
// that submitted it, plus the reader's way to cancel it.
//
//   reader:   while (auto event = stream->next(timeout)) ...; stream->cancel();
//   producer: push(accepted), push(tokens)..., then claim_final() + push_final(final event)
//
// Events travel on a common/channel.h Channel. The final event is the last one and comes exactly
// once: several threads may race to end a request (the engine thread, a preparation worker, a
// cancel, drain), and only the one whose claim_final() succeeds sends it; a claimed stream drops
// every other event. The claim and the send are two calls so that the winner can settle its
// books (counters, budgets) in between, before the reader can see the event.
//
// cancel() only sets a flag and runs the owner's cancel hook once; the stage that holds the
// request sees the flag (preparation between images, admission, every engine step) and ends it
// with FinishReason::kCancelled. A cancel after the claim does nothing.
//
// Thread-safety: every method may be called from any thread. set_cancel_hook() must be called
// before the stream is handed to the reader.
// Invariants: at most `max_events` events precede the final one (the producer sizes it: accepted
// + one per generated token); after the final event next() returns nullopt at once.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/channel.h"
#include "common/status.h"
#include "engine/core/batching.h"

namespace dsocr::engine {

// Why a request failed (FinishReason::kError or kCancelled with an error), for the API layer to
// classify without reading messages.
enum class FailureReason {
  kNone,
  kInvalidInput,           // an image that does not decode, a malformed prompt: the client's
  kContextLengthExceeded,  // prompt + max_tokens exceed the model's context
  kExceedsKvCache,         // the request can never fit this engine's KV cache
  kShuttingDown,           // the engine stopped before the request finished
  kStepFailed,             // the engine step that ran it failed (the engine keeps serving)
};
std::string_view failure_reason_name(FailureReason reason);  // "invalid_input", ...

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t image_tokens = 0;
  int64_t cached_tokens = 0;
  int64_t completion_tokens = 0;
};

struct Timings {
  double queue_ms = 0;    // submit -> first scheduled
  double prepare_ms = 0;  // decode + preprocess + tokenise
  double ttft_ms = 0;     // submit -> first token
  double total_ms = 0;
  double encode_ms = 0;  // vision-encoder steps that ran this request's images (shared batches)
};

// An image as the model saw it before tiling: the decoded image after EXIF orientation, or the
// 144-dpi render of a PDF page. Grounding boxes (spec §11.1) are relative to this size.
struct ImageSize {
  int width = 0;
  int height = 0;
};

struct StreamEvent {
  // The first event of every request that passes preparation (images decoded, prompt built and
  // within the context limit) has accepted = true and nothing else; a request that fails
  // preparation gets a final error event instead. The server answers 4xx or starts its 200
  // response on this event, within milliseconds of submit, long before the first token.
  bool accepted = false;
  std::vector<ImageSize> image_sizes;  // in the accepted event: one per image, in order
  std::vector<int32_t> token_ids;  // new tokens (may be empty in the final event)
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  Status error;                                 // set when the request failed
  FailureReason failure = FailureReason::kNone;  // with `error`: why
  Usage usage;                                  // in the final event
  Timings timings;                              // in the final event
  std::vector<int32_t> prompt_ids;              // in the final event
  std::vector<float> logits;  // with return_logits: [token_ids.size() x vocab], row-major
};

class RequestStream {
 public:
  RequestStream(std::string request_id, size_t max_events);
  RequestStream(const RequestStream&) = delete;
  RequestStream& operator=(const RequestStream&) = delete;

  // Reader side.
  // The next event, or nullopt on timeout. After the final event, returns nullopt at once.
  std::optional<StreamEvent> next(std::chrono::milliseconds timeout);
  void cancel();
  bool cancelled() const { return cancelled_.load(); }
  const std::string& request_id() const { return request_id_; }

  // Producer side.
  void set_cancel_hook(std::function<void()> hook);
  // An accepted or token event; dropped once the request has ended.
  void push(StreamEvent event);
  // True for exactly one caller, who must then push_final().
  bool claim_final();
  void push_final(StreamEvent event);
  bool ended() const { return claimed_.load(); }

 private:
  const std::string request_id_;
  Channel<StreamEvent> events_;
  std::atomic<bool> cancelled_{false};
  std::atomic<bool> claimed_{false};
  std::mutex hook_mu_;
  std::function<void()> cancel_hook_;  // guarded by hook_mu_
};

}  // namespace dsocr::engine

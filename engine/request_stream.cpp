#include "engine/request_stream.h"

#include "common/check.h"

namespace dsocr::engine {

std::string_view failure_reason_name(FailureReason reason) {
  switch (reason) {
    case FailureReason::kNone:
      return "none";
    case FailureReason::kInvalidInput:
      return "invalid_input";
    case FailureReason::kContextLengthExceeded:
      return "context_length_exceeded";
    case FailureReason::kExceedsKvCache:
      return "exceeds_kv_cache";
    case FailureReason::kShuttingDown:
      return "shutting_down";
    case FailureReason::kStepFailed:
      return "step_failed";
  }
  return "unknown";
}

RequestStream::RequestStream(std::string request_id, size_t max_events)
    : request_id_(std::move(request_id)), events_(std::max<size_t>(max_events, 1)) {}

std::optional<StreamEvent> RequestStream::next(std::chrono::milliseconds timeout) {
  StreamEvent event;
  if (events_.pop(&event, timeout) != ChannelResult::kOk) return std::nullopt;
  return event;
}

void RequestStream::cancel() {
  if (claimed_.load() || cancelled_.exchange(true)) return;
  std::function<void()> hook;
  {
    std::lock_guard lock(hook_mu_);
    hook = cancel_hook_;
  }
  if (hook) hook();
}

void RequestStream::set_cancel_hook(std::function<void()> hook) {
  std::lock_guard lock(hook_mu_);
  cancel_hook_ = std::move(hook);
}

void RequestStream::push(StreamEvent event) {
  if (claimed_.load()) return;
  // kClosed: the final event won a race with this one and is already queued; drop it.
  const ChannelResult result = events_.try_push(event);
  DSOCR_CHECK(result != ChannelResult::kFull)
      << "request " << request_id_ << " produced more than " << events_.capacity()
      << " events before its final one";
}

bool RequestStream::claim_final() { return !claimed_.exchange(true); }

void RequestStream::push_final(StreamEvent event) {
  DSOCR_CHECK(claimed_.load()) << "final event of " << request_id_ << " sent without a claim";
  const ChannelResult result = events_.close_with(std::move(event));
  DSOCR_CHECK(result == ChannelResult::kOk) << "final event of " << request_id_ << " sent twice";
}

}  // namespace dsocr::engine

// Channel<T>: a bounded, closable, multi-producer multi-consumer FIFO queue.
//
// It is how dsocr's threads hand work to each other (HTTP -> vision pool -> engine inbox, engine
// -> response streams). Bounded on purpose: a full channel is backpressure that the producer
// sees (kFull / kTimeout) instead of memory that grows without limit.
//
// close() is the shutdown signal: afterwards every push fails with kClosed, while pops keep
// returning the items already queued and report kClosed only once the channel is empty, so
// nothing accepted is ever silently dropped.
//
// close_with() ends a channel with one last item, past the capacity if need be: a producer's final
// word (a request's final event) is never refused for want of room.
//
// Thread-safety: every method may be called from any thread concurrently.
// Invariant: 0 <= size() <= capacity(), or capacity() + 1 after close_with().
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <optional>
#include <utility>

#include "common/check.h"

namespace dsocr {

enum class ChannelResult { kOk, kFull, kTimeout, kClosed, kEmpty };

template <typename T>
class Channel {
 public:
  explicit Channel(size_t capacity) : capacity_(capacity) {
    DSOCR_CHECK_GT(capacity, 0u) << "a channel needs room for at least one item";
  }
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  // Non-blocking. kFull when at capacity, kClosed after close(); `item` is untouched on failure.
  ChannelResult try_push(T& item) {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return ChannelResult::kClosed;
    if (items_.size() >= capacity_) return ChannelResult::kFull;
    items_.push_back(std::move(item));
    not_empty_.notify_one();
    return ChannelResult::kOk;
  }
  ChannelResult try_push(T&& item) { return try_push(item); }

  // Waits up to `timeout` for room. kTimeout or kClosed on failure; `item` is untouched then.
  template <typename Rep, typename Period>
  ChannelResult push(T& item, std::chrono::duration<Rep, Period> timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    bool ready =
        not_full_.wait_for(lock, timeout, [&] { return closed_ || items_.size() < capacity_; });
    if (closed_) return ChannelResult::kClosed;
    if (!ready) return ChannelResult::kTimeout;
    items_.push_back(std::move(item));
    not_empty_.notify_one();
    return ChannelResult::kOk;
  }
  template <typename Rep, typename Period>
  ChannelResult push(T&& item, std::chrono::duration<Rep, Period> timeout) {
    return push(item, timeout);
  }

  // Waits (without limit) for room; kClosed if the channel is or becomes closed.
  ChannelResult push(T&& item) {
    std::unique_lock<std::mutex> lock(mu_);
    not_full_.wait(lock, [&] { return closed_ || items_.size() < capacity_; });
    if (closed_) return ChannelResult::kClosed;
    items_.push_back(std::move(item));
    not_empty_.notify_one();
    return ChannelResult::kOk;
  }

  // Non-blocking. kEmpty when nothing is queued (kClosed if also closed).
  ChannelResult try_pop(T* out) {
    std::lock_guard<std::mutex> lock(mu_);
    return pop_locked(out);
  }

  // Waits up to `timeout` for an item. kTimeout, or kClosed once closed and drained.
  template <typename Rep, typename Period>
  ChannelResult pop(T* out, std::chrono::duration<Rep, Period> timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    not_empty_.wait_for(lock, timeout, [&] { return closed_ || !items_.empty(); });
    ChannelResult r = pop_locked(out);
    return r == ChannelResult::kEmpty ? ChannelResult::kTimeout : r;
  }

  // Waits (without limit) for an item; kClosed once closed and drained.
  ChannelResult pop(T* out) {
    std::unique_lock<std::mutex> lock(mu_);
    not_empty_.wait(lock, [&] { return closed_ || !items_.empty(); });
    return pop_locked(out);
  }

  // Appends `item` even when full, then closes. kClosed (and `item` untouched) if already closed.
  ChannelResult close_with(T&& item) {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return ChannelResult::kClosed;
    items_.push_back(std::move(item));
    closed_ = true;
    not_empty_.notify_all();
    not_full_.notify_all();
    return ChannelResult::kOk;
  }

  // Idempotent. Wakes every waiter.
  void close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    not_empty_.notify_all();
    not_full_.notify_all();
  }

  bool closed() const {
    std::lock_guard<std::mutex> lock(mu_);
    return closed_;
  }
  size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return items_.size();
  }
  size_t capacity() const { return capacity_; }

 private:
  ChannelResult pop_locked(T* out) {
    if (items_.empty()) return closed_ ? ChannelResult::kClosed : ChannelResult::kEmpty;
    *out = std::move(items_.front());
    items_.pop_front();
    not_full_.notify_one();
    return ChannelResult::kOk;
  }

  const size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable not_empty_;
  std::condition_variable not_full_;
  std::deque<T> items_;  // guarded by mu_
  bool closed_ = false;  // guarded by mu_
};

}  // namespace dsocr

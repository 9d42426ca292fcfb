// ThreadPool: a fixed set of worker threads fed by a bounded Channel of tasks.
//
// Used for CPU work off the engine thread (image decode and preprocessing, tokenisation). The
// queue bound is the pool's backpressure: try_submit() fails at once when it is full, so callers
// can answer "busy" (HTTP 429) instead of queueing without limit.
//
// shutdown() (also run by the destructor) stops accepting tasks, runs every task already
// accepted, and joins the workers. A task that throws is caught and logged; the worker survives.
//
// Thread-safety: submit/try_submit/shutdown may be called from any thread, except that a task
// must not call shutdown() on its own pool (it would wait for itself).
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/channel.h"

namespace dsocr {

class ThreadPool {
 public:
  using Task = std::function<void()>;

  // `name` labels the workers' threads (visible in top/gdb) and log lines.
  ThreadPool(std::string name, size_t num_threads, size_t queue_capacity);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Non-blocking; false when the queue is full or the pool is shut down.
  bool try_submit(Task task);
  // Waits up to `timeout` for queue room; false on timeout or after shutdown.
  bool submit(Task task, std::chrono::milliseconds timeout);

  // Runs `fn` on the pool and returns its future, or nullopt when the queue is full.
  template <typename F>
  auto try_async(F&& fn) -> std::optional<std::future<std::invoke_result_t<F>>> {
    using R = std::invoke_result_t<F>;
    auto task = std::make_shared<std::packaged_task<R()>>(std::forward<F>(fn));
    std::future<R> future = task->get_future();
    if (!try_submit([task] { (*task)(); })) return std::nullopt;
    return future;
  }

  void shutdown();

  size_t num_threads() const { return workers_.size(); }
  size_t queued() const { return tasks_.size(); }
  size_t queue_capacity() const { return tasks_.capacity(); }

 private:
  void worker_loop(size_t index);

  const std::string name_;
  Channel<Task> tasks_;
  std::vector<std::thread> workers_;
  std::once_flag shutdown_once_;
};

}  // namespace dsocr

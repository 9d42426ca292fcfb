#include "common/thread_pool.h"

#include <pthread.h>

#include <exception>

#include "common/logging.h"

namespace dsocr {

ThreadPool::ThreadPool(std::string name, size_t num_threads, size_t queue_capacity)
    : name_(std::move(name)), tasks_(queue_capacity) {
  DSOCR_CHECK_GT(num_threads, 0u) << "pool '" << name_ << "' needs at least one thread";
  workers_.reserve(num_threads);
  for (size_t i = 0; i < num_threads; ++i) {
    workers_.emplace_back([this, i] { worker_loop(i); });
  }
}

ThreadPool::~ThreadPool() { shutdown(); }

bool ThreadPool::try_submit(Task task) { return tasks_.try_push(task) == ChannelResult::kOk; }

bool ThreadPool::submit(Task task, std::chrono::milliseconds timeout) {
  return tasks_.push(task, timeout) == ChannelResult::kOk;
}

void ThreadPool::shutdown() {
  std::call_once(shutdown_once_, [this] {
    tasks_.close();
    for (auto& worker : workers_) {
      if (worker.joinable()) worker.join();
    }
  });
}

void ThreadPool::worker_loop(size_t index) {
  // Linux limits thread names to 15 characters.
  std::string thread_name = (name_ + "-" + std::to_string(index)).substr(0, 15);
  pthread_setname_np(pthread_self(), thread_name.c_str());
  Task task;
  while (tasks_.pop(&task) == ChannelResult::kOk) {
    try {
      task();
    } catch (const std::exception& e) {
      log::get("common")->error("pool '{}': a task threw: {}", name_, e.what());
    } catch (...) {
      log::get("common")->error("pool '{}': a task threw a non-exception", name_);
    }
    task = nullptr;  // release captured state before waiting again
  }
}

}  // namespace dsocr

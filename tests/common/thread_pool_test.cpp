#include "common/thread_pool.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <mutex>
#include <set>
#include <stdexcept>

namespace dsocr {
namespace {

using namespace std::chrono_literals;

TEST_CASE("ThreadPool: runs every accepted task, from many submitters", "[thread_pool][stress]") {
  std::atomic<int64_t> sum{0};
  std::atomic<int> accepted{0};
  {
    ThreadPool pool("stress", 4, 64);
    std::vector<std::thread> submitters;
    for (int s = 0; s < 4; ++s) {
      submitters.emplace_back([&, s] {
        for (int i = 0; i < 5000; ++i) {
          int value = s * 5000 + i;
          while (!pool.submit([&sum, value] { sum += value; }, 100ms)) {
          }
          ++accepted;
        }
      });
    }
    for (auto& t : submitters) t.join();
  }  // destructor: drains the queue, joins the workers
  CHECK(accepted == 20000);
  CHECK(sum == int64_t{19999} * 20000 / 2);
}

TEST_CASE("ThreadPool: a full queue is backpressure, not growth", "[thread_pool]") {
  ThreadPool pool("full", 1, 2);
  std::mutex gate;
  gate.lock();  // the worker blocks on the first task
  std::atomic<int> ran{0};
  REQUIRE(pool.try_submit([&] {
    std::lock_guard<std::mutex> l(gate);
    ++ran;
  }));
  // Wait until the worker has taken the first task, so the queue is empty again.
  while (pool.queued() != 0) std::this_thread::sleep_for(1ms);
  CHECK(pool.try_submit([&] { ++ran; }));
  CHECK(pool.try_submit([&] { ++ran; }));
  CHECK_FALSE(pool.try_submit([&] { ++ran; }));    // queue of 2 is full
  CHECK_FALSE(pool.submit([&] { ++ran; }, 20ms));  // still full after waiting
  gate.unlock();
  pool.shutdown();
  CHECK(ran == 3);
  CHECK_FALSE(pool.try_submit([&] { ++ran; }));  // shut down
}

TEST_CASE("ThreadPool: futures and throwing tasks", "[thread_pool]") {
  ThreadPool pool("futures", 2, 8);
  auto f = pool.try_async([] { return 6 * 7; });
  REQUIRE(f.has_value());
  CHECK(f->get() == 42);
  auto thrower = pool.try_async([]() -> int { throw std::runtime_error("boom"); });
  REQUIRE(thrower.has_value());
  CHECK_THROWS_AS(thrower->get(), std::runtime_error);
  // A task throwing outside a packaged_task is caught by the worker, which keeps serving.
  REQUIRE(pool.try_submit([] { throw std::runtime_error("loose"); }));
  auto after = pool.try_async([] { return 1; });
  REQUIRE(after.has_value());
  CHECK(after->get() == 1);
}

TEST_CASE("ThreadPool: work spreads over the workers", "[thread_pool]") {
  ThreadPool pool("spread", 3, 16);
  std::mutex mu;
  std::set<std::thread::id> ids;
  std::atomic<int> arrived{0};
  for (int i = 0; i < 3; ++i) {
    REQUIRE(pool.try_submit([&] {
      {
        std::lock_guard<std::mutex> l(mu);
        ids.insert(std::this_thread::get_id());
      }
      ++arrived;
      // Hold each worker until all three tasks run at once: proves three threads serve the queue.
      while (arrived < 3) std::this_thread::sleep_for(1ms);
    }));
  }
  pool.shutdown();
  CHECK(ids.size() == 3);
}

}  // namespace
}  // namespace dsocr

#include "common/channel.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <numeric>
#include <thread>
#include <vector>

namespace dsocr {
namespace {

using namespace std::chrono_literals;

TEST_CASE("Channel: FIFO, capacity and non-blocking calls", "[channel]") {
  Channel<int> ch(2);
  CHECK(ch.try_push(1) == ChannelResult::kOk);
  CHECK(ch.try_push(2) == ChannelResult::kOk);
  CHECK(ch.try_push(3) == ChannelResult::kFull);
  CHECK(ch.size() == 2);
  int v = 0;
  CHECK(ch.try_pop(&v) == ChannelResult::kOk);
  CHECK(v == 1);
  CHECK(ch.try_pop(&v) == ChannelResult::kOk);
  CHECK(v == 2);
  CHECK(ch.try_pop(&v) == ChannelResult::kEmpty);
}

TEST_CASE("Channel: close_with adds a last item even when full, then refuses", "[channel]") {
  Channel<int> ch(1);
  CHECK(ch.try_push(1) == ChannelResult::kOk);
  CHECK(ch.close_with(2) == ChannelResult::kOk);
  CHECK(ch.size() == 2);
  CHECK(ch.try_push(3) == ChannelResult::kClosed);
  CHECK(ch.close_with(4) == ChannelResult::kClosed);
  int v = 0;
  CHECK(ch.pop(&v, 0ms) == ChannelResult::kOk);
  CHECK(v == 1);
  CHECK(ch.pop(&v, 0ms) == ChannelResult::kOk);
  CHECK(v == 2);
  CHECK(ch.pop(&v, 0ms) == ChannelResult::kClosed);
}

TEST_CASE("Channel: timeouts", "[channel]") {
  Channel<int> ch(1);
  int v = 0;
  auto start = std::chrono::steady_clock::now();
  CHECK(ch.pop(&v, 30ms) == ChannelResult::kTimeout);
  CHECK(std::chrono::steady_clock::now() - start >= 30ms);
  CHECK(ch.push(7, 10ms) == ChannelResult::kOk);
  CHECK(ch.push(8, 30ms) == ChannelResult::kTimeout);
  CHECK(ch.pop(&v, 10ms) == ChannelResult::kOk);
  CHECK(v == 7);
}

TEST_CASE("Channel: close drains accepted items, then reports closed", "[channel]") {
  Channel<std::string> ch(4);
  CHECK(ch.try_push(std::string("a")) == ChannelResult::kOk);
  CHECK(ch.try_push(std::string("b")) == ChannelResult::kOk);
  ch.close();
  ch.close();  // idempotent
  std::string kept = "kept";
  CHECK(ch.try_push(kept) == ChannelResult::kClosed);
  CHECK(kept == "kept");  // a failed push leaves the item with the caller
  std::string v;
  CHECK(ch.pop(&v) == ChannelResult::kOk);
  CHECK(v == "a");
  CHECK(ch.pop(&v, 1s) == ChannelResult::kOk);
  CHECK(v == "b");
  CHECK(ch.pop(&v, 1s) == ChannelResult::kClosed);
  CHECK(ch.try_pop(&v) == ChannelResult::kClosed);
}

TEST_CASE("Channel: close wakes blocked producers and consumers", "[channel]") {
  Channel<int> full(1);
  REQUIRE(full.try_push(1) == ChannelResult::kOk);
  Channel<int> empty(1);
  std::atomic<int> woke{0};
  std::thread producer([&] {
    if (full.push(2) == ChannelResult::kClosed) ++woke;
  });
  std::thread consumer([&] {
    int v;
    if (empty.pop(&v) == ChannelResult::kClosed) ++woke;
  });
  std::this_thread::sleep_for(20ms);
  full.close();
  empty.close();
  producer.join();
  consumer.join();
  CHECK(woke == 2);
}

TEST_CASE("Channel: many producers and consumers lose and duplicate nothing", "[channel][stress]") {
  constexpr int kProducers = 8, kConsumers = 8, kPerProducer = 20000;
  Channel<int> ch(16);  // small, so producers block often
  std::vector<std::atomic<int>> seen(kProducers * kPerProducer);
  std::atomic<int64_t> sum{0};
  std::atomic<int> push_failures{0};
  std::vector<std::thread> threads;
  for (int p = 0; p < kProducers; ++p) {
    threads.emplace_back([&, p] {
      for (int i = 0; i < kPerProducer; ++i) {
        int value = p * kPerProducer + i;
        // Alternate blocking and timed pushes so both paths run under contention. Catch2
        // assertions are not thread-safe: count failures here, check them on the main thread.
        if (i % 2 == 0) {
          if (ch.push(std::move(value)) != ChannelResult::kOk) ++push_failures;
        } else {
          while (ch.push(value, 1ms) == ChannelResult::kTimeout) {
          }
        }
      }
    });
  }
  std::vector<std::thread> consumers;
  for (int c = 0; c < kConsumers; ++c) {
    consumers.emplace_back([&] {
      int v;
      while (ch.pop(&v) == ChannelResult::kOk) {
        seen[v].fetch_add(1);
        sum += v;
      }
    });
  }
  for (auto& t : threads) t.join();
  ch.close();
  for (auto& t : consumers) t.join();
  int64_t n = int64_t{kProducers} * kPerProducer;
  CHECK(push_failures == 0);
  CHECK(sum == n * (n - 1) / 2);
  int wrong = 0;
  for (auto& s : seen) wrong += s.load() != 1;
  CHECK(wrong == 0);
  CHECK(ch.size() == 0);
}

}  // namespace
}  // namespace dsocr

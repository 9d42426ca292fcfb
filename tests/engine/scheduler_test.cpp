// Scheduler: table-driven step plans (budget split, chunking, max_num_seqs, preemption order,
// prefix hits, image spans, cancellation) and a 10,000-step randomised property test.
#include <catch2/catch.hpp>

#include <map>
#include <memory>
#include <random>

#include "engine/core/scheduler.h"
#include "engine/core/token_rules.h"

using namespace dsocr::engine;

namespace {

std::unique_ptr<Sequence> make_seq(uint64_t id, int64_t prompt_len, int64_t max_tokens,
                                   std::vector<SequenceImage> images = {}, int32_t base = 100) {
  auto s = std::make_unique<Sequence>();
  s->id = id;
  for (int64_t i = 0; i < prompt_len; ++i) s->tokens.push_back(base + static_cast<int32_t>(i));
  s->prompt_len = prompt_len;
  s->max_total_tokens = prompt_len + max_tokens;
  s->params.ngram_size = 0;
  s->images = std::move(images);
  return s;
}

// The engine owns its requests (engine/request.h); here the test does, so that finished ones can
// still be inspected by id until released.
class OwningScheduler : public Scheduler {
 public:
  using Scheduler::Scheduler;
  Sequence* add(std::unique_ptr<Sequence> seq) {
    Sequence* raw = seq.get();
    owned_[raw->id] = std::move(seq);
    return Scheduler::add(raw);
  }
  Sequence* find(uint64_t id) {
    auto it = owned_.find(id);
    return it == owned_.end() ? nullptr : it->second.get();
  }
  bool abort(uint64_t id) {
    Sequence* seq = find(id);
    return seq != nullptr && Scheduler::abort(seq);
  }
  void release(uint64_t id) {
    auto it = owned_.find(id);
    if (it != owned_.end() && it->second->status == SequenceStatus::kFinished) owned_.erase(it);
  }

 private:
  std::map<uint64_t, std::unique_ptr<Sequence>> owned_;
};

struct Expect {
  uint64_t id;
  int64_t begin, num_tokens;
  bool samples;
};

void check_plan(const StepPlan& plan, const std::vector<Expect>& want) {
  REQUIRE(plan.chunks.size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("chunk " << i);
    CHECK(plan.chunks[i].seq->id == want[i].id);
    CHECK(plan.chunks[i].begin == want[i].begin);
    CHECK(plan.chunks[i].num_tokens == want[i].num_tokens);
    CHECK(plan.chunks[i].samples == want[i].samples);
  }
}

std::vector<int32_t> tokens_for(const StepPlan& plan, int32_t token = 7) {
  std::vector<int32_t> out;
  for (const auto& c : plan.chunks)
    if (c.samples) out.push_back(token);
  return out;
}

}  // namespace

TEST_CASE("scheduler splits the token budget: running first, then chunked prefill", "[scheduler]") {
  SchedulerConfig cfg;
  cfg.max_num_batched_tokens = 10;
  OwningScheduler s(cfg, 64, 4, false);
  s.add(make_seq(1, 8, 4));
  s.add(make_seq(2, 6, 4));
  s.add(make_seq(3, 4, 4));
  StepPlan p1 = s.schedule();
  check_plan(p1, {{1, 0, 8, true}, {2, 0, 2, false}});
  CHECK(p1.num_tokens == 10);
  s.update(p1, tokens_for(p1));
  StepPlan p2 = s.schedule();
  check_plan(p2, {{1, 8, 1, true}, {2, 2, 4, true}, {3, 0, 4, true}});
  s.update(p2, tokens_for(p2));
  StepPlan p3 = s.schedule();
  check_plan(p3, {{1, 9, 1, true}, {2, 6, 1, true}, {3, 4, 1, true}});
}

TEST_CASE("scheduler respects max_num_seqs and finishes on length and EOS", "[scheduler]") {
  SchedulerConfig cfg;
  cfg.max_num_seqs = 2;
  OwningScheduler s(cfg, 64, 4, false);
  s.add(make_seq(1, 3, 1));
  s.add(make_seq(2, 3, 5));
  s.add(make_seq(3, 3, 5));
  StepPlan p1 = s.schedule();
  check_plan(p1, {{1, 0, 3, true}, {2, 0, 3, true}});
  auto finished = s.update(p1, {5, cfg.eos_token_id});
  REQUIRE(finished.size() == 2);
  CHECK(finished[0]->finish_reason == FinishReason::kLength);
  CHECK(finished[1]->finish_reason == FinishReason::kStop);
  StepPlan p2 = s.schedule();
  check_plan(p2, {{3, 0, 3, true}});
}

TEST_CASE("scheduler preempts the newest running request when blocks run out", "[scheduler]") {
  OwningScheduler s(SchedulerConfig{}, 4, 4, false);  // 16 tokens of KV
  s.add(make_seq(1, 8, 8));
  s.add(make_seq(2, 8, 8));
  StepPlan p1 = s.schedule();
  check_plan(p1, {{1, 0, 8, true}, {2, 0, 8, true}});
  s.update(p1, tokens_for(p1));
  StepPlan p2 = s.schedule();  // request 1 needs a third block: request 2 goes
  check_plan(p2, {{1, 8, 1, true}});
  REQUIRE(p2.preempted == std::vector<uint64_t>{2});
  CHECK(s.find(2)->status == SequenceStatus::kWaiting);
  CHECK(s.find(2)->num_computed == 0);
  CHECK(s.find(2)->num_tokens() == 9);  // its sampled token is kept and recomputed
  CHECK(s.block_manager().check_invariants().empty());
  s.update(p2, tokens_for(p2));
  CHECK(s.abort(1));
  StepPlan p3 = s.schedule();  // request 2 comes back, recomputing prompt + output
  check_plan(p3, {{2, 0, 9, true}});
}

TEST_CASE("scheduler starts after a prefix-cache hit and keeps one token to compute",
          "[scheduler]") {
  OwningScheduler s(SchedulerConfig{}, 64, 4, true);
  s.add(make_seq(1, 12, 1));
  StepPlan p1 = s.schedule();
  check_plan(p1, {{1, 0, 12, true}});
  s.update(p1, tokens_for(p1));
  s.release(1);
  s.add(make_seq(2, 12, 1));  // same prompt
  StepPlan p2 = s.schedule();
  check_plan(p2, {{2, 8, 4, true}});  // 2 full blocks hit; (12-1)/4 = 2
  CHECK(s.find(2)->num_cached_tokens == 8);
  REQUIRE(s.update(p2, tokens_for(p2)).size() == 1);  // max_tokens 1: done
  s.release(2);
  s.add(make_seq(3, 12, 1, {{4, 4, 0xabc, false}}));  // same ids, but an image in block 1
  StepPlan p3 = s.schedule();
  REQUIRE(p3.chunks.size() == 1);
  CHECK(p3.chunks[0].begin == 4);  // only block 0 matches: the image hash differs
}

TEST_CASE("scheduler shares prefix blocks only between equal cache salts", "[scheduler]") {
  OwningScheduler s(SchedulerConfig{}, 64, 4, true);
  auto run = [&](uint64_t id, std::string_view salt) {
    auto seq = make_seq(id, 12, 1);
    seq->cache_salt_hash = cache_salt_hash(salt);
    s.add(std::move(seq));
    StepPlan p = s.schedule();
    REQUIRE(p.chunks.size() == 1);
    const int64_t cached = s.find(id)->num_cached_tokens;
    REQUIRE(s.update(p, tokens_for(p)).size() == 1);
    s.release(id);
    return cached;
  };
  CHECK(run(1, "alice") == 0);
  CHECK(run(2, "bob") == 0);    // same prompt, another salt: nothing shared
  CHECK(run(3, "") == 0);       // nor with the shared (unsalted) cache
  CHECK(run(4, "alice") == 8);  // equal salts share as usual
  CHECK(run(5, "") == 8);
}

TEST_CASE("scheduler encodes images within the image budget and cuts chunks before others",
          "[scheduler]") {
  SchedulerConfig cfg;
  cfg.max_image_tokens_per_step = 5;
  OwningScheduler s(cfg, 64, 4, false);
  s.add(make_seq(1, 10, 2, {{2, 5, 11, false}}));
  s.add(make_seq(2, 10, 2, {{3, 5, 22, false}}));
  StepPlan p1 = s.schedule();
  check_plan(p1, {{1, 0, 10, true}, {2, 0, 3, false}});  // 2 stops before its image
  REQUIRE(p1.images.size() == 1);
  CHECK(p1.images[0].seq->id == 1);
  s.update(p1, tokens_for(p1));
  CHECK(s.find(1)->images[0].encoded);
  StepPlan p2 = s.schedule();
  check_plan(p2, {{1, 10, 1, true}, {2, 3, 7, true}});
  REQUIRE(p2.images.size() == 1);
  CHECK(p2.images[0].seq->id == 2);
  // A single image larger than the budget still goes (at least one image per step).
  OwningScheduler big(cfg, 64, 4, false);
  big.add(make_seq(3, 20, 1, {{1, 18, 33, false}}));
  StepPlan p3 = big.schedule();
  check_plan(p3, {{3, 0, 20, true}});
  CHECK(p3.images.size() == 1);
}

TEST_CASE("scheduler cancellation frees everything at once", "[scheduler]") {
  OwningScheduler s(SchedulerConfig{}, 16, 4, true);
  s.add(make_seq(1, 10, 5));
  s.add(make_seq(2, 10, 5));
  StepPlan p1 = s.schedule();
  s.update(p1, tokens_for(p1));
  CHECK(s.abort(1));
  CHECK_FALSE(s.abort(1));
  CHECK(s.abort(2));
  CHECK(s.find(1)->finish_reason == FinishReason::kCancelled);
  CHECK(s.block_manager().num_free_blocks() == 16);
  CHECK_FALSE(s.has_work());
  CHECK(s.schedule().empty());
}

TEST_CASE("scheduler property: 10,000 random steps, no leaks, everything finishes", "[scheduler]") {
  std::mt19937_64 rng(1234);
  SchedulerConfig cfg;
  cfg.max_num_batched_tokens = 48;
  cfg.max_num_seqs = 6;
  cfg.max_image_tokens_per_step = 20;
  const int num_blocks = 40, block_size = 4;
  OwningScheduler s(cfg, num_blocks, block_size, true);
  uint64_t next_id = 1;
  std::vector<uint64_t> live;
  int finished = 0, cancelled = 0, added = 0;
  for (int step = 0; step < 10000; ++step) {
    if (rng() % 3 == 0 && step < 9000) {  // arrivals, sometimes sharing a prompt
      int64_t len = 1 + rng() % 60;
      std::vector<SequenceImage> images;
      if (len > 12 && rng() % 2)
        images.push_back({2, static_cast<int64_t>(4 + rng() % 8), rng() % 3, false});
      s.add(make_seq(next_id, len, 1 + rng() % 20, images, static_cast<int32_t>(rng() % 2) * 1000));
      live.push_back(next_id++);
      ++added;
    }
    if (!live.empty() && rng() % 17 == 0) {  // cancellations
      uint64_t id = live[rng() % live.size()];
      if (s.abort(id)) ++cancelled;
    }
    StepPlan plan = s.schedule();
    REQUIRE(plan.num_tokens <= cfg.max_num_batched_tokens);
    std::vector<int32_t> sampled;
    for (const auto& c : plan.chunks)
      if (c.samples) sampled.push_back(rng() % 10 == 0 ? cfg.eos_token_id : 5);
    for (auto* seq : s.update(plan, sampled)) {
      (void)seq;
      ++finished;
    }
    REQUIRE(s.block_manager().check_invariants().empty());
    for (auto it = live.begin(); it != live.end();) {
      Sequence* seq = s.find(*it);
      if (seq && seq->status == SequenceStatus::kFinished) {
        s.release(*it);
        it = live.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (int i = 0; i < 1000 && s.has_work(); ++i) {  // drain
    StepPlan plan = s.schedule();
    std::vector<int32_t> sampled(tokens_for(plan, cfg.eos_token_id));
    finished += static_cast<int>(s.update(plan, sampled).size());
  }
  CHECK_FALSE(s.has_work());
  CHECK(finished + cancelled == added);
  CHECK(s.block_manager().num_free_blocks() == num_blocks);
  CHECK(s.stats().preemptions > 0);
  CHECK(s.stats().prefix.hit_tokens > 0);
}

TEST_CASE("loop detection finds short periods only over the whole span", "[sampler]") {
  std::vector<int32_t> t = {1, 2, 3};
  for (int i = 0; i < 20; ++i) t.insert(t.end(), {7, 8, 9});
  CHECK(detect_loop(t, 30, 8));
  CHECK_FALSE(detect_loop(t, 70, 8));  // the span reaches the non-repeating head
  CHECK_FALSE(detect_loop(t, 30, 2));  // period 3 > max period
  CHECK_FALSE(detect_loop(t, 0, 8));
}

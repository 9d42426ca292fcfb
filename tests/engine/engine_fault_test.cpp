// The engine's error policy for a step (engine.h): a model step that throws fails the requests in
// that step, with FailureReason::kStepFailed and their request id in the message, counts in
// step_failures, and leaves the engine serving everyone else with an intact KV cache. The fault
// is injected through EngineOptions::step_fault on the tiny random model.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "tests/engine/engine_test_util.h"

using namespace dsocr;
using namespace dsocr::engine;
using std::chrono::milliseconds;

namespace {

struct Outcome {
  std::vector<int32_t> tokens;
  StreamEvent final;
};

Outcome run_to_end(Engine& engine, const std::string& id, int max_tokens) {
  GenerateRequest r;
  r.request_id = id;
  r.prompt = "Free OCR.";
  static const std::string page = testing::page_png(300, 400, 3);  // noise: one draw, reused
  r.images = {page};
  r.sampling.max_tokens = max_tokens;
  r.sampling.ignore_eos = true;
  auto stream = engine.submit(std::move(r));
  REQUIRE(stream.ok());
  Outcome out;
  while (auto e = (*stream)->next(milliseconds(60000))) {
    out.tokens.insert(out.tokens.end(), e->token_ids.begin(), e->token_ids.end());
    if (e->finished) {
      out.final = *e;
      return out;
    }
  }
  FAIL("no final event for " << id);
  return out;
}

bool contains(const std::vector<std::string>& ids, const std::string& id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

TEST_CASE("a failing model step fails its requests and the engine keeps serving", "[fault]") {
  std::atomic<int> doomed_steps{0};
  EngineOptions o;
  o.model_dir = testing::tiny_model();
  o.device = "cpu";
  o.num_kv_blocks = 400;
  o.scheduler.max_model_len = 2048;
  // "doomed" fails in its third step: after its prefill and one decode step.
  o.step_fault = [&](const std::vector<std::string>& ids) {
    return contains(ids, "doomed") && ++doomed_steps == 3;
  };
  auto created = Engine::create(o);
  REQUIRE(created.ok());
  Engine& engine = **created;

  // Asked twice: the second run is served from the prefix cache, as the runs after the fault
  // are (greedy tokens of a random model differ between a cached and an uncached prefill).
  (void)run_to_end(engine, "first", 6);
  const Outcome reference = run_to_end(engine, "reference", 6);
  REQUIRE(reference.final.finish_reason == FinishReason::kLength);
  REQUIRE(reference.tokens.size() == 6);
  REQUIRE(reference.final.usage.cached_tokens > 0);

  const Outcome doomed = run_to_end(engine, "doomed", 6);
  CHECK(doomed.final.finish_reason == FinishReason::kError);
  CHECK(doomed.final.failure == FailureReason::kStepFailed);
  CHECK(doomed.final.error.code() == StatusCode::kInternal);
  CHECK(doomed.final.error.message().find("doomed") != std::string::npos);
  CHECK(doomed.tokens.size() == 2);  // the two steps before the fault delivered theirs

  EngineStats s = engine.stats();
  CHECK(s.state == EngineState::kReady);
  CHECK(s.step_failures == 1);
  CHECK(s.requests_failed == 1);
  CHECK(s.scheduler.running == 0);
  CHECK(s.scheduler.kv_usage == 0.0);  // the failed request's blocks were freed

  // The same page again: the prefix cache and the KV blocks the failed step wrote into did not
  // leak into it, so it reproduces the reference exactly.
  const Outcome again = run_to_end(engine, "again", 6);
  CHECK(again.final.finish_reason == FinishReason::kLength);
  CHECK(again.final.usage.cached_tokens == reference.final.usage.cached_tokens);
  CHECK(again.tokens == reference.tokens);
  CHECK(engine.stats().requests_finished == 3);
}

TEST_CASE("a step fault fails every request in that step and none outside it", "[fault]") {
  EngineOptions o;
  o.model_dir = testing::tiny_model();
  o.device = "cpu";
  o.num_kv_blocks = 400;
  o.scheduler.max_model_len = 2048;
  o.step_fault = [](const std::vector<std::string>& ids) { return contains(ids, "poison"); };
  auto created = Engine::create(o);
  REQUIRE(created.ok());
  Engine& engine = **created;
  const Outcome poison = run_to_end(engine, "poison", 4);
  CHECK(poison.final.failure == FailureReason::kStepFailed);
  CHECK(poison.tokens.empty());
  for (int i = 0; i < 3; ++i) {
    const Outcome fine = run_to_end(engine, "fine-" + std::to_string(i), 3);
    CHECK(fine.final.finish_reason == FinishReason::kLength);
    CHECK(fine.final.failure == FailureReason::kNone);
  }
  CHECK(engine.stats().step_failures == 1);
  CHECK(engine.state() == EngineState::kReady);
}

}  // namespace

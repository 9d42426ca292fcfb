// A request's life through every engine stage on the tiny random model: cancellation wherever it
// lands (queued for preparation, between images, on its way to the engine thread, waiting,
// running), drain with a preparation backlog, the pending-image byte budget, cache salts, the
// stats a client reads after its final event, and memory handed back when idle.
//
// Stages are reached by timing, with margins of several image decodes: a single vision worker
// busy with large noise PNGs (slow to decode) holds later requests in its queue, and the tiny
// model's vision encoder (about a second per page) holds the engine thread in one step.
#include <catch2/catch.hpp>

#include <chrono>
#include <limits>
#include <thread>

#include "common/memory.h"
#include "engine/engine.h"
#include "tests/engine/engine_test_util.h"
#include "vision/vision_workers.h"
#include "weights/cpu_allocator.h"

using namespace dsocr;
using namespace dsocr::engine;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

using testing::page_png;
using testing::tiny_model;

EngineOptions base_options() {
  EngineOptions o;
  o.model_dir = tiny_model();
  o.device = "cpu";
  o.num_kv_blocks = 600;
  o.vision_threads = 1;
  o.scheduler.max_model_len = 2048;
  return o;
}

std::unique_ptr<Engine> make_engine(const EngineOptions& o) {
  auto e = Engine::create(o);
  REQUIRE(e.ok());
  return std::move(e).value();
}

// Slow to decode: ~12 MB of incompressible pixels, tiled into 6 views.
const std::string& big_page() {
  static const std::string png = page_png(2000, 2000, 5);
  return png;
}
const std::string& small_page() {
  static const std::string png = page_png(300, 400, 9);
  return png;
}

GenerateRequest text_request(int max_tokens) {
  GenerateRequest r;
  r.prompt = "Hi";
  r.sampling.max_tokens = max_tokens;
  r.sampling.ignore_eos = true;
  return r;
}

GenerateRequest image_request(const std::string& png, int images, int max_tokens) {
  GenerateRequest r = text_request(max_tokens);
  r.prompt = "Free OCR.";
  r.images.assign(images, png);
  return r;
}

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// One image's decode + preprocessing on this machine now (the best of three).
double decode_ms(const std::string& png) {
  double best = 1e9;
  for (int i = 0; i < 3; ++i) {
    const auto t = Clock::now();
    REQUIRE(vision::decode_and_preprocess(png, {}).ok());
    best = std::min(best, ms_since(t));
  }
  return best;
}

struct Seen {
  bool accepted = false;
  std::vector<int32_t> tokens;
  std::optional<StreamEvent> final;
  int finals = 0;
};

// Reads at most one event (waiting up to `wait`); false when none came.
bool read_one(RequestStream& s, Seen& seen, milliseconds wait) {
  if (seen.final) return false;
  auto e = s.next(wait);
  if (!e) return false;
  if (e->accepted) seen.accepted = true;
  seen.tokens.insert(seen.tokens.end(), e->token_ids.begin(), e->token_ids.end());
  if (e->finished) {
    ++seen.finals;
    seen.final = std::move(*e);
  }
  return true;
}

// Reads until the final event or until no event comes within `wait`.
void read(RequestStream& s, Seen& seen, milliseconds wait) {
  while (read_one(s, seen, wait)) {
  }
}

Seen read_to_end(RequestStream& s, Seen seen = {}, milliseconds limit = milliseconds(60000)) {
  const auto t = Clock::now();
  while (!seen.final && ms_since(t) < limit.count()) read(s, seen, milliseconds(50));
  REQUIRE(seen.final.has_value());
  // Nothing may follow the final event.
  CHECK_FALSE(s.next(milliseconds(0)).has_value());
  return seen;
}

// Waits until `pred(stats)` holds (the engine publishes stats between steps), up to `limit`.
template <typename Pred>
bool eventually(Engine& engine, Pred pred, milliseconds limit = milliseconds(10000)) {
  const auto t = Clock::now();
  while (ms_since(t) < limit.count()) {
    if (pred(engine.stats())) return true;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return pred(engine.stats());
}

void check_cancelled_without_output(const Seen& seen) {
  CHECK(seen.finals == 1);
  CHECK(seen.final->finish_reason == FinishReason::kCancelled);
  CHECK(seen.final->error.ok());
  CHECK(seen.tokens.empty());
  CHECK(seen.final->usage.completion_tokens == 0);
}

void check_all_freed(Engine& engine) {
  EngineStats s = engine.stats();
  CHECK(s.scheduler.running == 0);
  CHECK(s.scheduler.waiting == 0);
  CHECK(s.scheduler.kv_usage == 0.0);
  CHECK(s.pending_image_bytes == 0);
}

}  // namespace

TEST_CASE("a request cancelled while queued for preparation ends at once and never runs",
          "[engine][lifecycle]") {
  auto engine = make_engine(base_options());
  // The one worker is busy with this for several decodes.
  auto blocker = engine->submit(image_request(big_page(), 2, 2));
  REQUIRE(blocker.ok());
  GenerateRequest r = image_request(small_page(), 1, 200);
  auto target = engine->submit(r);
  REQUIRE(target.ok());
  CHECK(engine->stats().pending_image_bytes ==
        2 * pending_image_bytes(big_page().size()) + pending_image_bytes(small_page().size()));
  (*target)->cancel();
  // Ended by the cancel itself, not when its task's turn comes.
  Seen seen;
  read(**target, seen, milliseconds(0));
  REQUIRE(seen.final.has_value());
  check_cancelled_without_output(seen);
  CHECK_FALSE(seen.accepted);
  EngineStats s = engine->stats();
  CHECK(s.requests_cancelled == 1);
  CHECK(s.pending_image_bytes == 2 * pending_image_bytes(big_page().size()));  // its bytes freed
  (*target)->cancel();  // a second cancel changes nothing

  Seen b = read_to_end(**blocker);
  CHECK(b.final->error.ok());
  REQUIRE(
      eventually(*engine, [](const EngineStats& st) { return st.queued_for_preparation == 0; }));
  s = engine->stats();
  CHECK(s.requests_cancelled == 1);
  CHECK(s.requests_finished == 1);
  CHECK(s.images_encoded + s.image_cache_hits ==
        2);  // the cancelled page never reached the encoder
  CHECK_FALSE((*target)->next(milliseconds(0)).has_value());
  check_all_freed(*engine);
}

TEST_CASE("a request cancelled while its images are decoded stops between images",
          "[engine][lifecycle]") {
  auto engine = make_engine(base_options());
  const double one = decode_ms(big_page());
  constexpr int kImages = 8;
  auto target = engine->submit(image_request(big_page(), kImages, 200));
  REQUIRE(target.ok());
  std::this_thread::sleep_for(milliseconds(static_cast<int>(1.5 * one)));  // inside image 2
  const auto cancelled_at = Clock::now();
  (*target)->cancel();
  Seen seen = read_to_end(**target);
  const double to_final = ms_since(cancelled_at);
  INFO("one decode " << one << " ms; cancel -> final " << to_final << " ms");
  check_cancelled_without_output(seen);
  CHECK_FALSE(seen.accepted);
  // The image in progress may finish; the other five or six are never decoded.
  CHECK(to_final < 3.5 * one);
  EngineStats s = engine->stats();
  CHECK(s.requests_cancelled == 1);
  CHECK(s.images_encoded == 0);
  check_all_freed(*engine);
}

TEST_CASE("a request cancelled on its way to the engine thread is never admitted",
          "[engine][lifecycle]") {
  EngineOptions o = base_options();
  o.vision_threads = 2;  // B's preparation does not wait for A's
  auto engine = make_engine(o);
  // A's first step encodes a 6-tile page: about a second during which the engine thread does
  // not look at its inbox.
  auto a = engine->submit(image_request(big_page(), 1, 3));
  REQUIRE(a.ok());
  Seen sa;
  while (!sa.accepted) read_one(**a, sa, milliseconds(1));
  std::this_thread::sleep_for(milliseconds(30));
  auto b = engine->submit(text_request(50));
  REQUIRE(b.ok());
  Seen sb;
  while (!sb.accepted && !sb.final) read_one(**b, sb, milliseconds(1));
  (*b)->cancel();
  read(**a, sa, milliseconds(0));
  const bool engine_was_busy = sa.tokens.empty();  // A's first step had not ended
  sb = read_to_end(**b, sb);
  check_cancelled_without_output(sb);
  if (!engine_was_busy) WARN("A's first step ended before B's cancel: the inbox path was not hit");
  CHECK(engine_was_busy);
  CHECK(read_to_end(**a, sa).final->error.ok());
  EngineStats s = engine->stats();
  CHECK(s.requests_cancelled == 1);
  CHECK(s.requests_finished == 1);
  check_all_freed(*engine);
}

TEST_CASE("a request cancelled while waiting for a sequence slot ends without running",
          "[engine][lifecycle]") {
  EngineOptions o = base_options();
  o.scheduler.max_num_seqs = 1;
  auto engine = make_engine(o);
  auto a = engine->submit(text_request(1500));
  REQUIRE(a.ok());
  Seen sa;
  while (sa.tokens.empty()) read_one(**a, sa, milliseconds(10));
  auto b = engine->submit(text_request(50));
  REQUIRE(b.ok());
  REQUIRE(eventually(*engine, [](const EngineStats& s) { return s.scheduler.waiting == 1; }));
  (*b)->cancel();
  Seen sb = read_to_end(**b, {}, milliseconds(5000));
  check_cancelled_without_output(sb);
  CHECK(sb.accepted);
  read(**a, sa, milliseconds(0));
  CHECK_FALSE(sa.final.has_value());  // A still runs: B really was waiting
  (*a)->cancel();
  Seen rest = read_to_end(**a, sa);
  CHECK(rest.final->finish_reason == FinishReason::kCancelled);
  EngineStats s = engine->stats();
  CHECK(s.requests_cancelled == 2);
  CHECK(s.requests_finished == 0);
  check_all_freed(*engine);
}

TEST_CASE("a running request stops generating once its cancel is seen", "[engine][lifecycle]") {
  auto engine = make_engine(base_options());
  auto a = engine->submit(image_request(small_page(), 1, 1500));
  REQUIRE(a.ok());
  Seen seen;
  while (seen.tokens.size() < 3) read_one(**a, seen, milliseconds(10));
  const auto cancelled_at = Clock::now();
  (*a)->cancel();
  read(**a, seen, milliseconds(100));
  REQUIRE(seen.final.has_value());
  INFO("cancel -> final " << ms_since(cancelled_at) << " ms");
  CHECK(seen.final->finish_reason == FinishReason::kCancelled);
  CHECK(seen.final->usage.completion_tokens == static_cast<int64_t>(seen.tokens.size()));
  CHECK(seen.final->usage.completion_tokens < 1500);
  // Stats read right after the final event already show everything freed.
  EngineStats s = engine->stats();
  CHECK(s.requests_cancelled == 1);
  CHECK(s.generated_tokens == seen.tokens.size());
  check_all_freed(*engine);
  // No token after the final event, however long one waits.
  CHECK_FALSE((*a)->next(milliseconds(200)).has_value());
  CHECK(engine->stats().generated_tokens == seen.tokens.size());
}

TEST_CASE("drain with a preparation backlog ends every request by its deadline",
          "[engine][lifecycle]") {
  EngineOptions o = base_options();
  auto engine = make_engine(o);
  // Finishes normally before the deadline: drain leaves it alone.
  auto quick = engine->submit(text_request(3));
  REQUIRE(quick.ok());
  Seen sq = read_to_end(**quick);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int i = 0; i < 16; ++i) {  // several seconds of decoding on the single worker
    auto s = engine->submit(image_request(big_page(), 2, 100));
    REQUIRE(s.ok());
    streams.push_back(*s);
  }
  std::this_thread::sleep_for(milliseconds(50));
  const auto started = Clock::now();
  engine->drain(milliseconds(1500));
  const double took = ms_since(started);
  INFO("drain took " << took << " ms");
  CHECK(took < 1500 + 1000);
  CHECK(engine->state() == EngineState::kStopped);
  int shut_down = 0;
  for (auto& s : streams) {
    Seen seen;
    read(*s, seen, milliseconds(0));  // already there: no waiting
    REQUIRE(seen.final.has_value());
    CHECK(seen.finals == 1);
    if (seen.final->finish_reason == FinishReason::kCancelled) {
      CHECK(seen.final->error.code() == StatusCode::kUnavailable);
      CHECK(seen.final->error.message() == "the server is shutting down");
      ++shut_down;
    }
  }
  CHECK(shut_down >= 12);
  CHECK(sq.final->finish_reason == FinishReason::kLength);
  CHECK(sq.final->error.ok());
  EngineStats s = engine->stats();
  CHECK(s.requests_cancelled == static_cast<uint64_t>(shut_down));
  CHECK(s.pending_image_bytes == 0);
  CHECK_FALSE(engine->submit(text_request(3)).ok());
  // Destruction waits for the step drain left running and the decode in progress; the queued
  // preparation tasks that run then find their requests ended and do nothing.
  engine.reset();
  for (auto& s : streams) CHECK_FALSE(s->next(milliseconds(0)).has_value());
}

TEST_CASE("drain returns as soon as nothing is left", "[engine][lifecycle]") {
  auto engine = make_engine(base_options());
  auto s = engine->submit(text_request(4));
  REQUIRE(s.ok());
  const auto started = Clock::now();
  engine->drain(milliseconds(30000));
  CHECK(ms_since(started) < 5000);
  Seen seen;
  read(**s, seen, milliseconds(0));
  REQUIRE(seen.final.has_value());
  CHECK(seen.final->finish_reason == FinishReason::kLength);
  CHECK(seen.tokens.size() == 4);
}

TEST_CASE("the pending-image budget refuses past it and frees once images are encoded",
          "[engine][lifecycle]") {
  EngineOptions o = base_options();
  const int64_t one = pending_image_bytes(small_page().size());
  o.max_pending_image_bytes = 2 * one + one / 2;  // room for two images
  auto engine = make_engine(o);
  auto a = engine->submit(image_request(small_page(), 1, 1500));
  auto b = engine->submit(image_request(small_page(), 1, 1500));
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(engine->stats().pending_image_bytes <= o.max_pending_image_bytes);
  auto refused = engine->submit(image_request(small_page(), 1, 5));
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == StatusCode::kResourceExhausted);
  CHECK(refused.status().message().find("retry later") != std::string::npos);
  CHECK(engine->submit(text_request(2)).ok());  // no image: nothing to charge
  // A request larger than the whole budget is refused too, even alone.
  CHECK(engine->submit(image_request(small_page(), 3, 5)).status().code() ==
        StatusCode::kResourceExhausted);

  // Once a request has produced a token its pixels are encoded and its charge is gone, while it
  // keeps running.
  Seen sa, sb;
  while (sa.tokens.empty()) read_one(**a, sa, milliseconds(10));
  while (sb.tokens.empty()) read_one(**b, sb, milliseconds(10));
  CHECK(engine->stats().pending_image_bytes == 0);
  auto c = engine->submit(image_request(small_page(), 1, 3));
  REQUIRE(c.ok());
  CHECK(read_to_end(**c).final->error.ok());
  (*a)->cancel();
  (*b)->cancel();
  read_to_end(**a, sa);
  read_to_end(**b, sb);
  check_all_freed(*engine);
}

TEST_CASE("a cancel or a failure returns the request's budget", "[engine][lifecycle]") {
  EngineOptions o = base_options();
  o.max_pending_image_bytes = 4 * pending_image_bytes(big_page().size());
  auto engine = make_engine(o);
  auto blocker = engine->submit(image_request(big_page(), 2, 2));
  auto queued = engine->submit(image_request(big_page(), 2, 2));
  REQUIRE(blocker.ok());
  REQUIRE(queued.ok());
  CHECK_FALSE(engine->submit(image_request(big_page(), 1, 2)).ok());
  (*queued)->cancel();
  CHECK(engine->stats().pending_image_bytes == 2 * pending_image_bytes(big_page().size()));
  GenerateRequest bad = image_request(big_page(), 1, 2);
  bad.images.push_back(std::string("not an image"));
  auto failing = engine->submit(bad);
  REQUIRE(failing.ok());
  CHECK(read_to_end(**failing).final->error.code() == StatusCode::kInvalidArgument);
  read_to_end(**blocker);
  REQUIRE(eventually(*engine, [](const EngineStats& s) { return s.queued_for_preparation == 0; }));
  EngineStats s = engine->stats();
  CHECK(s.requests_failed == 1);
  CHECK(s.requests_cancelled == 1);
  check_all_freed(*engine);
}

TEST_CASE("cache salts isolate prefix-cache and image-cache sharing", "[engine][lifecycle]") {
  EngineOptions o = base_options();
  o.prefix_caching = true;
  auto engine = make_engine(o);
  auto cached_tokens = [&](const std::string& salt) {
    GenerateRequest r = image_request(small_page(), 1, 2);
    r.cache_salt = salt;
    auto s = engine->submit(r);
    REQUIRE(s.ok());
    Seen seen = read_to_end(**s);
    REQUIRE(seen.final->error.ok());
    return seen.final->usage.cached_tokens;
  };
  CHECK(cached_tokens("") == 0);
  CHECK(cached_tokens("alice") == 0);  // the shared cache has the page; alice does not see it
  const uint64_t encoded_before = engine->stats().images_encoded;
  CHECK(cached_tokens("bob") == 0);
  CHECK(engine->stats().images_encoded == encoded_before + 1);  // encoded again, not shared
  CHECK(cached_tokens("alice") > 0);                            // equal salts share as usual
  CHECK(cached_tokens("") > 0);
}

// Item 13 of issue #16: kv_usage read right after the last final event used to show the blocks
// of a request that had already released them (the stats were published after the event).
TEST_CASE("stats read right after a final event already count its blocks as free",
          "[engine][lifecycle]") {
  EngineOptions o = base_options();
  o.vision_threads = 2;
  auto engine = make_engine(o);
  int stale = 0;
  for (int round = 0; round < 150; ++round) {
    std::vector<std::shared_ptr<RequestStream>> streams;
    for (int i = 0; i < 4; ++i) {
      GenerateRequest r = text_request(1 + (round + i) % 3);
      r.prompt = "Hi" + std::string(static_cast<size_t>(i), '!');
      streams.push_back(*engine->submit(r));
    }
    for (auto& s : streams) read_to_end(*s);
    EngineStats st = engine->stats();
    if (st.scheduler.kv_usage != 0.0 || st.scheduler.running != 0) ++stale;
  }
  CHECK(stale == 0);
}

TEST_CASE("an idle engine hands cached memory back", "[engine][lifecycle]") {
  EngineOptions o = base_options();
  o.idle_memory_release_ms = 200;
  auto engine = make_engine(o);
  CHECK(engine->stats().idle_memory_releases == 0);  // nothing to hand back before any work
  auto s = engine->submit(image_request(big_page(), 1, 2));
  REQUIRE(s.ok());
  read_to_end(**s);
  // The page's pixel batch alone is tens of MB of large tensors, cached after the step.
  REQUIRE(eventually(
      *engine, [&](const EngineStats& st) { return st.idle_memory_releases == 1; },
      milliseconds(5000)));
  CHECK(weights::cpu_allocator_stats().cached_bytes == 0);
  std::this_thread::sleep_for(milliseconds(500));
  CHECK(engine->stats().idle_memory_releases == 1);  // once per idle spell, not every 200 ms
  // Busy again, then idle again: released once more.
  auto t = engine->submit(image_request(small_page(), 1, 2));
  REQUIRE(t.ok());
  read_to_end(**t);
  REQUIRE(eventually(
      *engine, [&](const EngineStats& st) { return st.idle_memory_releases == 2; },
      milliseconds(5000)));
}

TEST_CASE("a request preempted after its pixels are gone recomputes from kept embeddings",
          "[engine][lifecycle]") {
  EngineOptions o = base_options();
  o.num_kv_blocks = 40;  // two image prompts (~17 blocks each) fit, their outputs do not
  o.prefix_caching = false;
  auto run = [&](int64_t blocks) {
    o.num_kv_blocks = blocks;
    auto engine = make_engine(o);
    std::vector<std::shared_ptr<RequestStream>> streams;
    for (int i = 0; i < 2; ++i) {
      GenerateRequest r = image_request(page_png(300 + 20 * i, 400, i), 1, 120);
      r.sampling.seed = 7;
      streams.push_back(*engine->submit(r));
    }
    std::vector<std::vector<int32_t>> out;
    for (auto& s : streams) {
      Seen seen = read_to_end(*s);
      REQUIRE(seen.final->error.ok());
      CHECK(seen.tokens.size() == 120);
      out.push_back(seen.tokens);
    }
    EngineStats st = engine->stats();
    check_all_freed(*engine);
    return std::make_pair(out, st.scheduler.preemptions);
  };
  auto [tight, preemptions] = run(40);
  CHECK(preemptions > 0);
  auto [roomy, none] = run(600);
  CHECK(none == 0);
  // Tokens are not compared with the roomy run: on the random model the two runs part after a
  // few tokens (by the arithmetic, before any preemption; not verified): an open question.
  CHECK(tight.size() == roomy.size());
}

TEST_CASE("max_tokens near INT64_MAX is over the context, not a wrapped sum",
          "[engine][lifecycle]") {
  auto engine = make_engine(base_options());
  for (int64_t max_tokens : {std::numeric_limits<int64_t>::max(),
                             std::numeric_limits<int64_t>::max() - 1, int64_t{1} << 62}) {
    GenerateRequest r = text_request(1);
    r.sampling.max_tokens = max_tokens;
    auto stream = engine->submit(std::move(r));
    REQUIRE(stream.ok());
    Seen seen = read_to_end(**stream);
    INFO(max_tokens);
    CHECK(seen.tokens.empty());
    CHECK(seen.final->finish_reason == FinishReason::kError);
    CHECK(seen.final->error.code() == dsocr::StatusCode::kOutOfRange);
    CHECK(seen.final->error.message().starts_with(kContextLengthExceeded));
  }
  check_all_freed(*engine);
}

TEST_CASE("an engine whose model cannot fit the CPU memory budget refuses to start",
          "[engine][lifecycle]") {
  EngineOptions o = base_options();
  o.num_kv_blocks = 0;  // sized by the plan
  o.cpu_memory_budget = 64ll << 20;  // less than the process holds already
  auto refused = Engine::create(o);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == StatusCode::kResourceExhausted);
  CHECK(refused.status().message().find("--cpu-memory-budget") != std::string::npos);
  // A budget with room: the KV cache is sized within it.
  o.cpu_memory_budget = process_resident_bytes() + (1ll << 30);
  auto engine = Engine::create(o);
  REQUIRE(engine.ok());
  const EngineStats stats = (*engine)->stats();
  CHECK(stats.kv_blocks > 0);
}

TEST_CASE("a draining engine takes only later pages of documents in flight",
          "[engine][lifecycle]") {
  auto engine = make_engine(base_options());
  GenerateRequest running;
  running.prompt = "Hi";
  running.sampling.max_tokens = 400;
  running.sampling.ignore_eos = true;
  auto first = engine->submit(running);
  REQUIRE(first.ok());
  std::thread drainer([&] { engine->drain(std::chrono::seconds(60)); });
  while (engine->state() != EngineState::kDraining)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  GenerateRequest page;
  page.prompt = "Hi";
  page.sampling.max_tokens = 3;
  page.sampling.ignore_eos = true;
  auto fresh = engine->submit(page);
  CHECK(fresh.status().code() == StatusCode::kUnavailable);
  page.later_page = true;
  auto later = engine->submit(page);
  REQUIRE(later.ok());
  std::optional<StreamEvent> last;
  while (auto e = (*later)->next(std::chrono::seconds(60))) last = std::move(e);
  REQUIRE(last);
  CHECK(last->finish_reason == FinishReason::kLength);
  (*first)->cancel();
  drainer.join();
  CHECK(engine->state() == EngineState::kStopped);
}

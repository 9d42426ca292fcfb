// The engine end to end on the tiny random model: batching and paging must not change results.
//
//  * 16 different requests (images or none, different prompt lengths and limits) run together
//    with chunked prefill, interleaved decodes and prefix caching each produce exactly the tokens
//    they produce alone (a different chunking, no sharing).
//  * 32 concurrent requests with 8 cancelled midway: the others still match their solo output,
//    and every KV block is free at the end.
// Where two candidates tie within float error the batched token may differ from the solo one;
// such a step is accepted when both runs' logits agree and rank the two tokens equal.
#include <catch2/catch.hpp>

#include <filesystem>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <thread>

#include "engine/engine.h"
#include "tests/engine/engine_test_util.h"
#include "tests/vision/test_pdf.h"
#include "vision/pdf_document.h"

using namespace dsocr;
using namespace dsocr::engine;
namespace fs = std::filesystem;

namespace {

using dsocr::engine::testing::page_png;
using dsocr::engine::testing::tiny_model;

std::vector<GenerateRequest> make_requests(int n) {
  const std::vector<std::string> pages = {page_png(800, 600, 1), page_png(500, 300, 2),
                                          page_png(300, 900, 3)};
  const std::vector<std::string> prompts = {"Free OCR.",
                                            "<|grounding|>Convert the document to markdown.",
                                            "Describe this image in detail please.", "Hi"};
  std::vector<GenerateRequest> out;
  for (int i = 0; i < n; ++i) {
    GenerateRequest r;
    r.request_id = "r" + std::to_string(i);
    r.prompt = prompts[i % prompts.size()] + std::string(i % 5, '!');
    if (i % 4 != 3) r.images.push_back(pages[i % pages.size()]);
    if (i % 7 == 5) r.images.push_back(pages[(i + 1) % pages.size()]);  // two images
    r.sampling.max_tokens = 6 + (i * 5) % 30;
    r.return_logits = true;
    out.push_back(std::move(r));
  }
  return out;
}

struct Result {
  std::vector<ImageSize> image_sizes;  // from the accepted event
  std::vector<int32_t> ids;
  std::vector<std::vector<float>> logits;
  StreamEvent final;
  size_t events = 0;
  bool first_accepted = false;  // the first event was the bare "accepted" one
};

std::unique_ptr<Engine> make_engine(bool batched) {
  EngineOptions o;
  o.model_dir = tiny_model();
  o.device = "cpu";
  o.num_kv_blocks = batched ? 1200 : 256;
  o.prefix_caching = batched;
  o.scheduler.max_num_seqs = batched ? 32 : 1;
  o.scheduler.max_num_batched_tokens = batched ? 192 : 4096;
  o.scheduler.max_image_tokens_per_step = batched ? 600 : 10000;
  o.scheduler.max_model_len = 2048;
  auto e = Engine::create(o);
  REQUIRE(e.ok());
  return std::move(e).value();
}

// Adds one event to `r`; true when it was the final one.
bool absorb(Result& r, StreamEvent e) {
  if (r.events++ == 0) r.first_accepted = e.accepted && e.token_ids.empty() && !e.finished;
  if (e.accepted) r.image_sizes = e.image_sizes;
  r.ids.insert(r.ids.end(), e.token_ids.begin(), e.token_ids.end());
  if (!e.logits.empty()) r.logits.push_back(e.logits);
  if (!e.finished) return false;
  r.final = std::move(e);
  return true;
}

Result drain(RequestStream& stream) {
  Result r;
  while (true) {
    auto e = stream.next(std::chrono::milliseconds(100));
    if (e && absorb(r, std::move(*e))) return r;
  }
}

std::vector<Result> run_solo(const std::vector<GenerateRequest>& requests) {
  auto engine = make_engine(false);
  std::vector<Result> out;
  for (const auto& r : requests) {
    auto s = engine->submit(r);
    REQUIRE(s.ok());
    out.push_back(drain(**s));
  }
  return out;
}

// Same tokens, except at a float tie; returns a description of the first real difference.
std::string compare(const Result& batched, const Result& solo) {
  const size_t n = std::min(batched.ids.size(), solo.ids.size());
  for (size_t k = 0; k < n; ++k) {
    if (batched.ids[k] == solo.ids[k]) continue;
    const auto& a = batched.logits[k];
    const auto& b = solo.logits[k];
    float scale = 0, diff = 0;
    for (size_t v = 0; v < a.size(); ++v) {
      scale = std::max(scale, std::fabs(b[v]));
      diff = std::max(diff, std::fabs(a[v] - b[v]));
    }
    const float tol = 1e-4f * scale;
    const bool tie = diff <= tol && std::fabs(a[batched.ids[k]] - a[solo.ids[k]]) <= tol;
    if (tie) return "";  // an exact tie: later tokens legitimately differ
    return "step " + std::to_string(k) + ": " + std::to_string(batched.ids[k]) + " vs " +
           std::to_string(solo.ids[k]) + " (logits differ by " + std::to_string(diff) + ")";
  }
  if (batched.ids.size() != solo.ids.size())
    return "lengths differ: " + std::to_string(batched.ids.size()) + " vs " +
           std::to_string(solo.ids.size());
  return "";
}

}  // namespace

TEST_CASE("16 requests batched together produce their solo outputs", "[engine][e2e]") {
  auto requests = make_requests(16);
  std::vector<Result> solo = run_solo(requests);
  auto engine = make_engine(true);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const auto& r : requests) {
    auto s = engine->submit(r);
    REQUIRE(s.ok());
    streams.push_back(*s);
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    Result batched = drain(*streams[i]);
    INFO("request " << i);
    REQUIRE(batched.final.error.ok());
    CHECK(batched.final.usage.prompt_tokens == solo[i].final.usage.prompt_tokens);
    CHECK(batched.final.usage.image_tokens == solo[i].final.usage.image_tokens);
    CHECK(compare(batched, solo[i]) == "");
  }
  EngineStats stats = engine->stats();
  CHECK(stats.scheduler.prefix.hit_tokens > 0);  // identical image prompts shared blocks
  CHECK(stats.image_cache_hits + stats.images_encoded >= 12);
  CHECK(stats.scheduler.kv_usage == 0.0);
}

TEST_CASE("requests are accepted first and report usage and encode time", "[engine][e2e]") {
  auto requests = make_requests(8);
  auto engine = make_engine(true);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const auto& r : requests) streams.push_back(*engine->submit(r));
  int64_t image_tokens = 0;
  int with_encode_time = 0;
  for (size_t i = 0; i < streams.size(); ++i) {
    INFO("request " << i);
    Result r = drain(*streams[i]);
    REQUIRE(r.final.error.ok());
    CHECK(r.first_accepted);
    image_tokens += r.final.usage.image_tokens;
    if (r.final.timings.encode_ms > 0) ++with_encode_time;
    if (requests[i].images.empty()) CHECK(r.final.timings.encode_ms == 0);
  }
  CHECK(with_encode_time > 0);
  EngineStats stats = engine->stats();
  CHECK(stats.image_tokens == static_cast<uint64_t>(image_tokens));
  CHECK(stats.vision_encode_seconds > 0);
}

TEST_CASE("32 concurrent requests, 8 cancelled midway: the rest match solo, no KV leaks",
          "[engine][e2e]") {
  auto requests = make_requests(16);
  for (auto& r : requests) r.sampling.max_tokens += 10;
  for (int i = 0; i < 16; ++i) requests.push_back(requests[i]);  // 16..31 repeat 0..15
  std::vector<Result> solo =
      run_solo(std::vector<GenerateRequest>(requests.begin(), requests.begin() + 16));
  auto engine = make_engine(true);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const auto& r : requests) {
    auto s = engine->submit(r);
    REQUIRE(s.ok());
    streams.push_back(*s);
  }
  std::vector<Result> results(streams.size());
  std::vector<bool> done(streams.size(), false), cancelled(streams.size(), false);
  size_t remaining = streams.size();
  while (remaining > 0) {
    for (size_t i = 0; i < streams.size(); ++i) {
      if (done[i]) continue;
      auto e = streams[i]->next(std::chrono::milliseconds(1));
      if (!e) continue;
      if (absorb(results[i], std::move(*e))) {
        done[i] = true;
        --remaining;
      } else if (i % 4 == 1 && !cancelled[i] && results[i].ids.size() >= 2) {
        streams[i]->cancel();
        cancelled[i] = true;
      }
    }
  }
  int cancels_seen = 0;
  for (size_t i = 0; i < streams.size(); ++i) {
    INFO("request " << i);
    if (cancelled[i] && results[i].final.finish_reason == FinishReason::kCancelled) {
      ++cancels_seen;
      continue;
    }
    REQUIRE(results[i].final.error.ok());
    // Requests 16..31 repeat 0..15 (same prompt and images, larger prefix-cache share).
    CHECK(compare(results[i], solo[i % 16]) == "");
  }
  CHECK(cancels_seen >= 4);  // some may finish before the cancel lands
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EngineStats stats = engine->stats();
  CHECK(stats.scheduler.running == 0);
  CHECK(stats.scheduler.waiting == 0);
  CHECK(stats.scheduler.kv_usage == 0.0);
  CHECK(stats.requests_cancelled == static_cast<uint64_t>(cancels_seen));
}

TEST_CASE("engine rejects bad requests with clear statuses", "[engine][e2e]") {
  auto engine = make_engine(false);
  GenerateRequest r;
  r.prompt = "hello";
  r.sampling.top_p = 2;
  auto bad = engine->submit(r);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().message().find("top_p") != std::string::npos);

  r.sampling.top_p = 1;
  r.images.push_back(std::string("definitely not an image"));
  auto s = engine->submit(r);
  REQUIRE(s.ok());
  Result res = drain(**s);
  CHECK(res.final.error.code() == StatusCode::kInvalidArgument);
  CHECK(res.final.error.message().find("image 1") != std::string::npos);

  GenerateRequest longer;
  longer.prompt = "hello";
  longer.sampling.max_tokens = 5000;  // over max_model_len 2048
  auto s2 = engine->submit(longer);
  REQUIRE(s2.ok());
  Result res2 = drain(**s2);
  CHECK(res2.final.error.message().find("context_length_exceeded") != std::string::npos);
}

TEST_CASE("a request larger than the whole KV cache fails instead of waiting forever",
          "[engine][e2e]") {
  EngineOptions o;
  o.model_dir = tiny_model();
  o.device = "cpu";
  o.num_kv_blocks = 4;  // 64 tokens; an image prompt needs 260+
  o.scheduler.max_model_len = 2048;
  auto engine = Engine::create(o);
  REQUIRE(engine.ok());
  GenerateRequest r = make_requests(1)[0];
  REQUIRE_FALSE(r.images.empty());
  auto s = (*engine)->submit(r);
  REQUIRE(s.ok());
  Result res = drain(**s);
  CHECK(res.final.error.code() == StatusCode::kResourceExhausted);
  GenerateRequest small;
  small.prompt = "Hi";
  small.sampling.max_tokens = 3;
  small.sampling.ignore_eos = true;
  auto s2 = (*engine)->submit(small);  // the engine keeps serving
  REQUIRE(s2.ok());
  Result ok = drain(**s2);
  CHECK(ok.final.error.ok());
  CHECK(ok.ids.size() == 3);
}

TEST_CASE("a PDF page is rendered on the workers and read exactly like its render as a PNG",
          "[engine][e2e]") {
  // Page 2 (Letter, with a filled box and a line) of a three-page document.
  using dsocr::testing::TestPage;
  const std::string pdf = dsocr::testing::make_pdf(
      {TestPage(200, 100), TestPage(612, 792, 0, "0 0 1 rg 72 600 300 120 re f 0 G 4 w 72 500 m 540 300 l S"),
       TestPage(300, 200, 90)});
  auto document = Document::open_pdf(pdf, {});
  REQUIRE(document.ok());
  REQUIRE((*document)->pages().size() == 3);
  CHECK((*document)->pages()[1].width == 1224);
  CHECK((*document)->pages()[1].height == 1584);
  CHECK((*document)->pages()[2].width == 400);  // rotated
  CHECK((*document)->pages()[2].height == 600);

  auto render = vision::PdfDocument::open(pdf);
  REQUIRE(render.ok());
  auto page = (*render)->render_page(2);
  REQUIRE(page.ok());
  cv::Mat rgb(page->height, page->width, CV_8UC3, page->pixels.data()), bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  std::vector<uchar> png;
  REQUIRE(cv::imencode(".png", bgr, png));

  auto engine = make_engine(false);
  const auto run = [&](ImageSource image) {
    GenerateRequest r;
    r.prompt = "<image>\n<|grounding|>Convert the document to markdown.";
    r.images.push_back(std::move(image));
    r.sampling.max_tokens = 8;
    r.sampling.ignore_eos = true;
    auto s = engine->submit(std::move(r));
    REQUIRE(s.ok());
    return drain(**s);
  };
  Result from_pdf = run(ImageSource::pdf_page(*document, 2));
  Result from_png = run(std::string(png.begin(), png.end()));
  REQUIRE(from_pdf.final.error.ok());
  REQUIRE(from_png.final.error.ok());
  REQUIRE(from_pdf.image_sizes.size() == 1);
  CHECK(from_pdf.image_sizes[0].width == 1224);
  CHECK(from_pdf.image_sizes[0].height == 1584);
  REQUIRE(from_png.image_sizes.size() == 1);
  CHECK(from_png.image_sizes[0].width == 1224);
  CHECK(from_pdf.ids.size() == 8);
  CHECK(from_pdf.ids == from_png.ids);
  CHECK(from_pdf.final.usage.prompt_tokens == from_png.final.usage.prompt_tokens);
  CHECK(from_pdf.final.usage.image_tokens == from_png.final.usage.image_tokens);
}

// sample_tokens: greedy ties, penalties, n-gram bans, top-k/top-p/min-p and per-request seeds.
#include <catch2/catch.hpp>

#include <ATen/ATen.h>

#include <torch/cuda.h>

#include <limits>

#include "engine/sampler.h"

using namespace dsocr::engine;

namespace {

std::vector<int32_t> sample_one(std::vector<float> logits, const SamplingParams& p,
                                std::vector<int32_t> tokens = {}, int64_t prompt_len = 0,
                                uint64_t seed = 0) {
  at::Tensor t = at::tensor(logits).unsqueeze(0);
  std::mt19937_64 rng(seed), same(seed);
  SamplingRow row{&p, tokens, prompt_len, &rng}, again{&p, tokens, prompt_len, &same};
  std::vector<int32_t> host = sample_tokens(t, {&row, 1});
  // The tensor path (the GPU's, here on CPU tensors) follows the same rules.
  CHECK(sample_tokens_on_device(t, {&again, 1}) == host);
  return host;
}

SamplingParams greedy() {
  SamplingParams p;
  p.ngram_size = 0;
  return p;
}

}  // namespace

TEST_CASE("greedy picks the first maximum and leaves the caller's logits alone", "[sampler]") {
  at::Tensor logits = at::tensor(std::vector<float>{1, 5, 5, 2}).unsqueeze(0);
  SamplingParams p = greedy();
  p.repetition_penalty = 2.0;
  std::vector<int32_t> tokens = {1};
  std::mt19937_64 rng(0);
  SamplingRow row{&p, tokens, 1, &rng};
  CHECK(sample_tokens(logits, {&row, 1}) == std::vector<int32_t>{2});  // 1 penalised to 2.5
  CHECK(logits[0][1].item<float>() == 5.0f);                           // raw logits untouched
  CHECK(sample_one({1, 5, 5, 2}, greedy()) == std::vector<int32_t>{1});
}

TEST_CASE("frequency and presence penalties count output tokens only", "[sampler]") {
  SamplingParams p = greedy();
  p.frequency_penalty = 1.0;
  // token 0 appears twice in the output, token 1 only in the prompt.
  CHECK(sample_one({3, 2.5f, 0}, p, {1, 0, 0}, 1) == std::vector<int32_t>{1});
  p.frequency_penalty = 0;
  p.presence_penalty = 0.4f;
  CHECK(sample_one({3, 2.5f, 0}, p, {1, 0, 0}, 1) == std::vector<int32_t>{0});
}

TEST_CASE("the no-repeat n-gram ban applies to generated tokens", "[sampler]") {
  SamplingParams p = greedy();
  p.ngram_size = 2;
  p.ngram_window = 10;
  p.ngram_whitelist = {};
  // generated: 3 1 ... 3 -> "3 1" would repeat: 1 is banned, 2 wins.
  CHECK(sample_one({0, 9, 8}, p, {7, 3, 1, 3}, 1) == std::vector<int32_t>{2});
  // The same tokens in the prompt do not count.
  CHECK(sample_one({0, 9, 8}, p, {3, 1, 3}, 3) == std::vector<int32_t>{1});
  p.ngram_whitelist = {1};
  CHECK(sample_one({0, 9, 8}, p, {7, 3, 1, 3}, 1) == std::vector<int32_t>{1});
}

TEST_CASE("top-k 1, tiny top-p and large min-p reduce to greedy", "[sampler]") {
  std::vector<float> logits = {0.1f, 2.0f, 1.9f, -1.0f};
  SamplingParams p = greedy();
  p.temperature = 1.0;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    SamplingParams k = p;
    k.top_k = 1;
    CHECK(sample_one(logits, k, {}, 0, seed)[0] == 1);
    SamplingParams t = p;
    t.top_p = 0.01;
    CHECK(sample_one(logits, t, {}, 0, seed)[0] == 1);
    SamplingParams m = p;
    m.min_p = 0.99;
    CHECK(sample_one(logits, m, {}, 0, seed)[0] == 1);
  }
}

TEST_CASE("seeded sampling is reproducible and follows the distribution", "[sampler]") {
  SamplingParams p = greedy();
  p.temperature = 1.0;
  std::vector<float> logits = {0, 0, std::log(2.0f)};  // probabilities 1/4, 1/4, 1/2
  std::vector<int> counts(3, 0);
  std::mt19937_64 rng(42), again(42);
  at::Tensor t = at::tensor(logits).unsqueeze(0);
  for (int i = 0; i < 4000; ++i) {
    SamplingRow a{&p, {}, 0, &rng}, b{&p, {}, 0, &again};
    int32_t x = sample_tokens(t, {&a, 1})[0];
    REQUIRE(x == sample_tokens(t, {&b, 1})[0]);
    ++counts[x];
  }
  CHECK(counts[2] > 1800);
  CHECK(counts[2] < 2200);
  CHECK(counts[0] > 850);
}

// Mixed batches through both paths: greedy and sampled rows, every penalty, n-gram bans, ties
// and fully banned rows; the tensor path (the GPU's) must pick what the host path picks.
namespace {

void compare_paths(at::Device device) {
  std::mt19937_64 setup(7);
  const int64_t vocab = 300;
  for (int trial = 0; trial < 40; ++trial) {
    const int64_t rows = 1 + static_cast<int64_t>(setup() % 9);
    at::manual_seed(trial);
    at::Tensor logits = at::randn({rows, vocab}) * 3;
    if (trial % 5 == 0) logits.slice(1, 0, 10).fill_(4.0);  // ties at the top
    std::vector<SamplingParams> params(rows);
    std::vector<std::vector<int32_t>> tokens(rows);
    for (int64_t i = 0; i < rows; ++i) {
      SamplingParams& p = params[i];
      p.temperature = setup() % 2 ? 0.0 : 0.3 + (setup() % 10) / 5.0;
      p.top_k = setup() % 3 == 0 ? static_cast<int64_t>(setup() % 50) : 0;
      p.top_p = setup() % 3 == 0 ? 0.5 + (setup() % 50) / 100.0 : 1.0;
      p.min_p = setup() % 4 == 0 ? (setup() % 30) / 100.0 : 0.0;
      p.repetition_penalty = setup() % 3 == 0 ? 1.3 : 1.0;
      p.frequency_penalty = setup() % 4 == 0 ? 0.5 : 0.0;
      p.presence_penalty = setup() % 4 == 0 ? 0.7 : 0.0;
      p.ngram_size = setup() % 2 ? 3 : 0;
      p.ngram_window = 50;
      // A prompt, then output that repeats itself (so n-gram bans fire).
      for (int j = 0; j < 20; ++j) tokens[i].push_back(static_cast<int32_t>(setup() % vocab));
      for (int j = 0; j < 30; ++j) tokens[i].push_back(static_cast<int32_t>(setup() % 12));
    }
    if (trial % 7 == 0) logits[0].fill_(-std::numeric_limits<float>::infinity());
    std::vector<std::mt19937_64> rng_a, rng_b;
    for (int64_t i = 0; i < rows; ++i) {
      rng_a.emplace_back(trial * 100 + i);
      rng_b.emplace_back(trial * 100 + i);
    }
    std::vector<SamplingRow> a, b;
    for (int64_t i = 0; i < rows; ++i) {
      a.push_back({&params[i], tokens[i], 20, &rng_a[i]});
      b.push_back({&params[i], tokens[i], 20, &rng_b[i]});
    }
    CAPTURE(trial, rows);
    CHECK(sample_tokens_on_device(logits.to(device), b) == sample_tokens(logits, a));
    // A second step on the same generators: each path took as many numbers from them in the
    // first (also for rows with every token banned), so seeded draws stay in step.
    if (trial % 7 == 0) logits[0].normal_();
    CHECK(sample_tokens_on_device(logits.to(device), b) == sample_tokens(logits, a));
  }
}

}  // namespace

TEST_CASE("the tensor sampling path picks what the host path picks", "[sampler]") {
  compare_paths(at::kCPU);
}

TEST_CASE("sampling on CUDA picks what the host path picks", "[sampler][cuda]") {
  if (!torch::cuda::is_available()) {
    WARN("skipped: no CUDA device");
    return;
  }
  compare_paths(at::Device(at::kCUDA, 0));
}

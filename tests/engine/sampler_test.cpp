// sample_tokens: greedy ties, penalties, n-gram bans, top-k/top-p/min-p and per-request seeds.
#include <catch2/catch.hpp>

#include <ATen/ATen.h>

#include "engine/sampler.h"

using namespace dsocr::engine;

namespace {

std::vector<int32_t> sample_one(std::vector<float> logits, const SamplingParams& p,
                                std::vector<int32_t> tokens = {}, int64_t prompt_len = 0,
                                uint64_t seed = 0) {
  at::Tensor t = at::tensor(logits).unsqueeze(0);
  std::mt19937_64 rng(seed);
  SamplingRow row{&p, tokens, prompt_len, &rng};
  return sample_tokens(t, {&row, 1});
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

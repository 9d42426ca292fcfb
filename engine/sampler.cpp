#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <unordered_map>

#include "common/check.h"
#include "engine/core/token_rules.h"

namespace dsocr::engine {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

void apply_penalties(float* logits, int64_t vocab, const SamplingRow& row) {
  const SamplingParams& p = *row.params;
  if (p.repetition_penalty != 1.0) {
    std::vector<uint8_t> seen(static_cast<size_t>(vocab), 0);
    for (int32_t t : row.tokens)
      if (t >= 0 && t < vocab) seen[t] = 1;
    const float r = static_cast<float>(p.repetition_penalty);
    for (int64_t t = 0; t < vocab; ++t)
      if (seen[t]) logits[t] = logits[t] > 0 ? logits[t] / r : logits[t] * r;
  }
  if (p.frequency_penalty != 0.0 || p.presence_penalty != 0.0) {
    std::unordered_map<int32_t, int> counts;
    for (int32_t t : row.tokens.subspan(row.prompt_len)) ++counts[t];
    for (auto [t, c] : counts) {
      if (t < 0 || t >= vocab) continue;
      logits[t] -= static_cast<float>(p.frequency_penalty * c + p.presence_penalty);
    }
  }
  if (p.ngram_size > 0) {
    for (int32_t t : ngram_banned_tokens(row.tokens.subspan(row.prompt_len), p.ngram_size,
                                         p.ngram_window, p.ngram_whitelist))
      if (t >= 0 && t < vocab) logits[t] = kNegInf;
  }
}

int32_t argmax(const float* logits, int64_t vocab) {
  return static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
}

int32_t draw(const float* logits, int64_t vocab, const SamplingRow& row) {
  const SamplingParams& p = *row.params;
  std::vector<int32_t> ids(static_cast<size_t>(vocab));
  std::iota(ids.begin(), ids.end(), 0);
  const float inv_t = static_cast<float>(1.0 / p.temperature);
  // Candidates sorted by logit, descending (ties by id for determinism).
  auto by_logit = [&](int32_t a, int32_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  };
  size_t keep = ids.size();
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < keep) {
    keep = static_cast<size_t>(p.top_k);
    std::partial_sort(ids.begin(), ids.begin() + keep, ids.end(), by_logit);
    ids.resize(keep);
  } else {
    std::sort(ids.begin(), ids.end(), by_logit);
  }
  while (!ids.empty() && logits[ids.back()] == kNegInf) ids.pop_back();
  if (ids.empty()) return argmax(logits, vocab);
  std::vector<double> probs(ids.size());
  const double top = static_cast<double>(logits[ids[0]]) * inv_t;
  double sum = 0;
  for (size_t i = 0; i < ids.size(); ++i) sum += probs[i] = std::exp(logits[ids[i]] * inv_t - top);
  for (double& q : probs) q /= sum;
  size_t n = ids.size();
  if (p.top_p < 1.0) {
    double cumulative = 0;
    for (size_t i = 0; i < n; ++i) {
      cumulative += probs[i];
      if (cumulative >= p.top_p) {
        n = i + 1;
        break;
      }
    }
  }
  if (p.min_p > 0.0) {
    const double floor = p.min_p * probs[0];
    while (n > 1 && probs[n - 1] < floor) --n;
  }
  double total = std::accumulate(probs.begin(), probs.begin() + n, 0.0);
  double u = std::uniform_real_distribution<double>(0.0, total)(*row.rng);
  for (size_t i = 0; i < n; ++i) {
    u -= probs[i];
    if (u < 0) return ids[i];
  }
  return ids[n - 1];
}

}  // namespace

std::vector<int32_t> sample_tokens(const at::Tensor& logits, std::span<const SamplingRow> rows) {
  DSOCR_CHECK_EQ(logits.size(0), static_cast<int64_t>(rows.size()));
  // A contiguous copy: the processors write into it, and the caller may still read the raw logits.
  at::Tensor cpu = logits.to(at::kCPU, at::kFloat, /*non_blocking=*/false, /*copy=*/true,
                             at::MemoryFormat::Contiguous);
  const int64_t vocab = cpu.size(1);
  std::vector<int32_t> out(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    float* row = cpu.data_ptr<float>() + static_cast<int64_t>(i) * vocab;
    apply_penalties(row, vocab, rows[i]);
    out[i] = rows[i].params->greedy() ? argmax(row, vocab) : draw(row, vocab, rows[i]);
  }
  return out;
}

}  // namespace dsocr::engine

#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
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
  // One uniform number per sampled row and step, taken first whatever follows (so the device
  // path, which takes it the same way, keeps a seeded request's stream in step).
  const double uniform = std::uniform_real_distribution<double>(0.0, 1.0)(*row.rng);
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
  double u = uniform * total;
  for (size_t i = 0; i < n; ++i) {
    u -= probs[i];
    if (u < 0) return ids[i];
  }
  return ids[n - 1];
}

}  // namespace

std::vector<int32_t> sample_tokens(const at::Tensor& logits, std::span<const SamplingRow> rows) {
  DSOCR_CHECK_EQ(logits.size(0), static_cast<int64_t>(rows.size()));
  if (logits.is_cuda()) return sample_tokens_on_device(logits, rows);
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

namespace {

// Host values on `device` without waiting: on CUDA through pinned memory and an asynchronous
// copy (a pageable copy would wait for the step's kernels first), so the step's one host sync
// is the chosen ids' way back.
template <typename T>
at::Tensor upload(const std::vector<T>& values, at::ScalarType type, at::Device device) {
  const bool cuda = device.is_cuda();
  at::Tensor host = at::empty({static_cast<int64_t>(values.size())},
                              at::TensorOptions().dtype(type).pinned_memory(cuda));
  std::copy(values.begin(), values.end(), host.data_ptr<T>());
  return cuda ? host.to(device, /*non_blocking=*/true) : host;
}

// The sparse edits of one step's penalties and bans, as flat indices into [rows, vocab].
struct LogitEdits {
  std::vector<int64_t> scale_index;  // repetition penalty: l > 0 ? l / r : l * r
  std::vector<float> scale_by;
  std::vector<int64_t> subtract_index;  // frequency/presence penalties
  std::vector<float> subtract;
  std::vector<int64_t> ban_index;  // n-gram bans: -inf
};

LogitEdits collect_edits(std::span<const SamplingRow> rows, int64_t vocab) {
  LogitEdits edits;
  for (size_t i = 0; i < rows.size(); ++i) {
    const SamplingRow& row = rows[i];
    const SamplingParams& p = *row.params;
    const int64_t base = static_cast<int64_t>(i) * vocab;
    if (p.repetition_penalty != 1.0) {
      std::vector<int32_t> seen(row.tokens.begin(), row.tokens.end());
      std::sort(seen.begin(), seen.end());
      seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
      for (int32_t t : seen) {
        if (t < 0 || t >= vocab) continue;
        edits.scale_index.push_back(base + t);
        edits.scale_by.push_back(static_cast<float>(p.repetition_penalty));
      }
    }
    if (p.frequency_penalty != 0.0 || p.presence_penalty != 0.0) {
      std::unordered_map<int32_t, int> counts;
      for (int32_t t : row.tokens.subspan(row.prompt_len)) ++counts[t];
      for (auto [t, c] : counts) {
        if (t < 0 || t >= vocab) continue;
        edits.subtract_index.push_back(base + t);
        edits.subtract.push_back(static_cast<float>(p.frequency_penalty * c + p.presence_penalty));
      }
    }
    if (p.ngram_size > 0) {
      for (int32_t t : ngram_banned_tokens(row.tokens.subspan(row.prompt_len), p.ngram_size,
                                           p.ngram_window, p.ngram_whitelist))
        if (t >= 0 && t < vocab) edits.ban_index.push_back(base + t);
    }
  }
  return edits;
}

// Applies the edits to a contiguous [rows, vocab] float32 tensor in place. The host vectors go to
// the device in one copy (indices and values packed into one int64 tensor, floats bit-cast).
void apply_edits(at::Tensor& logits, const LogitEdits& edits) {
  const size_t n_scale = edits.scale_index.size(), n_sub = edits.subtract_index.size();
  const size_t n_ban = edits.ban_index.size();
  if (n_scale + n_sub + n_ban == 0) return;
  std::vector<int64_t> packed;
  packed.reserve(2 * n_scale + 2 * n_sub + n_ban);
  const auto bits = [](float f) {
    int32_t b;
    std::memcpy(&b, &f, sizeof b);
    return static_cast<int64_t>(b);
  };
  packed.insert(packed.end(), edits.scale_index.begin(), edits.scale_index.end());
  for (float f : edits.scale_by) packed.push_back(bits(f));
  packed.insert(packed.end(), edits.subtract_index.begin(), edits.subtract_index.end());
  for (float f : edits.subtract) packed.push_back(bits(f));
  packed.insert(packed.end(), edits.ban_index.begin(), edits.ban_index.end());
  const at::Tensor all = upload(packed, at::kLong, logits.device());
  const auto floats = [](const at::Tensor& b) { return b.to(at::kInt).view(at::kFloat); };
  at::Tensor flat = logits.view(-1);
  int64_t at_ = 0;
  const auto take = [&](size_t n) {
    at::Tensor part = all.slice(0, at_, at_ + static_cast<int64_t>(n));
    at_ += static_cast<int64_t>(n);
    return part;
  };
  if (n_scale > 0) {
    const at::Tensor index = take(n_scale), by = floats(take(n_scale));
    const at::Tensor values = flat.index_select(0, index);
    flat.index_copy_(0, index, at::where(values > 0, values / by, values * by));
  }
  if (n_sub > 0) {
    const at::Tensor index = take(n_sub), amount = floats(take(n_sub));
    flat.index_copy_(0, index, flat.index_select(0, index) - amount);  // indices are unique
  }
  if (n_ban > 0) flat.index_fill_(0, take(n_ban), kNegInf);
}

// Draws one token for each of `logits`' rows ([R, vocab] float32, edits applied): the host
// path's draw() as tensor operations. `uniform` holds one U[0, 1) per row.
at::Tensor draw_rows(const at::Tensor& logits, const std::vector<const SamplingParams*>& params,
                     const std::vector<double>& uniform) {
  const int64_t r = logits.size(0), vocab = logits.size(1);
  std::vector<double> per_row;  // inv_t, top_k, top_p, min_p, u for each row
  for (int64_t i = 0; i < r; ++i) {
    const SamplingParams& p = *params[i];
    per_row.insert(
        per_row.end(),
        {1.0 / p.temperature, static_cast<double>(p.top_k > 0 ? std::min(p.top_k, vocab) : vocab),
         p.top_p, p.min_p, uniform[i]});
  }
  const at::Tensor knobs = upload(per_row, at::kDouble, logits.device()).view({r, 5});
  const at::Tensor inv_t = knobs.select(1, 0).unsqueeze(1), top_k = knobs.select(1, 1).unsqueeze(1);
  const at::Tensor top_p = knobs.select(1, 2).unsqueeze(1), min_p = knobs.select(1, 3).unsqueeze(1);
  const at::Tensor u = knobs.select(1, 4).unsqueeze(1);
  // Sorted by logit, descending; a stable sort keeps ties in id order (the host path's order).
  auto [sorted, ids] = logits.sort(/*stable=*/true, -1, /*descending=*/true);
  const at::Tensor rank = at::arange(vocab, knobs.options()).unsqueeze(0);
  const at::Tensor scaled = (sorted * inv_t.to(at::kFloat)).to(at::kDouble);
  at::Tensor probs = (scaled - scaled.select(1, 0).unsqueeze(1)).exp();
  probs.masked_fill_((rank >= top_k).logical_or(sorted == kNegInf), 0.0);
  probs = probs / probs.sum(1, true);
  // top-p: keep up to and including the first rank whose cumulative probability reaches top_p.
  // The probability mass before each rank (an exclusive prefix sum, not cumulative - probs,
  // whose rounding could move a rank across the boundary).
  const at::Tensor before =
      at::cat({at::zeros({r, 1}, probs.options()), probs.cumsum(1).slice(1, 0, vocab - 1)}, 1);
  at::Tensor keep = (before < top_p).logical_or(top_p >= 1.0);
  // min-p: drop the tail below min_p times the top probability (the first rank always stays).
  keep = keep.logical_and((probs >= min_p * probs.select(1, 0).unsqueeze(1)).logical_or(rank == 0));
  const at::Tensor kept = probs * keep;
  const at::Tensor kept_cumulative = kept.cumsum(1);
  const at::Tensor target = u * kept_cumulative.select(1, -1).unsqueeze(1);
  at::Tensor pick = at::searchsorted(kept_cumulative, target, /*out_int32=*/false, /*right=*/true);
  // u * total may round onto the last boundary: stay on the last rank with probability left.
  pick = at::minimum(pick, (kept > 0).sum(1, true) - 1).clamp_min(0);
  at::Tensor chosen = ids.gather(1, pick).squeeze(1);
  // A row with every logit banned: the host path falls back to argmax over the raw -inf row.
  const at::Tensor empty = sorted.select(1, 0) == kNegInf;
  return at::where(empty, logits.argmax(1), chosen);
}

}  // namespace

std::vector<int32_t> sample_tokens_on_device(const at::Tensor& logits,
                                             std::span<const SamplingRow> rows) {
  DSOCR_CHECK_EQ(logits.size(0), static_cast<int64_t>(rows.size()));
  if (rows.empty()) return {};
  // A contiguous copy: the edits write into it, and the caller may still read the raw logits.
  at::Tensor work = logits.to(logits.device(), at::kFloat, /*non_blocking=*/false, /*copy=*/true,
                              at::MemoryFormat::Contiguous);
  const int64_t vocab = work.size(1);
  apply_edits(work, collect_edits(rows, vocab));
  at::Tensor chosen = work.argmax(1);  // greedy rows; ties: the lowest id
  std::vector<int64_t> sampled_rows;
  std::vector<const SamplingParams*> params;
  std::vector<double> uniform;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i].params->greedy()) continue;
    sampled_rows.push_back(static_cast<int64_t>(i));
    params.push_back(rows[i].params);
    uniform.push_back(std::uniform_real_distribution<double>(0.0, 1.0)(*rows[i].rng));
  }
  if (!sampled_rows.empty()) {
    const at::Tensor index = upload(sampled_rows, at::kLong, work.device());
    chosen.index_copy_(0, index, draw_rows(work.index_select(0, index), params, uniform));
  }
  // The step's one device-to-host copy.
  const at::Tensor ids = chosen.to(at::kCPU, at::kInt);
  return std::vector<int32_t>(ids.data_ptr<int32_t>(), ids.data_ptr<int32_t>() + ids.numel());
}

}  // namespace dsocr::engine

// Numerical building blocks shared by the vision encoder and the language model, written once so
// that both follow the reference's exact operation order (which decides float rounding).
//
// Thread-safety: pure functions.
#pragma once

#include <ATen/ATen.h>

namespace dsocr::model {

// RMSNorm as in the reference: float32 statistics, cast back, then times the weight.
inline at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor h = x.to(at::kFloat);
  h = h * at::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * h.to(x.scalar_type());
}

// RoPE tables for positions [L] (int64): cos and sin of shape [L, head_dim], NeoX layout
// (frequencies repeated, not interleaved), computed in float32 and cast to `dtype`.
inline std::pair<at::Tensor, at::Tensor> rope_cos_sin(const at::Tensor& positions, int64_t head_dim,
                                                      double theta, at::ScalarType dtype) {
  const auto opts = at::TensorOptions().dtype(at::kFloat).device(positions.device());
  at::Tensor exponents = at::arange(0, head_dim, 2, opts) / static_cast<double>(head_dim);
  at::Tensor inv_freq = 1.0 / at::pow(theta, exponents);
  at::Tensor freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq;
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

// x * cos + rotate_half(x) * sin; cos/sin broadcast against x's last two dims ([L, D]).
inline at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  at::Tensor rotated = at::cat({-x.slice(-1, half), x.slice(-1, 0, half)}, -1);
  return x * cos + rotated * sin;
}

}  // namespace dsocr::model

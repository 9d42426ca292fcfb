// The MoE layer's decode kernel (cpu_kernels.h) against its libtorch reference path.
#include <ATen/ATen.h>

#include <torch/cuda.h>
#include <catch2/catch.hpp>

#include "engine/kernels/cpu_kernels.h"
#include "engine/model/language_model.h"

namespace dsocr::model {
namespace {

Moe random_moe(int64_t hidden, int64_t inter, int64_t experts, int64_t top_k,
               at::Device device = at::kCPU, at::ScalarType dtype = at::kFloat) {
  weights::LanguageConfig config;
  config.hidden_size = hidden;
  config.moe_intermediate_size = inter;
  config.n_routed_experts = experts;
  config.num_experts_per_tok = top_k;
  config.n_shared_experts = 1;
  Moe moe(config);
  at::manual_seed(11);
  at::NoGradGuard no_grad;
  for (auto& p : moe->parameters()) p.set_data((at::randn(p.sizes()) * 0.1).to(device, dtype));
  moe->pack_experts();
  return moe;
}

TEST_CASE("MoE decode kernel equals the reference path", "[moe]") {
  at::NoGradGuard no_grad;
  for (auto [hidden, inter, experts, top_k] :
       std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t>>{
           {64, 32, 8, 2}, {512, 256, 16, 6}, {128, 40, 64, 6}}) {
    Moe moe = random_moe(hidden, inter, experts, top_k);
    for (int64_t tokens : {1, 2, 5, 16, 64}) {
      CAPTURE(hidden, inter, experts, top_k, tokens);
      at::Tensor x = at::randn({tokens, hidden});
      at::Tensor kernel = moe->forward(x);
      at::Tensor reference = moe->forward(x, /*reference=*/true);
      const double scale = std::max(1.0, reference.abs().max().item<double>());
      CHECK((kernel - reference).abs().max().item<double>() <= 1e-5 * scale);
    }
  }
}

TEST_CASE("MoE decode kernel output of a token does not depend on the other tokens", "[moe]") {
  at::NoGradGuard no_grad;
  Moe moe = random_moe(64, 32, 8, 2);
  at::Tensor x = at::randn({9, 64});
  at::Tensor all = moe->forward(x);
  for (int64_t i = 0; i < 9; ++i)
    CHECK(at::allclose(moe->forward(x.slice(0, i, i + 1))[0], all[i], 1e-6, 1e-6));
}

// Runs moe_experts over stacked [E, rows, cols] weights in `format` (int8: quantized here).
at::Tensor run_kernel(const at::Tensor& x, const at::Tensor& w_gate, const at::Tensor& w_up,
                      const at::Tensor& w_down, engine::cpu::WeightFormat format,
                      const at::Tensor& chosen, const at::Tensor& weights, int64_t top_k) {
  const int64_t experts = w_gate.size(0), inter = w_gate.size(1), hidden = w_gate.size(2);
  const auto flat = [](const at::Tensor& w) { return w.reshape({-1, w.size(2)}); };
  const StoredWeight g = StoredWeight::make(flat(w_gate), format);
  const StoredWeight u = StoredWeight::make(flat(w_up), format);
  const StoredWeight d = StoredWeight::make(flat(w_down), format);
  at::Tensor out = at::empty({x.size(0), hidden});
  engine::cpu::MoeArgs args;
  args.x = x.data_ptr<float>();
  args.tokens = x.size(0);
  args.hidden = hidden;
  args.inter = inter;
  args.num_experts = experts;
  args.top_k = top_k;
  args.gate = g.matrix();
  args.up = u.matrix();
  args.down = d.matrix();
  args.experts = chosen.data_ptr<int64_t>();
  args.weights = weights.data_ptr<float>();
  args.out = out.data_ptr<float>();
  engine::cpu::moe_experts(args);
  return out;
}

TEST_CASE("MoE kernel with bfloat16 weights computes what their float32 widening does",
          "[moe]") {
  at::NoGradGuard no_grad;
  at::manual_seed(5);
  const int64_t hidden = 64, inter = 40, experts = 8, top_k = 3;
  const at::Tensor w_gate = (at::randn({experts, inter, hidden}) * 0.1).to(at::kBFloat16);
  const at::Tensor w_up = (at::randn({experts, inter, hidden}) * 0.1).to(at::kBFloat16);
  const at::Tensor w_down = (at::randn({experts, hidden, inter}) * 0.1).to(at::kBFloat16);
  // 7 tokens: every expert reads its weights as they are; 60: most widen them first.
  for (int64_t tokens : {7, 60}) {
    CAPTURE(tokens);
    const at::Tensor x = at::randn({tokens, hidden});
    const at::Tensor chosen = at::randint(0, experts, {tokens * top_k}, at::kLong);
    const at::Tensor weights = at::rand({tokens * top_k});
    using engine::cpu::WeightFormat;
    const at::Tensor narrow =
        run_kernel(x, w_gate, w_up, w_down, WeightFormat::kBFloat16, chosen, weights, top_k);
    const at::Tensor widened =
        run_kernel(x, w_gate.to(at::kFloat), w_up.to(at::kFloat), w_down.to(at::kFloat),
                   WeightFormat::kFloat32, chosen, weights, top_k);
    // float32 arithmetic on the same values, summed in another order.
    const double scale = widened.abs().max().item<double>();
    REQUIRE(scale > 0);
    CHECK((narrow - widened).abs().max().item<double>() <= 1e-5 * scale);
  }
}

TEST_CASE("MoE kernel with int8 weights computes what their dequantized weights do", "[moe]") {
  at::NoGradGuard no_grad;
  at::manual_seed(6);
  const int64_t hidden = 64, inter = 48, experts = 4, top_k = 2;
  const at::Tensor w_gate = at::randn({experts, inter, hidden}) * 0.1;
  const at::Tensor w_up = at::randn({experts, inter, hidden}) * 0.1;
  const at::Tensor w_down = at::randn({experts, hidden, inter}) * 0.1;
  using engine::cpu::WeightFormat;
  const auto dequantized = [](const at::Tensor& w) {
    return StoredWeight::make(w.reshape({-1, w.size(2)}), WeightFormat::kInt8)
        .widened()
        .view(w.sizes());
  };
  for (int64_t tokens : {1, 5, 64}) {  // 64 tokens: ~32 per expert, the widening path
    CAPTURE(tokens);
    const at::Tensor x = at::randn({tokens, hidden});
    const at::Tensor chosen = at::randint(0, experts, {tokens * top_k}, at::kLong);
    const at::Tensor weights = at::rand({tokens * top_k});
    const at::Tensor q = run_kernel(x, w_gate, w_up, w_down, WeightFormat::kInt8, chosen,
                                    weights, top_k);
    const at::Tensor reference =
        run_kernel(x, dequantized(w_gate), dequantized(w_up), dequantized(w_down),
                   WeightFormat::kFloat32, chosen, weights, top_k);
    const double scale = reference.abs().max().item<double>();
    REQUIRE(scale > 0);
    CHECK((q - reference).abs().max().item<double>() <= 1e-5 * scale);
    // And the quantization itself moved the result only a little from the float32 weights'.
    const at::Tensor exact = run_kernel(x, w_gate, w_up, w_down, WeightFormat::kFloat32, chosen,
                                        weights, top_k);
    CHECK((q - exact).abs().max().item<double>() <= 3e-2 * scale);
  }
}

TEST_CASE("MoE decode kernel of a bfloat16 model agrees with libtorch's bfloat16 path", "[moe]") {
  at::NoGradGuard no_grad;
  Moe moe = random_moe(128, 64, 16, 6);
  moe->to(at::kBFloat16);
  moe->pack_experts();
  for (int64_t tokens : {1, 4, 16}) {
    CAPTURE(tokens);
    at::Tensor x = at::randn({tokens, 128}).to(at::kBFloat16);
    at::Tensor kernel = moe->forward(x).to(at::kFloat);
    at::Tensor reference = moe->forward(x, /*reference=*/true).to(at::kFloat);
    REQUIRE(kernel.scalar_type() == at::kFloat);
    const double scale = std::max(1.0, reference.abs().max().item<double>());
    // Both round to bfloat16 (8 bits of mantissa) at different points: a few ulps of it.
    CHECK((kernel - reference).abs().max().item<double>() <= 3e-2 * scale);
  }
}

// The grouped path (the GPU's) on the CPU: at::_grouped_mm has a CPU implementation, so the
// grouping, group ends, weighting and un-permuting are checked here without a GPU.
TEST_CASE("MoE grouped-GEMM path equals the reference path on the CPU", "[moe]") {
  at::NoGradGuard no_grad;
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    for (auto [hidden, inter, experts, top_k] :
         std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t>>{{64, 32, 8, 2},
                                                                     {128, 48, 64, 6}}) {
      Moe moe = random_moe(hidden, inter, experts, top_k, at::kCPU, dtype);
      for (int64_t tokens : {1, 3, 17, 130}) {
        CAPTURE(dtype, hidden, inter, experts, top_k, tokens);
        at::Tensor x = at::randn({tokens, hidden}).to(dtype);
        at::Tensor grouped = moe->forward(x, MoeImpl::Route::kGrouped).to(at::kFloat);
        at::Tensor reference = moe->forward(x, MoeImpl::Route::kReference).to(at::kFloat);
        // bfloat16: the reference adds the k results one by one in bfloat16, the grouped path
        // rounds each weighted result to bfloat16 and sums the k of a token at once.
        const double tolerance = dtype == at::kFloat ? 1e-5 : 2e-2;
        const double scale = std::max(1.0, reference.abs().max().item<double>());
        CHECK((grouped - reference).abs().max().item<double>() <= tolerance * scale);
      }
    }
  }
}

TEST_CASE("MoE on CUDA: the grouped path equals the reference, a token alone within rounding",
          "[moe][cuda]") {
  if (!torch::cuda::is_available()) {
    WARN("skipped: no CUDA device");
    return;
  }
  at::NoGradGuard no_grad;
  const at::Device cuda(at::kCUDA, 0);
  // The real model's expert shapes (hidden 1280, 64 experts of 896, top 6), bfloat16.
  Moe moe = random_moe(1280, 896, 64, 6, cuda, at::kBFloat16);
  for (int64_t tokens : {1, 7, 128, 1000}) {
    CAPTURE(tokens);
    at::Tensor x = at::randn({tokens, 1280}, at::TensorOptions().device(cuda)).to(at::kBFloat16);
    at::Tensor fast = moe->forward(x).to(at::kFloat);
    at::Tensor reference = moe->forward(x, MoeImpl::Route::kReference).to(at::kFloat);
    // Relative Frobenius error: bf16 operands, different summation order.
    const double error = ((fast - reference).norm() / reference.norm()).item<double>();
    CAPTURE(error);
    CHECK(error < 1e-2);
    CHECK(at::isfinite(fast).all().item<bool>());
    if (tokens > 1) {
      // A token's output alone vs inside the batch: the per-token sum has no atomics, but the
      // GEMM kernels may tile differently by batch size, so within bf16 rounding, not bit-equal.
      at::Tensor alone = moe->forward(x.slice(0, 0, 1)).to(at::kFloat);
      const double drift = ((alone[0] - fast[0]).norm() / fast[0].norm()).item<double>();
      CAPTURE(drift);
      CHECK(drift < 1e-2);
    }
  }
}

}  // namespace
}  // namespace dsocr::model

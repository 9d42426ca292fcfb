// The MoE layer's decode kernel (cpu_kernels.h) against its libtorch reference path.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>

#include "engine/model/language_model.h"

namespace dsocr::model {
namespace {

Moe random_moe(int64_t hidden, int64_t inter, int64_t experts, int64_t top_k) {
  weights::LanguageConfig config;
  config.hidden_size = hidden;
  config.moe_intermediate_size = inter;
  config.n_routed_experts = experts;
  config.num_experts_per_tok = top_k;
  config.n_shared_experts = 1;
  Moe moe(config);
  at::manual_seed(11);
  at::NoGradGuard no_grad;
  for (auto& p : moe->parameters()) p.copy_(at::randn(p.sizes()) * 0.1);
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

}  // namespace
}  // namespace dsocr::model

// SAM attention attends views in groups, and a view in bands of query rows, when their
// relative-position bias would be large (SamAttentionImpl::set_max_bias_bytes); the groups must
// give what one call gives.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>

#include "engine/model/sam.h"

namespace dsocr::model {
namespace {

TEST_CASE("SAM attention over views in groups equals one call over all", "[sam]") {
  at::NoGradGuard no_grad;
  weights::SamConfig config;
  config.width = 32, config.heads = 2;
  const int64_t grid = 8;
  SamAttention attention(config, grid);
  at::manual_seed(3);
  for (auto& p : attention->parameters()) p.copy_(at::randn(p.sizes()) * 0.2);
  attention->prepare(grid, at::kFloat);
  at::Tensor x = at::randn({5, grid, grid, config.width});
  at::Tensor whole = attention->forward(x);
  const int64_t one_view = config.heads * grid * grid * grid * grid * 4;
  // Budgets of 1, 2 and 3 views' bias; half and a third of one view (bands of 4 and 2 query rows
  // of a view per call); 1 byte (one query row per call whatever it costs).
  for (int64_t budget :
       {one_view, 2 * one_view, 3 * one_view, one_view / 2, one_view / 3, int64_t{1}}) {
    CAPTURE(budget);
    attention->set_max_bias_bytes(budget);
    at::Tensor grouped = attention->forward(x);
    CHECK(grouped.sizes() == whole.sizes());
    CHECK(at::allclose(grouped, whole, 1e-6, 1e-6));
  }
}

// The GPU's way (the bias folded into the dot products, no bias tensor) against the materialised
// bias, on the CPU in float32: windowed (14) and global grids (the 1024 view's 64 at a reduced
// width), and a bfloat16 run within bf16 tolerance.
TEST_CASE("SAM attention with the bias in the dot products equals the materialised bias", "[sam]") {
  at::NoGradGuard no_grad;
  weights::SamConfig config;
  config.width = 64, config.heads = 2;
  for (int64_t grid : {14, 24, 64}) {
    CAPTURE(grid);
    SamAttention attention(config, grid);
    at::manual_seed(grid);
    for (auto& p : attention->parameters()) p.copy_(at::randn(p.sizes()) * 0.3);
    attention->prepare(grid, at::kFloat);
    at::Tensor x = at::randn({2, grid, grid, config.width});
    attention->set_bias_mode(SamAttentionImpl::BiasMode::kMaterialised);
    const at::Tensor materialised = attention->forward(x);
    attention->set_bias_mode(SamAttentionImpl::BiasMode::kInDotProduct);
    const at::Tensor folded = attention->forward(x);
    CHECK(folded.sizes() == materialised.sizes());
    const double error = ((folded - materialised).norm() / materialised.norm()).item<double>();
    CAPTURE(error);
    CHECK(error < 1e-5);
    // bfloat16 (the GPU's dtype): within bf16 rounding of the float32 result.
    attention->to(at::kBFloat16);
    attention->prepare(grid, at::kBFloat16);
    const at::Tensor narrow = attention->forward(x.to(at::kBFloat16)).to(at::kFloat);
    const double narrow_error =
        ((narrow - materialised).norm() / materialised.norm()).item<double>();
    CAPTURE(narrow_error);
    CHECK(narrow_error < 2e-2);
  }
}

}  // namespace
}  // namespace dsocr::model

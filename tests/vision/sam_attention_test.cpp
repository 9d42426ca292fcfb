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

}  // namespace
}  // namespace dsocr::model

// matmul_panels (cpu_kernels.h), the CPU lm_head kernel, against at::mm on the unpacked weight.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <catch2/catch.hpp>
#include <cmath>

#include "engine/kernels/cpu_kernels.h"

namespace dsocr::engine::cpu {
namespace {

at::Tensor packed(const at::Tensor& w) {
  at::Tensor panels = at::empty({panel_count(w.size(0)), w.size(1), kPanelWidth});
  pack_panels(w.data_ptr<float>(), w.size(0), w.size(1), panels.data_ptr<float>());
  return panels;
}

at::Tensor panel_matmul(const at::Tensor& x, const at::Tensor& panels, int64_t n) {
  at::Tensor out = at::full({x.size(0), n}, std::nanf(""));  // every element must be written
  matmul_panels(x.data_ptr<float>(), x.size(0), x.size(1), panels.data_ptr<float>(), n,
                out.data_ptr<float>());
  return out;
}

TEST_CASE("panel matmul equals x times W transposed", "[panels]") {
  at::manual_seed(5);
  // Row counts around the six-row blocks, column counts around the 16-wide panels (a partial
  // last panel), depths from one vector to the lm_head's.
  for (int64_t n : {1, 15, 16, 17, 50, 4099}) {
    for (int64_t k : {1, 8, 24, 512}) {
      at::Tensor w = at::randn({n, k});
      at::Tensor panels = packed(w);
      for (int64_t rows : {1, 5, 6, 7, 12, 16, 33}) {
        CAPTURE(n, k, rows);
        at::Tensor x = at::randn({rows, k});
        at::Tensor got = panel_matmul(x, panels, n);
        at::Tensor want = at::mm(x.to(at::kDouble), w.to(at::kDouble).t()).to(at::kFloat);
        CHECK_FALSE(got.isnan().any().item<bool>());
        CHECK((got - want).abs().max().item<double>() <= 1e-5 * std::sqrt(double(k)) * 4);
      }
    }
  }
}

TEST_CASE("panel matmul packs rows in order with a zero-padded last panel", "[panels]") {
  at::Tensor w = at::arange(17 * 3, at::kFloat).view({17, 3});
  at::Tensor panels = packed(w).view({2, 3, kPanelWidth});
  CHECK(at::equal(panels.transpose(1, 2).reshape({32, 3}).slice(0, 0, 17), w));
  CHECK(at::equal(panels[1].transpose(0, 1).slice(0, 1), at::zeros({15, 3})));
}

TEST_CASE("panel matmul gives a row the same bits whatever rows come with it", "[panels]") {
  at::manual_seed(6);
  at::Tensor w = at::randn({300, 64});
  at::Tensor panels = packed(w);
  at::Tensor x = at::randn({16, 64});
  at::Tensor all = panel_matmul(x, panels, 300);
  for (int64_t i = 0; i < 16; ++i)
    CHECK(at::equal(panel_matmul(x.slice(0, i, i + 1).contiguous(), panels, 300)[0], all[i]));
}

TEST_CASE("CPU kernels split their loops over every intra-op thread", "[panels]") {
  at::set_num_threads(2);  // more threads than cores is fine for OpenMP; a serial build gives 1
  CHECK(parallel_threads() == 2);
}

}  // namespace
}  // namespace dsocr::engine::cpu

// The vision encoder with its blocks kept as a bfloat16 checkpoint stores them (widened a block at
// a time, widened_scope.h) gives exactly the embeddings of the same checkpoint loaded as float32.
#include <ATen/ATen.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "engine/model/vision_model.h"
#include "weights/make_model.h"

namespace dsocr::model {
namespace {

TEST_CASE("vision blocks kept narrow compute what float32 weights compute", "[vision_model]") {
  at::NoGradGuard no_grad;
  const auto dir =
      std::filesystem::temp_directory_path() / ("dsocr_narrow_vision_" + std::to_string(::getpid()));
  weights::MakeModelOptions make;
  make.preset = "tiny";
  make.seed = 3;
  make.dtype = weights::DType::kBF16;
  make.out = dir;
  REQUIRE(weights::make_model(make).ok());
  auto config = weights::ModelConfig::from_file(dir / "config.json");
  REQUIRE(config.ok());
  auto state = weights::StateDict::open(dir);
  REQUIRE(state.ok());

  VisionModel wide(*config), narrow(*config);
  REQUIRE(wide->load(*state, at::kFloat, at::kCPU).ok());
  REQUIRE(narrow->load(*state, at::kFloat, at::kCPU, /*keep_blocks_narrow=*/true).ok());
  // The blocks really are narrow, the rest (and everything of `wide`) float32.
  int64_t narrow_tensors = 0;
  for (const auto& p : narrow->named_parameters()) {
    const bool block = VisionModelImpl::is_block_tensor("model." + p.key());
    CHECK(p.value().scalar_type() == (block ? at::kBFloat16 : at::kFloat));
    narrow_tensors += block;
  }
  CHECK(narrow_tensors > 0);
  for (const auto& p : wide->parameters()) CHECK(p.scalar_type() == at::kFloat);

  at::manual_seed(9);
  PixelBatch batch{at::randn({2, 3, 1024, 1024}), at::randn({3, 3, 768, 768}), {2, 1}};
  const std::vector<at::Tensor> a = wide->encode(batch);
  const std::vector<at::Tensor> b = narrow->encode(batch);
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) CHECK(at::equal(a[i], b[i]));
  // The widened copies are gone again: the blocks are narrow after encode().
  for (const auto& p : narrow->named_parameters())
    if (VisionModelImpl::is_block_tensor("model." + p.key()))
      CHECK(p.value().scalar_type() == at::kBFloat16);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace dsocr::model

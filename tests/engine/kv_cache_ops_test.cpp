#include "engine/kernels/kv_cache_ops.h"

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <catch2/catch.hpp>

namespace dsocr::engine {
namespace {

constexpr int64_t kBlocks = 5, kBlockSize = 4, kHeads = 3, kHeadDim = 8;

at::Tensor empty_cache(at::ScalarType dtype, at::Device device) {
  return at::zeros({kBlocks, kBlockSize, kHeads, kHeadDim},
                   at::TensorOptions().dtype(dtype).device(device));
}

TEST_CASE("write_kv_cache: rows land at their slots, negative slots skipped", "[kv_cache]") {
  at::manual_seed(0);
  at::Tensor key = at::randn({6, kHeads, kHeadDim});
  at::Tensor value = at::randn({6, kHeads, kHeadDim});
  at::Tensor slots = at::tensor({0, 5, -1, 19, 7, -1}, at::kLong);
  at::Tensor key_cache = empty_cache(at::kFloat, at::kCPU);
  at::Tensor value_cache = empty_cache(at::kFloat, at::kCPU);
  write_kv_cache(key, value, key_cache, value_cache, slots);

  auto k_flat = key_cache.view({-1, kHeads, kHeadDim});
  auto v_flat = value_cache.view({-1, kHeads, kHeadDim});
  for (int64_t t = 0; t < 6; ++t) {
    int64_t slot = slots[t].item<int64_t>();
    if (slot < 0) continue;
    CHECK(at::equal(k_flat[slot], key[t]));
    CHECK(at::equal(v_flat[slot], value[t]));
  }
  // Everything else is untouched.
  at::Tensor written = at::zeros({kBlocks * kBlockSize}, at::kBool);
  written.index_put_({at::tensor({0, 5, 19, 7}, at::kLong)}, true);
  CHECK(k_flat.index({written.logical_not()}).abs().sum().item<float>() == 0.0f);
  // Block 1, offset 1 is slot 5: the block layout is [block, offset].
  CHECK(at::equal(key_cache[1][1], key[1]));
}

TEST_CASE("write_kv_cache: K/V taken from a strided view (fused qkv output)", "[kv_cache]") {
  at::Tensor qkv = at::randn({4, 3 * kHeads * kHeadDim});
  at::Tensor key = qkv.narrow(1, kHeads * kHeadDim, kHeads * kHeadDim).view({4, kHeads, kHeadDim});
  at::Tensor value =
      qkv.narrow(1, 2 * kHeads * kHeadDim, kHeads * kHeadDim).view({4, kHeads, kHeadDim});
  at::Tensor slots = at::tensor({3, 2, 1, 0}, at::kLong);
  at::Tensor key_cache = empty_cache(at::kFloat, at::kCPU);
  at::Tensor value_cache = empty_cache(at::kFloat, at::kCPU);
  write_kv_cache(key, value, key_cache, value_cache, slots);
  CHECK(at::equal(key_cache[0][0], key[3]));
  CHECK(at::equal(value_cache[0][3], value[0]));
}

TEST_CASE("write_kv_cache: bad shapes and slots are rejected", "[kv_cache]") {
  at::Tensor key = at::randn({2, kHeads, kHeadDim});
  at::Tensor key_cache = empty_cache(at::kFloat, at::kCPU);
  at::Tensor value_cache = empty_cache(at::kFloat, at::kCPU);
  CHECK_THROWS(write_kv_cache(key, key, key_cache, value_cache, at::tensor({0}, at::kLong)));
  CHECK_THROWS(write_kv_cache(key, key, key_cache, value_cache, at::tensor({0, 1}, at::kInt)));
  CHECK_THROWS(write_kv_cache(key, key, key_cache, value_cache, at::tensor({0, 20}, at::kLong)));
  CHECK_THROWS(write_kv_cache(key.to(at::kHalf), key.to(at::kHalf), key_cache, value_cache,
                              at::tensor({0, 1}, at::kLong)));
}

TEST_CASE("write_kv_cache: CUDA kernel equals the reference", "[kv_cache][cuda]") {
  // Catch2 2.x has no SKIP: without a GPU this case only says so (device-run.sh runs it on one).
  if (!torch::cuda::is_available()) {
    WARN("skipped: no CUDA device");
    return;
  }
  for (auto dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    at::Device cuda(at::kCUDA, 0);
    at::Tensor qkv = at::randn({9, 3 * kHeads * kHeadDim}).to(dtype);
    at::Tensor key = qkv.narrow(1, 0, kHeads * kHeadDim).view({9, kHeads, kHeadDim});
    at::Tensor value =
        qkv.narrow(1, kHeads * kHeadDim, kHeads * kHeadDim).view({9, kHeads, kHeadDim});
    at::Tensor slots = at::tensor({4, -1, 0, 19, 8, 9, 10, -1, 2}, at::kLong);
    at::Tensor ref_k = empty_cache(dtype, at::kCPU), ref_v = empty_cache(dtype, at::kCPU);
    write_kv_cache_reference(key, value, ref_k, ref_v, slots);
    at::Tensor gpu_k = empty_cache(dtype, cuda), gpu_v = empty_cache(dtype, cuda);
    write_kv_cache(key.to(cuda), value.to(cuda), gpu_k, gpu_v, slots.to(cuda));
    CHECK(at::equal(gpu_k.cpu(), ref_k));
    CHECK(at::equal(gpu_v.cpu(), ref_v));
  }
}

}  // namespace
}  // namespace dsocr::engine

#include "engine/kernels/kv_cache_ops.h"

#include <ATen/ATen.h>

#ifdef DSOCR_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "engine/kernels/write_kv_cache.h"
#endif

namespace dsocr::engine {
namespace {

void check_shapes(const at::Tensor& key, const at::Tensor& value, const at::Tensor& key_cache,
                  const at::Tensor& value_cache, const at::Tensor& slot_mapping) {
  TORCH_CHECK(key.dim() == 3 && value.sizes() == key.sizes(),
              "key/value must be [tokens, heads, head_dim] of one shape, got ", key.sizes(),
              " and ", value.sizes());
  TORCH_CHECK(key_cache.dim() == 4 && value_cache.sizes() == key_cache.sizes(),
              "caches must be [blocks, block_size, heads, head_dim] of one shape, got ",
              key_cache.sizes(), " and ", value_cache.sizes());
  TORCH_CHECK(key.size(1) == key_cache.size(2) && key.size(2) == key_cache.size(3),
              "head layout of key ", key.sizes(), " does not match the cache ", key_cache.sizes());
  TORCH_CHECK(slot_mapping.dim() == 1 && slot_mapping.size(0) == key.size(0) &&
                  slot_mapping.scalar_type() == at::kLong,
              "slot_mapping must be int64 [tokens]");
  TORCH_CHECK(key.scalar_type() == key_cache.scalar_type() &&
                  value.scalar_type() == value_cache.scalar_type(),
              "key/value dtype must match the cache dtype");
  TORCH_CHECK(key.device() == key_cache.device() && value.device() == key_cache.device() &&
                  value_cache.device() == key_cache.device() &&
                  slot_mapping.device() == key_cache.device(),
              "all tensors must be on one device");
  TORCH_CHECK(key_cache.is_contiguous() && value_cache.is_contiguous(),
              "caches must be contiguous");
}

}  // namespace

void write_kv_cache_reference(const at::Tensor& key, const at::Tensor& value, at::Tensor& key_cache,
                              at::Tensor& value_cache, const at::Tensor& slot_mapping) {
  check_shapes(key, value, key_cache, value_cache, slot_mapping);
  at::Tensor keep = slot_mapping.ge(0);
  at::Tensor slots = slot_mapping.masked_select(keep);
  at::Tensor rows = keep.nonzero().squeeze(1);
  auto flat = [](at::Tensor& cache) { return cache.view({-1, cache.size(2), cache.size(3)}); };
  TORCH_CHECK(slots.numel() == 0 || slots.max().item<int64_t>() < flat(key_cache).size(0),
              "slot out of range of the cache");
  flat(key_cache).index_copy_(0, slots, key.index_select(0, rows));
  flat(value_cache).index_copy_(0, slots, value.index_select(0, rows));
}

void write_kv_cache(const at::Tensor& key, const at::Tensor& value, at::Tensor& key_cache,
                    at::Tensor& value_cache, const at::Tensor& slot_mapping) {
#ifdef DSOCR_WITH_CUDA
  if (key_cache.is_cuda()) {
    check_shapes(key, value, key_cache, value_cache, slot_mapping);
    TORCH_CHECK(key.stride(2) == 1 && key.stride(1) == key.size(2) && value.stride(2) == 1 &&
                    value.stride(1) == value.size(2),
                "each token's K/V row must be contiguous");
    if (key.size(0) == 0) return;
    c10::cuda::CUDAGuard guard(key_cache.device());
    const int64_t elem = key.element_size();
    cudaError_t err = kernels::launch_write_kv_cache(
        key.data_ptr(), value.data_ptr(), key.stride(0) * elem, value.stride(0) * elem,
        key_cache.data_ptr(), value_cache.data_ptr(), slot_mapping.data_ptr<int64_t>(), key.size(0),
        key.size(1) * key.size(2) * elem, key_cache.size(0) * key_cache.size(1),
        c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == cudaSuccess, "write_kv_cache kernel: ", cudaGetErrorString(err));
    return;
  }
#endif
  write_kv_cache_reference(key, value, key_cache, value_cache, slot_mapping);
}

}  // namespace dsocr::engine

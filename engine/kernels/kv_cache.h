// KvCache: the paged key/value storage of every language-model layer, preallocated once.
//
// Per layer one key and one value tensor [num_blocks, block_size, num_kv_heads, head_dim] in the
// model dtype (layout of kv_cache_ops.h). Which block holds what is decided by the torch-free
// BlockManager; this class only owns the memory.
//
// Thread-safety: owned and used by the engine thread.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <vector>

namespace dsocr::engine {

namespace kernels {
class FlashInferPagedAttention;
}

struct KvCache {
  int64_t num_blocks = 0;
  int64_t block_size = 0;
  std::vector<at::Tensor> keys;  // one per layer
  std::vector<at::Tensor> values;
  // The GPU attention kernels planned over this cache (paged_attention.h); null on the CPU or
  // when the reference path serves.
  std::shared_ptr<kernels::FlashInferPagedAttention> gpu_attention;

  static KvCache allocate(int64_t layers, int64_t num_blocks, int64_t block_size, int64_t kv_heads,
                          int64_t head_dim, at::ScalarType dtype, at::Device device) {
    KvCache cache;
    cache.num_blocks = num_blocks;
    cache.block_size = block_size;
    auto options = at::TensorOptions().dtype(dtype).device(device);
    for (int64_t i = 0; i < layers; ++i) {
      cache.keys.push_back(at::zeros({num_blocks, block_size, kv_heads, head_dim}, options));
      cache.values.push_back(at::zeros({num_blocks, block_size, kv_heads, head_dim}, options));
    }
    return cache;
  }

  // Bytes one block takes across all layers (K and V): the unit of KV memory sizing.
  static int64_t bytes_per_block(int64_t layers, int64_t block_size, int64_t kv_heads,
                                 int64_t head_dim, int64_t dtype_bytes) {
    return 2 * layers * block_size * kv_heads * head_dim * dtype_bytes;
  }
};

}  // namespace dsocr::engine

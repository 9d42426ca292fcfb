// Writing new keys and values into the paged KV cache.
//
// Layout (one pair of tensors per layer):
//   key_cache, value_cache: [num_blocks, block_size, num_kv_heads, head_dim], contiguous
//   key, value:             [num_tokens, num_kv_heads, head_dim], each token row contiguous
//   slot_mapping:           [num_tokens] int64, slot = block_id * block_size + offset_in_block;
//                           a negative slot means "do not store" (padding tokens).
// Token t's K/V row goes to cache row slot_mapping[t] of the cache viewed as
// [num_blocks * block_size, num_kv_heads, head_dim].
//
// write_kv_cache() dispatches on the device: the CUDA kernel (engine/kernels/) when the tensors
// live on a GPU and dsocr was built with DSOCR_CUDA, otherwise write_kv_cache_reference(), the
// libtorch path that defines the semantics and that the kernel is tested against.
//
// Thread-safety: callers serialise writes to one cache (the engine thread owns it).
// Invariants (the caller's, checked by the reference path): key and value have the same shape;
// every non-negative slot is < num_blocks * block_size; no two tokens of one call share a slot
// (the scheduler gives each token position its own slot), so the write order does not matter.
#pragma once

#include <ATen/core/Tensor.h>

namespace dsocr::engine {

void write_kv_cache(const at::Tensor& key, const at::Tensor& value, at::Tensor& key_cache,
                    at::Tensor& value_cache, const at::Tensor& slot_mapping);

void write_kv_cache_reference(const at::Tensor& key, const at::Tensor& value, at::Tensor& key_cache,
                              at::Tensor& value_cache, const at::Tensor& slot_mapping);

}  // namespace dsocr::engine

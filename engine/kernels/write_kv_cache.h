// CUDA kernel behind engine::write_kv_cache (see engine/kernels/kv_cache_ops.h for the layout). Plain
// C++ interface with raw pointers so the .cu file needs no torch headers (fast nvcc builds).
// The copy is dtype-agnostic: a K/V row is `row_bytes` contiguous bytes.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsocr::engine::kernels {

// Copies row t of key/value to row slots[t] of the caches, for every t with slots[t] >= 0 and
// slots[t] < num_slots (out-of-range slots are skipped; the caller validates beforehand).
// Returns the launch error, if any.
cudaError_t launch_write_kv_cache(const void* key, const void* value, int64_t key_stride_bytes,
                                  int64_t value_stride_bytes, void* key_cache, void* value_cache,
                                  const int64_t* slots, int64_t num_tokens, int64_t row_bytes,
                                  int64_t num_slots, cudaStream_t stream);

}  // namespace dsocr::engine::kernels

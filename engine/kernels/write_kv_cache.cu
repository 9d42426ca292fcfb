#include "engine/kernels/write_kv_cache.h"

namespace dsocr::engine::kernels {
namespace {

// One thread block per token; its threads copy the token's K and V rows in `Unit`-sized pieces.
template <typename Unit>
__global__ void write_kv_cache_kernel(const char* __restrict__ key, const char* __restrict__ value,
                                      int64_t key_stride, int64_t value_stride,
                                      char* __restrict__ key_cache, char* __restrict__ value_cache,
                                      const int64_t* __restrict__ slots, int64_t row_units,
                                      int64_t num_slots) {
  const int64_t token = blockIdx.x;
  const int64_t slot = slots[token];
  if (slot < 0 || slot >= num_slots) return;
  const Unit* k_src = reinterpret_cast<const Unit*>(key + token * key_stride);
  const Unit* v_src = reinterpret_cast<const Unit*>(value + token * value_stride);
  const int64_t row_bytes = row_units * static_cast<int64_t>(sizeof(Unit));
  Unit* k_dst = reinterpret_cast<Unit*>(key_cache + slot * row_bytes);
  Unit* v_dst = reinterpret_cast<Unit*>(value_cache + slot * row_bytes);
  for (int64_t i = threadIdx.x; i < row_units; i += blockDim.x) {
    k_dst[i] = k_src[i];
    v_dst[i] = v_src[i];
  }
}

bool aligned_to(const void* p, int64_t stride, int64_t row_bytes, int64_t unit) {
  return reinterpret_cast<uintptr_t>(p) % unit == 0 && stride % unit == 0 && row_bytes % unit == 0;
}

template <typename Unit>
cudaError_t launch(const void* key, const void* value, int64_t key_stride, int64_t value_stride,
                   void* key_cache, void* value_cache, const int64_t* slots, int64_t num_tokens,
                   int64_t row_bytes, int64_t num_slots, cudaStream_t stream) {
  const int64_t row_units = row_bytes / static_cast<int64_t>(sizeof(Unit));
  const int threads = static_cast<int>(row_units < 256 ? (row_units + 31) / 32 * 32 : 256);
  write_kv_cache_kernel<Unit><<<static_cast<unsigned>(num_tokens), threads, 0, stream>>>(
      static_cast<const char*>(key), static_cast<const char*>(value), key_stride, value_stride,
      static_cast<char*>(key_cache), static_cast<char*>(value_cache), slots, row_units, num_slots);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_write_kv_cache(const void* key, const void* value, int64_t key_stride_bytes,
                                  int64_t value_stride_bytes, void* key_cache, void* value_cache,
                                  const int64_t* slots, int64_t num_tokens, int64_t row_bytes,
                                  int64_t num_slots, cudaStream_t stream) {
  if (num_tokens == 0 || row_bytes == 0) return cudaSuccess;
  // The widest copy unit every pointer, stride and row length allows.
  auto fits = [&](int64_t unit) {
    return aligned_to(key, key_stride_bytes, row_bytes, unit) &&
           aligned_to(value, value_stride_bytes, row_bytes, unit) &&
           aligned_to(key_cache, 0, row_bytes, unit) && aligned_to(value_cache, 0, row_bytes, unit);
  };
  if (fits(16)) {
    return launch<uint4>(key, value, key_stride_bytes, value_stride_bytes, key_cache, value_cache,
                         slots, num_tokens, row_bytes, num_slots, stream);
  }
  if (fits(4)) {
    return launch<uint32_t>(key, value, key_stride_bytes, value_stride_bytes, key_cache,
                            value_cache, slots, num_tokens, row_bytes, num_slots, stream);
  }
  return launch<uint8_t>(key, value, key_stride_bytes, value_stride_bytes, key_cache, value_cache,
                         slots, num_tokens, row_bytes, num_slots, stream);
}

}  // namespace dsocr::engine::kernels

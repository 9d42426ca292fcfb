// Causal attention of a flattened batch over the paged KV cache.
//
// Reference path (the correctness baseline for any faster kernel): each sequence's keys and
// values are gathered through its block table and attended with scaled_dot_product_attention
// under a causal mask offset by the tokens already in the cache. Decode rows (q_len == 1) of all
// sequences run as one padded batched call; prefill chunks run one call each.
// On the CPU, decode rows go to cpu::paged_decode_attention instead (cpu_kernels.h: reads K/V in
// place, no padded copy); prefill chunks always take the reference path.
//
// On CUDA in bfloat16 with a GpuAttention (FlashInfer's kernels, flashinfer_attention.h) the
// cache is read in place: a step whose sequences all decode runs FlashInfer's batch decode; any
// other step runs its batch prefill over every sequence (decode rows are chunks of one row),
// the rows already in sequence order, so nothing is gathered or padded.
//
// The gather indices and masks (or FlashInfer's plan) depend only on the batch, not on the
// layer: AttentionPlan builds them once per forward and every layer reuses them.
//
// Thread-safety: reads the cache; the engine thread serialises steps.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <vector>

#include "engine/kernels/cpu_kernels.h"
#include "engine/kernels/forward_batch.h"

namespace dsocr::engine {

namespace kernels {
class FlashInferPagedAttention;
}
using GpuAttention = kernels::FlashInferPagedAttention;

// The GPU attention kernels for a cache of `num_blocks` blocks on `device`, or null when this
// build has no CUDA kernels or the shapes are not the compiled ones (the reference path then
// serves; the reason is logged). `max_graph_batch` > 0 also sets up CUDA-graph decode for up to
// that many sequences of at most `max_graph_pages_per_seq` blocks each.
std::shared_ptr<GpuAttention> make_gpu_attention(at::Device device, int64_t heads, int64_t kv_heads,
                                                 int64_t head_dim, int64_t block_size,
                                                 int64_t num_blocks, at::ScalarType cache_dtype,
                                                 int64_t max_graph_batch = 0,
                                                 int64_t max_graph_pages_per_seq = 0);

struct AttentionPlan {
  struct Prefill {
    int64_t q_start = 0, q_len = 0;
    at::Tensor slots;  // [context_len] cache rows of positions 0 .. context_len-1
    at::Tensor mask;   // [q_len, context_len] bool, causal with the cached offset; undefined
                       // when nothing is cached before the chunk (SDPA's is_causal then)
  };
  std::vector<Prefill> prefills;
  int64_t num_decodes = 0, decode_max_len = 0;
  at::Tensor decode_rows;   // [B] batch rows of the decode tokens
  at::Tensor decode_slots;  // [B * max_len] (padding points at row 0, masked out)
  at::Tensor decode_mask;   // [B, 1, 1, max_len] bool
  // Set instead of the three above when decodes run in the CPU kernel; points into the batch.
  std::vector<cpu::DecodeQuery> cpu_decodes;
  // Set (instead of everything above) when the step runs in the GPU kernels, planned for it.
  GpuAttention* gpu = nullptr;
  bool gpu_decode_only = false;  // planned as decode (else as prefill over every sequence)

  // `reference` forces the reference path (tests compare the two). `gpu`: the cache's GPU
  // kernels, used when set and the step's dtype is theirs. `for_graph`: a decode-only step
  // planned in the kernels' CUDA-graph mode (decode_graphs.h); throws when it cannot be.
  static AttentionPlan build(const ForwardBatch& batch, int64_t block_size, at::Device device,
                             int64_t heads, int64_t head_dim, bool reference = false,
                             GpuAttention* gpu = nullptr, bool for_graph = false);
};

// query: [T, heads, head_dim] (RoPE applied); caches as in kv_cache_ops.h with this step's K/V
// already written. Returns [T, heads, head_dim].
at::Tensor paged_attention(const at::Tensor& query, const at::Tensor& key_cache,
                           const at::Tensor& value_cache, const AttentionPlan& plan, double scale);

// The cache slots of positions [0, context_len) of a sequence.
std::vector<int64_t> context_slots(const SequenceSlice& seq, int64_t block_size);

}  // namespace dsocr::engine

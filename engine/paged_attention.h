// Causal attention of a flattened batch over the paged KV cache (the reference path).
//
// Each sequence's keys and values are gathered through its block table and attended with
// scaled_dot_product_attention under a causal mask offset by the tokens already in the cache.
// Decode rows (q_len == 1) of all sequences run as one padded batched call; prefill chunks run
// one call each. This is the correctness baseline for any faster kernel.
//
// Thread-safety: reads the cache; the engine thread serialises steps.
#pragma once

#include <ATen/ATen.h>

#include "engine/forward_batch.h"

namespace dsocr::engine {

// query: [T, heads, head_dim] (RoPE applied); caches as in kv_cache_ops.h with this step's K/V
// already written. Returns [T, heads, head_dim].
at::Tensor paged_attention(const at::Tensor& query, const at::Tensor& key_cache,
                           const at::Tensor& value_cache, const ForwardBatch& batch, double scale);

// The cache slots of positions [0, context_len) of a sequence.
std::vector<int64_t> context_slots(const SequenceSlice& seq, int64_t block_size);

}  // namespace dsocr::engine

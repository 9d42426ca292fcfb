// CPU kernels for decode steps, where libtorch's general paths spend more time moving memory and
// waking threads than computing.
//
// Decode attention: one query token per sequence attending over that sequence's keys and
// values read in place through its block table. The reference path (paged_attention.h) first
// gathers every sequence's K/V into a padded copy: twice the memory traffic of the attention
// itself, which at 16 sequences of ~1,200 tokens was a third of a decode step.
//
// Each (sequence, head) is computed from its own inputs only, in an order fixed by the shapes,
// so a sequence's result does not depend on what else is in the batch (batch invariance by
// construction). Work is split over at::parallel_for's threads.
//
// Inputs are row-major and contiguous; float32 or bfloat16 (raw bits); head_dim a multiple of 8
// up to kMaxHeadDim (the model's 128, the presets' 16 and 64) and at most kMaxHeads heads
// (`attention_supported()`; other shapes take the reference path).
//
// Thread-safety: pure functions of their arguments.
// Torch-free header.
#pragma once

#include <cstdint>
#include <span>

namespace dsocr::engine::cpu {

enum class Dtype { kFloat32, kBFloat16 };

constexpr int64_t kMaxHeadDim = 256;
constexpr int64_t kMaxHeads = 64;

struct DecodeQuery {
  int64_t row = 0;                       // row of query and out
  int64_t context_len = 0;               // attends to positions [0, context_len)
  const int32_t* block_table = nullptr;  // covers every position below context_len
};

struct PagedAttentionArgs {
  const void* query = nullptr;  // [rows, heads, head_dim], RoPE applied
  void* out = nullptr;          // [rows, heads, head_dim]; rows not queried are left as they are
  const void* key_cache = nullptr;    // [blocks, block_size, kv_heads, head_dim]
  const void* value_cache = nullptr;  // same shape
  Dtype dtype = Dtype::kFloat32;      // of query, out and both caches
  int64_t heads = 0, kv_heads = 0, head_dim = 0, block_size = 0;
  float scale = 1.0f;
};

void paged_decode_attention(const PagedAttentionArgs& args, std::span<const DecodeQuery> queries);

// How many threads at::parallel_for really uses in these kernels: at::get_num_threads() when this
// file was built with OpenMP, 1 when it was not (the header then runs every loop serially, and
// silently: it cost every kernel half the machine before it was caught). Logged at engine start.
int parallel_threads();

// The routed experts of one MoE layer for a few tokens (decode steps). Per expert, its tokens'
// rows go through gate/up, SiLU(gate) * up and down in one pass over that expert's weights, with
// experts split over threads in one parallel region. libtorch's path runs ~8 ops per expert,
// each a thread wake-up and an MKL call that repacks the weights: 12 ms per layer for 16 tokens
// on `small`, for 25 MFLOP.
//
// x: [tokens, hidden] float32; w_gate, w_up: [experts, inter, hidden]; w_down: [experts, hidden,
// inter] (contiguous), float32 or bfloat16 (raw bits, `weight_dtype`): bfloat16 weights are
// widened to float32 as they are loaded, so the arithmetic is float32 either way and a bfloat16
// expert gives exactly what the same weights widened to float32 give. Assignment
// a = token * top_k + slot goes to expert experts[a] with weight weights[a]. Writes out[tokens, hidden] = sum over a token's assignments
// of weight * expert(x) (overwritten, not accumulated), each token's sum in slot order.
struct MoeArgs {
  const float* x = nullptr;
  int64_t tokens = 0, hidden = 0, inter = 0, num_experts = 0, top_k = 0;
  const void* w_gate = nullptr;
  const void* w_up = nullptr;
  const void* w_down = nullptr;
  Dtype weight_dtype = Dtype::kFloat32;
  const int64_t* experts = nullptr;  // [tokens * top_k]
  const float* weights = nullptr;    // [tokens * top_k]
  float* out = nullptr;
};
void moe_experts(const MoeArgs& args);
inline bool moe_supported(int64_t hidden, int64_t inter) {
  return hidden % 8 == 0 && inter % 8 == 0 && hidden > 0 && inter > 0;
}

// x·Wᵀ for a few rows of x against a large W packed once into column panels: the CPU lm_head
// (129,280 x hidden), where MKL's sgemm reaches ~50 GFLOPS at 16 rows on a Zen 3 core pair and
// this ~130 (it is bound by streaming W from memory; the next panel is prefetched).
//
// Panel p holds rows [16p, 16p + 16) of W transposed, k-major: panels[p][k][j] = W[16p + j][k],
// the last panel zero-padded. Each output is one float32 FMA chain over k in order, so a row's
// result does not depend on how many other rows are in the call (batch invariance).
//
// x: [rows, k] float32 contiguous; out: [rows, n] float32 contiguous (overwritten).
constexpr int64_t kPanelWidth = 16;
// Panels for a W of n rows: the packed buffer is [panel_count(n), k, kPanelWidth] floats.
inline int64_t panel_count(int64_t n) { return (n + kPanelWidth - 1) / kPanelWidth; }
void pack_panels(const float* w, int64_t n, int64_t k, float* panels);
void matmul_panels(const float* x, int64_t rows, int64_t k, const float* panels, int64_t n,
                   float* out);

inline bool attention_supported(int64_t heads, int64_t head_dim) {
  return heads > 0 && heads <= kMaxHeads && head_dim > 0 && head_dim % 8 == 0 &&
         head_dim <= kMaxHeadDim;
}

}  // namespace dsocr::engine::cpu

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
  Dtype dtype = Dtype::kFloat32;        // of query and out
  Dtype cache_dtype = Dtype::kFloat32;  // of both caches (bfloat16 under float32: --kv-cache-dtype)
  int64_t heads = 0, kv_heads = 0, head_dim = 0, block_size = 0;
  float scale = 1.0f;
};

void paged_decode_attention(const PagedAttentionArgs& args, std::span<const DecodeQuery> queries);

// How many threads at::parallel_for really uses in these kernels: at::get_num_threads() when this
// file was built with OpenMP, 1 when it was not (the header then runs every loop serially, and
// silently: it cost every kernel half the machine before it was caught). Logged at engine start.
int parallel_threads();

// A weight matrix W [rows, cols], row-major and contiguous as a checkpoint stores it, in one of
// the formats the CPU keeps language-model weights in (issue #21): float32, bfloat16 (raw bits,
// used as stored), or int8 in groups of kInt8Group consecutive values of a row, each group with
// its own float32 scale: W[r][c] = data[r][c] * scales[r][c / kInt8Group] (symmetric, scale =
// max |group| / 127: quantize_int8; llama.cpp's Q8_0 groups the same way). Per-group rather than
// per-row scales keep a few large values of a row from coarsening all the others. The kernels
// widen each weight to float32 as it is loaded and compute in float32, so a narrow matrix gives
// what its float32 widening (widen()) gives, up to the order of float32 sums.
enum class WeightFormat { kFloat32, kBFloat16, kInt8 };
constexpr int64_t weight_format_bytes(WeightFormat f) {
  return f == WeightFormat::kFloat32 ? 4 : f == WeightFormat::kBFloat16 ? 2 : 1;
}
const char* weight_format_name(WeightFormat f);

constexpr int64_t kInt8Group = 32;
// Scale groups per row of an int8 matrix (the last one may be shorter).
constexpr int64_t int8_groups(int64_t cols) { return (cols + kInt8Group - 1) / kInt8Group; }

struct WeightMatrix {
  const void* data = nullptr;
  const float* scales = nullptr;  // kInt8 only: [rows, int8_groups(cols)]
  WeightFormat format = WeightFormat::kFloat32;
  int64_t rows = 0, cols = 0;

  // Rows [first, first + count) as a matrix of their own (an expert of a stacked set).
  WeightMatrix row_slice(int64_t first, int64_t count) const {
    WeightMatrix m = *this;
    m.data = static_cast<const char*>(data) + first * cols * weight_format_bytes(format);
    if (scales != nullptr) m.scales = scales + first * int8_groups(cols);
    m.rows = count;
    return m;
  }
};

// out[r][j] = dot(x[r], W[j]) for r < x_rows, j < w.rows: x [x_rows, w.cols] float32, out
// [x_rows, w.rows] float32 (overwritten). One pass over W, split by rows of W over
// at::parallel_for's threads; every row of x meets a block of W while it is in L1. A row's result
// does not depend on the other rows of x (batch invariance). Meant for few rows (decode steps):
// it is bound by reading W, which is why narrow weights make it faster; for many rows a
// widen-then-sgemm path is faster (engine/model/stored_weight.h).
void linear(const float* x, int64_t x_rows, const WeightMatrix& w, float* out);

// W's rows [first, first + count) widened to float32, row-major into out [count, w.cols]
// (exact: bfloat16 widens losslessly, int8 is data * scale in float32).
void widen(const WeightMatrix& w, int64_t first, int64_t count, float* out);

// Symmetric int8 quantization of a float32 or bfloat16 matrix [rows, cols] in groups (above):
// scales[r][g] = max |group| / 127 (0 for an all-zero group), q = W / scale rounded to nearest
// even, so |W - q * scale| <= scale / 2 elementwise. scales: [rows, int8_groups(cols)]. Parallel
// over rows. Non-finite weights (NaN, inf) cannot be held: they become 0, are left out of their
// group's scale, and are counted in the result (the caller refuses such weights).
int64_t quantize_int8(const void* w, Dtype dtype, int64_t rows, int64_t cols, int8_t* q,
                      float* scales);

// The routed experts of one MoE layer (decode steps; with narrow weights, every step). Per
// expert, its tokens' rows go through gate/up, SiLU(gate) * up and down in one pass over that
// expert's weights, with experts split over threads in one parallel region. libtorch's path runs
// ~8 ops per expert, each a thread wake-up and an MKL call that repacks the weights: 12 ms per
// layer for 16 tokens on `small`, for 25 MFLOP. An expert with many tokens (prefill) first widens
// its narrow weights into float32 scratch, so the conversion is paid once, not once per row.
//
// x: [tokens, hidden] float32; the stacked expert weights gate, up: [experts * inter, hidden],
// down: [experts * hidden, inter] (expert e's rows follow expert e-1's), any WeightFormat, all
// three the same. Assignment a = token * top_k + slot goes to expert experts[a] with weight
// weights[a]. Writes out[tokens, hidden] = sum over a token's assignments of weight * expert(x)
// (overwritten, not accumulated), each token's sum in slot order.
struct MoeArgs {
  const float* x = nullptr;
  int64_t tokens = 0, hidden = 0, inter = 0, num_experts = 0, top_k = 0;
  WeightMatrix gate, up, down;
  const int64_t* experts = nullptr;  // [tokens * top_k]
  const float* weights = nullptr;    // [tokens * top_k]
  float* out = nullptr;
};
void moe_experts(const MoeArgs& args);
inline bool moe_supported(int64_t hidden, int64_t inter) {
  return hidden % 8 == 0 && inter % 8 == 0 && hidden > 0 && inter > 0;
}
// linear() and widen() need cols % 8 == 0.
inline bool linear_supported(int64_t cols) { return cols > 0 && cols % 8 == 0; }

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

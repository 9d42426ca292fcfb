// FlashInferPagedAttention: causal attention over the paged KV cache on the GPU, with FlashInfer's
// header-only kernels instantiated ahead of time in our build (flashinfer_attention.cu; no JIT,
// no Python at run time).
//
// One step of the engine runs up to two kinds of attention, each planned once per step and run
// once per layer:
//   decode  — every sequence has exactly one query row (FlashInfer's batch decode kernel);
//   prefill — every sequence has q_len >= 1 query rows (a prompt chunk) on top of kv_len - q_len
//             positions already in the cache (FlashInfer's FA2 batch prefill over a paged KV
//             cache, causal mask): row i of a sequence attends to positions [0, kv_len-q_len+i].
// In both kinds this step's K/V must already be written to the cache (write_kv_cache.h).
//
// Compiled configuration (fixed at build time): bf16 queries, cache and output; head_dim 128;
// K and V caches as two separate tensors [num_pages, page_size, num_kv_heads, head_dim]
// (FlashInfer's NHD layout), contiguous; int32 page indices; no positional encoding (RoPE is
// applied by the caller), no sliding window, no soft-cap, no ALiBi. Page size and head counts are
// runtime values (num_qo_heads / num_kv_heads must be 1, 2, 3, 4, 6, 8 or 16).
//
// Usage per step (all calls on one CUDA stream):
//   attn.plan_decode(decode.view(), stream);            // host arrays; copied before return
//   attn.plan_prefill(prefill.qo_indptr(), prefill.view(), stream);  // (PageTableBuilders)
//   for each layer:
//     attn.run_decode(q_dec, k_cache[l], v_cache[l], out_dec, stream);
//     attn.run_prefill(q_pre, k_cache[l], v_cache[l], out_pre, stream);
// A plan stays valid until the next plan of the same kind; run may be called any number of times
// in between. Queries and outputs are [rows, num_qo_heads, head_dim] bf16 with rows of the
// sequences concatenated in plan order (decode: one row per sequence; prefill: qo_indptr).
//
// CUDA graphs (decode only; FlashInfer's enable_cuda_graph mode of DecodePlan). Enabled by
// Config::max_graph_batch > 0, which gives graph decode its own device buffers, allocated once in
// create() and never moved: the page table (capacity max_graph_batch sequences and
// max_graph_pages page-table entries), FlashInfer's integer workspace (scheduler output) and
// float workspace (split-KV partial outputs). plan_decode_graph(pages, stream) plans exactly
// P = pages.num_seqs sequences (the caller pads its B <= P real sequences with dummy ones, e.g.
// PageTableBuilder::add(&scratch_block, 1)) and rewrites those buffers by host-to-device copies
// on `stream`; run_decode then enqueues a launch that depends on P only:
//   fixed per P: kernel choice (split-KV or not: decided from P and the GPU's occupancy alone,
//     never from the page table), grid (split-KV: as many CTAs as fit on the GPU at once, idle
//     ones masked by block_valid_mask; otherwise P x num_kv_heads), block dims, shared memory,
//     and every kernel argument the wrapper supplies (workspace and page-table addresses,
//     workspace offsets, batch size P, padded batch size, scale, strides);
//   rewritten per plan (device memory at those fixed addresses): page indptr, page indices,
//     last_page_len, the split-KV work partition (request/kv-tile indices, output indptr, chunk
//     size) and block_valid_mask.
// The arguments the caller supplies (q, caches, out, stream, q_row_stride) must of course be the
// same at capture and at replay. The first plan_decode_graph for a given P records its launch;
// every later one for that P is compared with it and fails with FAILED_PRECONDITION if it would
// launch differently (impossible by construction; a safety net: fall back to eager then).
// Graph-mode failures leave the device buffers of an earlier plan in an unspecified state: after
// any failed plan_decode_graph, do not replay a graph before a successful one.
//
// Per step with a graph: plan_decode_graph on the replay stream (outside any capture), then
// replay the graph captured for P on that same stream (stream order keeps the previous step's
// kernels ahead of the copies and the copies ahead of the replay). At capture time:
// plan_decode_graph for a P-sequence page table (any valid one), then capture the forward, whose
// run_decode calls (one per layer) enqueue only kernel launches: no synchronisation, no copies,
// no allocation. run_decode runs whichever decode plan came last, eager (plan_decode) or graph
// (plan_decode_graph), so one forward serves both; eager plans and graph plans have separate
// buffers and never disturb each other. Prefill has no graph mode.
//
// Errors: every method returns a dsocr::Status and never throws or aborts (FlashInfer's own
// exceptions are caught and turned into INTERNAL errors; malformed page tables are
// INVALID_ARGUMENT and leave that kind unplanned, so a later run fails with FAILED_PRECONDITION
// instead of reading garbage).
//
// Thread-safety: none; one engine thread owns the object. All calls of a step must go to the
// same stream (the plans write device workspaces that the previous step's kernels may still be
// reading; stream order is what makes that safe).
//
// Invariants: page indices are < num_pages of the cache (checked when Config::num_pages > 0);
// for every sequence 1 <= last_page_len <= page_size and it owns >= 1 page; for prefill
// sequences q_len >= 1 and q_len <= kv_len = (pages - 1) * page_size + last_page_len.
//
// This header includes no CUDA or torch headers: pointers and streams are void*.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "common/status.h"

namespace dsocr::engine::kernels {

// Host-side page table of a batch of sequences (FlashInfer's paged_kv_* arrays). Only read during
// the plan call that receives it; the pointers may be null when num_seqs is 0.
struct PageTableView {
  int32_t num_seqs = 0;
  const int32_t* page_indptr = nullptr;    // [num_seqs + 1]: 0, then running page counts
  const int32_t* page_indices = nullptr;   // [page_indptr[num_seqs]] cache block ids, in order
  const int32_t* last_page_len = nullptr;  // [num_seqs] tokens in each sequence's last page
};

// Builds the host arrays of one kind (decode or prefill) from the sequences' block tables, in
// the order the sequences' rows appear in the query tensor. Reuse one per kind across steps
// (clear() keeps the capacity).
class PageTableBuilder {
 public:
  explicit PageTableBuilder(int page_size) : page_size_(page_size) { clear(); }

  void clear() {
    page_indptr_.assign(1, 0);
    page_indices_.clear();
    last_page_len_.clear();
    qo_indptr_.assign(1, 0);
  }

  // A sequence with context_len >= 1 positions in the cache after this step (this step's rows
  // included), of which the last q_len are this step's query rows (1 for decode). block_table
  // holds at least ceil(context_len / page_size) blocks; only those are used.
  void add(const int32_t* block_table, int64_t context_len, int64_t q_len = 1) {
    const int64_t pages = (context_len + page_size_ - 1) / page_size_;
    page_indices_.insert(page_indices_.end(), block_table, block_table + pages);
    page_indptr_.push_back(static_cast<int32_t>(page_indices_.size()));
    last_page_len_.push_back(static_cast<int32_t>(context_len - (pages - 1) * page_size_));
    qo_indptr_.push_back(static_cast<int32_t>(qo_indptr_.back() + q_len));
  }

  PageTableView view() const {
    return PageTableView{static_cast<int32_t>(last_page_len_.size()), page_indptr_.data(),
                         page_indices_.data(), last_page_len_.data()};
  }
  const int32_t* qo_indptr() const { return qo_indptr_.data(); }  // for plan_prefill
  int64_t rows() const { return qo_indptr_.back(); }

 private:
  int page_size_;
  std::vector<int32_t> page_indptr_, page_indices_, last_page_len_, qo_indptr_;
};

class FlashInferPagedAttention {
 public:
  struct Config {
    int num_qo_heads = 0;
    int num_kv_heads = 0;
    int head_dim = 128;  // the only compiled value
    int page_size = 16;
    int device = 0;         // CUDA device index of the caches; plan/run switch to it if needed
    int64_t num_pages = 0;  // cache blocks; page indices are bounds-checked when > 0
    double sm_scale = 0;    // softmax scale; 0 means 1 / sqrt(head_dim)
    // Device workspaces (FlashInfer's split-KV partial outputs and scheduler metadata). The
    // defaults hold any batch on GPUs with up to ~400 SMs for 10 heads (see the .cu).
    size_t decode_float_workspace_bytes = 16u << 20;
    size_t prefill_float_workspace_bytes = 64u << 20;
    size_t int_workspace_bytes = 8u << 20;  // per kind, plus as much pinned host memory
    // Graph decode (plan_decode_graph): at most max_graph_batch sequences (padding included) and
    // max_graph_pages page-table entries in one plan (sum over the sequences of
    // ceil(context_len / page_size), dummies included; shared prefix blocks count once per
    // sequence; e.g. max_graph_batch * ceil(max_model_len / page_size)). 0 disables graph mode
    // (no buffers allocated); with max_graph_batch > 0, max_graph_pages must be > 0. Graph decode
    // gets its own float workspace of decode_float_workspace_bytes and integer workspace of
    // int_workspace_bytes (plus as much pinned host memory).
    int max_graph_batch = 0;
    int64_t max_graph_pages = 0;
  };

  // Allocates the workspaces, pinned staging buffers and events on config.device.
  static StatusOr<std::unique_ptr<FlashInferPagedAttention>> create(const Config& config);

  ~FlashInferPagedAttention();
  FlashInferPagedAttention(const FlashInferPagedAttention&) = delete;
  FlashInferPagedAttention& operator=(const FlashInferPagedAttention&) = delete;

  // Plans the decode sequences of this step (num_seqs may be 0: run_decode is then a no-op).
  // Copies the page table to device buffers this object owns and runs FlashInfer's scheduler
  // (host work; may wait for the previous decode plan's host-to-device copy to finish).
  Status plan_decode(const PageTableView& pages, void* stream);

  // Plans the decode sequences of this step for a CUDA graph captured for P = pages.num_seqs
  // sequences (see the header comment: the run_decode launch depends on P only). Like
  // plan_decode, host work plus host-to-device copies on `stream` (may wait for this mode's
  // previous copies); never call it inside a stream capture. Errors, after which graph decode is
  // unplanned and the step must run eagerly (plan_decode):
  //   FAILED_PRECONDITION  graph mode off (max_graph_batch 0), or the launch would differ from
  //                        the one recorded for P by the first plan for P;
  //   RESOURCE_EXHAUSTED   P > max_graph_batch or more than max_graph_pages page-table entries;
  //   INVALID_ARGUMENT     P == 0 or a malformed page table (as plan_decode);
  //   INTERNAL             a CUDA or FlashInfer failure (e.g. a workspace too small).
  Status plan_decode_graph(const PageTableView& pages, void* stream);

  // Plans the prefill sequences of this step; qo_indptr is [num_seqs + 1] host int32, 0 first,
  // giving each sequence's rows in the query/output tensors.
  Status plan_prefill(const int32_t* qo_indptr, const PageTableView& pages, void* stream);

  // Enqueues attention of one layer on `stream`. q: [rows, num_qo_heads, head_dim] bf16 (rows:
  // decode_rows() / prefill_rows()) whose rows are q_row_stride elements apart (0: contiguous,
  // num_qo_heads * head_dim; a larger stride lets q be a slice of a fused QKV projection); heads
  // within a row are contiguous. k_cache/v_cache: this layer's caches; out: [rows, num_qo_heads,
  // head_dim] bf16, contiguous, not aliasing q. Pointers must be 16-byte aligned.
  // run_decode runs the latest decode plan, eager or graph; after a graph plan it only launches
  // kernels (no synchronisation, copies or allocation), so it may be called inside a stream
  // capture, and the launch depends on P only (header comment).
  Status run_decode(const void* q, const void* k_cache, const void* v_cache, void* out,
                    void* stream, int64_t q_row_stride = 0);
  Status run_prefill(const void* q, const void* k_cache, const void* v_cache, void* out,
                     void* stream, int64_t q_row_stride = 0);

  // Rows the current plans expect (0 when unplanned or empty); decode_rows() is that of the
  // latest decode plan, eager or graph.
  int64_t decode_rows() const;
  int64_t prefill_rows() const;

  // Whether the latest decode plan (eager or graph) splits KV over several CTAs per sequence
  // (for tests and logs; with a graph plan it is a function of P only).
  bool decode_split_kv() const;

  const Config& config() const;

 private:
  struct Impl;
  explicit FlashInferPagedAttention(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsocr::engine::kernels

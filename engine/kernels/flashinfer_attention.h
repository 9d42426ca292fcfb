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

  // Plans the prefill sequences of this step; qo_indptr is [num_seqs + 1] host int32, 0 first,
  // giving each sequence's rows in the query/output tensors.
  Status plan_prefill(const int32_t* qo_indptr, const PageTableView& pages, void* stream);

  // Enqueues attention of one layer on `stream`. q: [rows, num_qo_heads, head_dim] bf16 (rows:
  // decode_rows() / prefill_rows()) whose rows are q_row_stride elements apart (0: contiguous,
  // num_qo_heads * head_dim; a larger stride lets q be a slice of a fused QKV projection); heads
  // within a row are contiguous. k_cache/v_cache: this layer's caches; out: [rows, num_qo_heads,
  // head_dim] bf16, contiguous, not aliasing q. Pointers must be 16-byte aligned.
  Status run_decode(const void* q, const void* k_cache, const void* v_cache, void* out,
                    void* stream, int64_t q_row_stride = 0);
  Status run_prefill(const void* q, const void* k_cache, const void* v_cache, void* out,
                     void* stream, int64_t q_row_stride = 0);

  // Rows the current plans expect (0 when unplanned or empty).
  int64_t decode_rows() const;
  int64_t prefill_rows() const;

  const Config& config() const;

 private:
  struct Impl;
  explicit FlashInferPagedAttention(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsocr::engine::kernels

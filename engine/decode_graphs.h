// DecodeGraphs: decode steps on a GPU replayed from CUDA graphs instead of launched op by op.
//
// A decode step of the language model is ~40 small kernels per layer; launched one by one from
// libtorch the host cannot keep up (one page measured 7.5 ms per step on an H200, almost all of
// it launch overhead). At start-up the step is captured once per batch size of
// decode_graph_sizes(max_num_seqs) (engine/core/decode_graph_sizes.h), largest first, all graphs
// sharing one memory pool. A step of B decode rows then:
//   1. pads its rows to the captured size P >= B with dummies (no K/V written, a zeroed scratch
//      block read);
//   2. copies ids, positions and KV slots into the persistent input tensors (one upload);
//   3. plans attention for its page tables with FlashInfer's graph mode (fixed launch for P);
//   4. replays P's graph; the logits of its B real rows are a view of P's output.
// Steps with prefill rows, image rows, rows that do not sample, or more rows than the largest
// size run eagerly.
//
// Thread-safety: none; owned and used by the engine thread (as the KV cache is).
// Invariants: the scratch block is no request's (the KV cache has one block more than the block
// manager hands out); a returned logits view is valid until the next run().
#pragma once

#include <ATen/ATen.h>

#include <spdlog/logger.h>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "engine/core/decode_graph_sizes.h"
#include "engine/kernels/kv_cache.h"
#include "engine/model/language_model.h"

namespace at::cuda {
struct CUDAGraph;
}

namespace dsocr::engine {

class DecodeGraphs {
 public:
  // Captures the graphs. Null (the reason logged) when the model is not on CUDA in bfloat16 with
  // the GPU attention kernels, or when a capture fails (decode then runs eagerly).
  static std::unique_ptr<DecodeGraphs> capture(model::LanguageModel language, KvCache& cache,
                                               int32_t scratch_block, int64_t max_batch,
                                               spdlog::logger& logger);
  ~DecodeGraphs();

  // Logits [B, vocab] float32 of a decode step of B = rows.ids.size() sequences, or an undefined
  // tensor when no graph holds B rows (the caller then runs the step eagerly).
  at::Tensor run(DecodeRows rows);

  const std::vector<int64_t>& sizes() const { return sizes_; }

 private:
  DecodeGraphs(model::LanguageModel language, KvCache& cache, int32_t scratch_block,
               int64_t max_batch);
  // The batch of the first `padded` persistent rows, with `rows`' page tables (host side; the
  // block tables are moved out of `rows`).
  ForwardBatch batch_for(DecodeRows&& rows, int64_t padded) const;
  // Plans attention for `rows` (exactly a captured size) in graph mode; throws on failure.
  AttentionPlan plan(const ForwardBatch& batch) const;

  model::LanguageModel language_;
  KvCache& cache_;
  int32_t scratch_block_;
  std::vector<int64_t> sizes_;
  at::Tensor inputs_;       // [3, max] int64 on the device: ids, positions, KV slots
  at::Tensor logits_rows_;  // [max] int64: 0, 1, 2, ...
  std::map<int64_t, std::unique_ptr<at::cuda::CUDAGraph>> graphs_;
  std::map<int64_t, at::Tensor> outputs_;  // per size: the captured step's logits [P, vocab]
};

}  // namespace dsocr::engine

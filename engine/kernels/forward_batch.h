// ForwardBatch: one model step over a flattened batch of sequences (torch-side, engine-internal).
//
// Tokens of all sequences are concatenated: sequence s owns rows [q_start, q_start + q_len) of
// input_ids/positions/slot_mapping. A row is a prefill-chunk token or a decode token alike; a
// sequence's context_len counts every token whose K/V is in the cache after this step (earlier
// chunks, cached prefix blocks and this step's rows), so its rows sit at positions
// context_len - q_len .. context_len - 1 and attend causally to all earlier ones.
//
// Built by ModelRunner (engine/model_runner.cpp) from a StepPlan, consumed by
// LanguageModel::forward and the paged-attention kernels.
//
// Thread-safety: a plain value, built and used on the engine thread within one step.
// Invariants (upheld by the model runner when building it): rows are contiguous per sequence and
// in sequence order; every slot of positions [0, context_len) is covered by the block table;
// slot_mapping[r] is the slot of positions[r] in that sequence's blocks; image_rows index rows
// whose input id is the image token, image_embeds has one row per entry of image_rows;
// logits_rows holds the last row of each sampling sequence, in plan order.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace dsocr::engine {

struct SequenceSlice {
  int64_t q_start = 0;
  int64_t q_len = 0;
  int64_t context_len = 0;
  std::vector<int32_t> block_table;
};

struct ForwardBatch {
  at::Tensor input_ids;     // [T] int64
  at::Tensor positions;     // [T] int64
  at::Tensor slot_mapping;  // [T] int64
  std::vector<SequenceSlice> sequences;
  at::Tensor image_rows;  // [R] int64 rows of the batch to take from image_embeds; may be undefined
  at::Tensor image_embeds;  // [R, hidden], model dtype
  at::Tensor
      logits_rows;  // [S] int64 rows whose logits are needed (the last row of a sampling sequence)
};

}  // namespace dsocr::engine

// The batch sizes decode steps are captured at as CUDA graphs (engine/decode_graphs.h), and the
// padding of a step's decode inputs up to one of them. Torch-free, so the CPU tests cover it.
//
// A graph replays fixed shapes: a step of B decode sequences runs the graph of the smallest
// captured size P >= B, its P - B extra rows being dummies that read a scratch block no request
// owns, write nothing to the cache, and whose logits are never read.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "engine/core/scheduler.h"

namespace dsocr::engine {

// 1, 2, 4, 8, then every multiple of 8 to 64, then every multiple of 16, up to max_batch (which
// is included: the largest step the scheduler can make). Empty when max_batch < 1.
std::vector<int64_t> decode_graph_sizes(int64_t max_batch);

// The smallest of `sizes` (ascending) that holds `batch` rows, or 0 when none does.
int64_t decode_graph_size_for(std::span<const int64_t> sizes, int64_t batch);

// One decode row per sequence: token, position, KV slot and block table.
struct DecodeRows {
  std::vector<int64_t> ids, positions, slots;
  std::vector<int64_t> context_lens;
  std::vector<std::vector<int32_t>> block_tables;
};

// The rows of a step a decode graph can run: every chunk one token that samples and is no image
// placeholder (a decode token, or a prompt's last token after earlier chunks), in plan order.
// nullopt when any chunk is not so (the step then runs eagerly).
std::optional<DecodeRows> graph_decode_rows(const StepPlan& plan, int64_t block_size);

// Appends dummy rows until `rows` holds `padded`: token 0 at position 0, writing no K/V (slot -1,
// which the KV-write kernels skip), attending to a context of slot 0 of `scratch_block` (zeros).
void pad_decode_rows(DecodeRows& rows, int64_t padded, int32_t scratch_block, int64_t block_size);

}  // namespace dsocr::engine

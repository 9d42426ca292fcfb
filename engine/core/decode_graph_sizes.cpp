#include "engine/core/decode_graph_sizes.h"

#include <algorithm>

namespace dsocr::engine {

std::vector<int64_t> decode_graph_sizes(int64_t max_batch) {
  std::vector<int64_t> sizes;
  for (int64_t s = 1; s <= max_batch; s = s < 8 ? s * 2 : (s < 64 ? s + 8 : s + 16))
    sizes.push_back(s);
  if (max_batch >= 1 && sizes.back() != max_batch) sizes.push_back(max_batch);
  return sizes;
}

int64_t decode_graph_size_for(std::span<const int64_t> sizes, int64_t batch) {
  const auto it = std::lower_bound(sizes.begin(), sizes.end(), batch);
  return it == sizes.end() ? 0 : *it;
}

std::optional<DecodeRows> graph_decode_rows(const StepPlan& plan, int64_t block_size) {
  DecodeRows rows;
  for (const ScheduledChunk& chunk : plan.chunks) {
    const Sequence& seq = *chunk.seq;
    if (chunk.num_tokens != 1 || !chunk.samples) return std::nullopt;
    const int64_t p = chunk.begin;
    for (const SequenceImage& image : seq.images)
      if (p >= image.offset && p < image.offset + image.length) return std::nullopt;
    rows.ids.push_back(seq.tokens[static_cast<size_t>(p)]);
    rows.positions.push_back(p);
    rows.slots.push_back(static_cast<int64_t>(seq.kv.blocks[static_cast<size_t>(p / block_size)]) *
                             block_size +
                         p % block_size);
    rows.context_lens.push_back(p + 1);
    rows.block_tables.emplace_back(seq.kv.blocks.begin(), seq.kv.blocks.end());
  }
  return rows;
}

void pad_decode_rows(DecodeRows& rows, int64_t padded, int32_t scratch_block, int64_t block_size) {
  while (static_cast<int64_t>(rows.ids.size()) < padded) {
    rows.ids.push_back(0);
    rows.positions.push_back(0);
    rows.slots.push_back(-1);  // no K/V written: the scratch slot stays as allocated (zeros)
    rows.context_lens.push_back(1);
    rows.block_tables.push_back({scratch_block});
  }
}

}  // namespace dsocr::engine

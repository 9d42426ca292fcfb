// Sampler: turns one step's logits into one token per sampling sequence, each with its own
// parameters (sampling_params.h), in one call.
//
// Per row, in order: repetition / frequency / presence penalties, the no-repeat n-gram ban over
// generated tokens (spec §10.2), then greedy argmax (ties: the lowest id, like torch.argmax) or
// temperature -> top-k -> top-p -> min-p -> a draw from the request's own generator, so a seeded
// request samples the same tokens whatever else shares its batch.
//
// Thread-safety: stateless; each request's generator is used by one thread (the engine's).
#pragma once

#include <ATen/ATen.h>

#include <random>
#include <span>
#include <vector>

#include "engine/core/sampling_params.h"

namespace dsocr::engine {

struct SamplingRow {
  const SamplingParams* params;
  std::span<const int32_t> tokens;  // prompt followed by generated tokens
  int64_t prompt_len;
  std::mt19937_64* rng;  // the request's generator (unused when greedy)
};

// logits: [rows.size(), vocab] float32 (any device). Returns one token id per row.
// CPU logits are processed row by row on the host; CUDA logits by sample_tokens_on_device.
std::vector<int32_t> sample_tokens(const at::Tensor& logits, std::span<const SamplingRow> rows);

// The same rules as tensor operations on the logits' device, so that only the chosen ids cross to
// the host (one copy per step): the penalties and n-gram bans as sparse edits built on the host
// from each row's tokens (one upload), greedy rows by argmax, the others by a sort, temperature,
// top-k/top-p/min-p masks and an inverse-CDF draw with a uniform number taken from the request's
// own generator (in row order, as the host path takes it), so seeded results match the host path.
// Works on CPU tensors too (the tests compare it with the host path there).
std::vector<int32_t> sample_tokens_on_device(const at::Tensor& logits,
                                             std::span<const SamplingRow> rows);

}  // namespace dsocr::engine

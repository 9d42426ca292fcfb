// SamplingParams: how one request chooses its tokens and when it stops (spec §10).
//
// Defaults are the official OCR decoding: greedy, no penalties, the windowed no-repeat n-gram
// processor with n = 20, window = 90 and <td>/</td> whitelisted (spec §10.2), stop on EOS.
// validate() rejects values no sampler can honour, naming the field (HTTP 400 material).
//
// Thread-safety: a plain value.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace dsocr::engine {

inline constexpr int32_t kTdTokenId = 128821;       // "<td>"
inline constexpr int32_t kTdCloseTokenId = 128822;  // "</td>"

struct SamplingParams {
  double temperature = 0.0;  // 0 = greedy
  double top_p = 1.0;
  int64_t top_k = 0;  // 0 = off
  double min_p = 0.0;
  std::optional<uint64_t> seed;
  double repetition_penalty = 1.0;  // over prompt and output tokens (>1 discourages)
  double frequency_penalty = 0.0;   // over output tokens, times their count
  double presence_penalty = 0.0;    // over output tokens, once
  int64_t max_tokens = 0;           // 0 = up to the context limit
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  // No-repeat n-gram over generated tokens (spec §10.2); ngram_size 0 disables it.
  int64_t ngram_size = 20;
  int64_t ngram_window = 90;
  std::vector<int32_t> ngram_whitelist = {kTdTokenId, kTdCloseTokenId};
  // Loop detection: end the sequence when its last `loop_min_span` tokens repeat one pattern of
  // at most `loop_max_period` tokens. 0 disables it.
  int64_t loop_min_span = 0;
  int64_t loop_max_period = 64;

  bool greedy() const { return temperature <= 0.0; }
  Status validate() const;
};

}  // namespace dsocr::engine

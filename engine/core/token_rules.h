// Integer-only decoding rules shared by the sampler and the tests: the official windowed
// no-repeat n-gram ban (spec §10.2) and repetition-loop detection.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace dsocr::engine {

// The tokens the no-repeat n-gram processor bans after `generated` (generated tokens only):
// every token that completed an earlier n-gram starting in the last `window` tokens whose first
// n-1 tokens equal the current last n-1, minus the whitelist. Sorted, unique.
std::vector<int32_t> ngram_banned_tokens(std::span<const int32_t> generated, int64_t n,
                                         int64_t window, std::span<const int32_t> whitelist);

// True when the last `min_span` tokens are periodic with a period of at most `max_period`
// (a decoding loop). False when fewer tokens exist or min_span <= 0.
bool detect_loop(std::span<const int32_t> tokens, int64_t min_span, int64_t max_period);

}  // namespace dsocr::engine

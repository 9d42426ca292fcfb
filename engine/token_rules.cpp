#include "engine/token_rules.h"

#include <algorithm>

#include "engine/sampling_params.h"

namespace dsocr::engine {

std::vector<int32_t> ngram_banned_tokens(std::span<const int32_t> g, int64_t n, int64_t window,
                                         std::span<const int32_t> whitelist) {
  std::vector<int32_t> banned;
  const int64_t len = static_cast<int64_t>(g.size());
  if (n <= 0 || len < n) return banned;
  const int64_t first = std::max<int64_t>(0, len - window);
  const int32_t* prefix = g.data() + (len - n + 1);  // the last n-1 tokens
  for (int64_t s = first; s <= len - n; ++s) {
    if (std::equal(prefix, prefix + (n - 1), g.data() + s)) banned.push_back(g[s + n - 1]);
  }
  std::sort(banned.begin(), banned.end());
  banned.erase(std::unique(banned.begin(), banned.end()), banned.end());
  std::erase_if(banned, [&](int32_t t) {
    return std::find(whitelist.begin(), whitelist.end(), t) != whitelist.end();
  });
  return banned;
}

bool detect_loop(std::span<const int32_t> tokens, int64_t min_span, int64_t max_period) {
  const int64_t len = static_cast<int64_t>(tokens.size());
  if (min_span <= 0 || len < min_span) return false;
  const int32_t* tail = tokens.data() + (len - min_span);
  for (int64_t p = 1; p <= std::min(max_period, min_span / 2); ++p) {
    if (std::equal(tail + p, tail + min_span, tail)) return true;
  }
  return false;
}

Status SamplingParams::validate() const {
  auto bad = [](const std::string& field, const std::string& why) {
    return invalid_argument("'" + field + "' " + why);
  };
  if (!(temperature >= 0.0 && temperature <= 100.0))
    return bad("temperature", "must be in [0, 100]");
  if (!(top_p > 0.0 && top_p <= 1.0)) return bad("top_p", "must be in (0, 1]");
  if (top_k < 0) return bad("top_k", "must be >= 0 (0 disables it)");
  if (!(min_p >= 0.0 && min_p <= 1.0)) return bad("min_p", "must be in [0, 1]");
  if (!(repetition_penalty > 0.0 && repetition_penalty <= 10.0))
    return bad("repetition_penalty", "must be in (0, 10]");
  if (!(frequency_penalty >= -2.0 && frequency_penalty <= 2.0))
    return bad("frequency_penalty", "must be in [-2, 2]");
  if (!(presence_penalty >= -2.0 && presence_penalty <= 2.0))
    return bad("presence_penalty", "must be in [-2, 2]");
  if (max_tokens < 0) return bad("max_tokens", "must be >= 1");
  if (ngram_size < 0) return bad("ngram_size", "must be >= 0 (0 disables it)");
  if (ngram_size > 0 && ngram_window < ngram_size)
    return bad("ngram_window", "must be >= ngram_size");
  if (loop_min_span < 0 || loop_max_period < 1) return bad("loop_min_span", "must be >= 0");
  return Status();
}

}  // namespace dsocr::engine

#include "engine/core/token_rules.h"

#include <algorithm>

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

}  // namespace dsocr::engine

// OnigRegex: a compiled Oniguruma regular expression (UTF-8, Oniguruma syntax) — the engine and
// settings Hugging Face tokenizers uses, so Unicode classes (\p{L}, \p{N}, ...), \s and lookahead
// behave exactly as in the reference. Unicode categories are upgraded to the reference's Unicode
// version first (tokenizer/unicode_classes.h).
//
// Thread-safety: a compiled regex is immutable; find_all() may run concurrently from many threads
// (each call has its own match region).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace dsocr::tokenizer {

class OnigRegex {
 public:
  static StatusOr<std::unique_ptr<OnigRegex>> compile(std::string_view pattern);
  ~OnigRegex();
  OnigRegex(const OnigRegex&) = delete;
  OnigRegex& operator=(const OnigRegex&) = delete;

  // Every non-overlapping match in `text` (which is the whole subject: ^, $ and lookarounds see
  // its ends), as [begin, end) byte offsets, left to right. Empty matches are reported as the
  // onig crate's iterator reports them (not right after another match).
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;

  const std::string& pattern() const { return pattern_; }

 private:
  OnigRegex() = default;
  std::string pattern_;
  void* regex_ = nullptr;  // regex_t*; void* keeps oniguruma.h out of this header
};

}  // namespace dsocr::tokenizer

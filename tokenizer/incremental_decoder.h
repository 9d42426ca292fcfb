// IncrementalDecoder: turns a stream of generated ids into text deltas for streaming responses.
//
// Each push() returns the text that has become final; deltas never split a UTF-8 character, and
// the concatenation of every push() and the final finish() equals Tokenizer::decode() of all the
// ids (same skip_special_tokens) for ByteLevel-decoder tokenizers (the family dsocr serves). It
// works on the decoder's bytes: a trailing sequence that is a
// valid prefix of a character is held back until the next id completes or breaks it.
//
// Thread-safety: one instance per request, used by one thread at a time; the Tokenizer is shared.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "tokenizer/tokenizer.h"

namespace dsocr::tokenizer {

class IncrementalDecoder {
 public:
  IncrementalDecoder(std::shared_ptr<const Tokenizer> tokenizer, bool skip_special_tokens);

  std::string push(int32_t id);
  std::string push(std::span<const int32_t> ids);
  // The held-back tail (an incomplete character becomes U+FFFD, as decode() renders it).
  std::string finish();

 private:
  std::string take_complete_prefix();

  std::shared_ptr<const Tokenizer> tokenizer_;
  bool skip_special_tokens_;
  std::string pending_;  // bytes not yet emitted (at most one incomplete character)
};

}  // namespace dsocr::tokenizer

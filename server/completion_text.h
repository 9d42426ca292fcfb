// CompletionText: generated token ids -> the text a client sees, delta by delta.
//
// Three rules, in this order: the token that ended the sequence (EOS or a stop token id) is not
// text (spec §10.3 strips the trailing EOS); ids are decoded incrementally without ever splitting
// a UTF-8 character (tokenizer/incremental_decoder.h); stop strings end the completion and are
// excluded from it, found even when they straddle two deltas, because text that could still be
// the start of a stop string is held back until it is known not to be.
//
// The concatenation of every delta equals the full decode of the ids, cut before the first stop
// string. Thread-safety: one instance per request, used by one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/incremental_decoder.h"

namespace dsocr::server {

// Finds the first occurrence of any stop string in a text that arrives in pieces.
class StopStringMatcher {
 public:
  explicit StopStringMatcher(std::vector<std::string> stops);

  // Appends text and returns what is safe to emit. Once a stop string is found, returns the text
  // before it and matched() becomes true; later calls return "".
  std::string push(std::string_view text);
  // The held-back tail (the text is complete, so it cannot become a stop string any more).
  std::string flush();
  bool matched() const { return matched_; }
  const std::string& matched_stop() const { return matched_stop_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool matched_ = false;
  std::string matched_stop_;
};

class CompletionText {
 public:
  // `end_ids`: ids that end a sequence without being text (EOS and the request's stop ids).
  CompletionText(std::shared_ptr<const tokenizer::Tokenizer> tokenizer, bool skip_special_tokens,
                 std::vector<int32_t> end_ids, std::vector<std::string> stop_strings);

  // New ids -> new text. After a stop string, returns "" (the caller should cancel generation).
  std::string push(std::span<const int32_t> ids);
  // The rest once generation has ended.
  std::string finish();
  bool stopped_by_string() const { return stops_.matched(); }

 private:
  tokenizer::IncrementalDecoder decoder_;
  std::vector<int32_t> end_ids_;
  StopStringMatcher stops_;
};

}  // namespace dsocr::server

// Tokenizer: a Hugging Face tokenizer.json (byte-level BPE family: DeepSeek-V3 / DeepSeek-OCR-2,
// GPT-2 style) loaded in C++, with the ids of the reference `tokenizers` library.
//
// Encoding pipeline, as in `tokenizers`: split out added tokens (non-normalized ones on the raw
// text, then normalized ones on normalized pieces; leftmost-longest; lstrip/rstrip/single_word),
// normalize, pre-tokenize, BPE each piece; with add_special_tokens, the post-processor's template.
//
// Invalid UTF-8 input (which Python strings cannot hold) is defined as its lossy conversion:
// every maximal invalid subpart becomes U+FFFD first (as bytes.decode("utf-8", "replace")), then
// it is encoded like any text.
//
// Decoding maps each id to its token (added tokens by content, skipped when special and
// skip_special_tokens), the ByteLevel decoder turns tokens back into bytes, and the bytes are
// converted lossily to UTF-8. Ids outside the vocabulary are skipped, as in `tokenizers`.
//
// Thread-safety: immutable after load (apart from an internally locked BPE cache); share one
// instance across all threads.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace dsocr::tokenizer {

class Tokenizer {
 public:
  static StatusOr<std::shared_ptr<const Tokenizer>> from_file(const std::filesystem::path& path);
  static StatusOr<std::shared_ptr<const Tokenizer>> from_json_text(std::string_view json_text);
  ~Tokenizer();

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false) const;
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  // The bytes id contributes to decoded output before the final UTF-8 conversion ("" for an id
  // that is unknown, or special while skip_special_tokens). decode() is the lossy UTF-8 of their
  // concatenation; the incremental decoder builds on this.
  std::string_view token_bytes(int32_t id, bool skip_special_tokens) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int32_t id) const;
  bool is_special(int32_t id) const;
  // One past the largest id the tokenizer knows.
  int32_t vocab_size() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsocr::tokenizer

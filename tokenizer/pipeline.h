// The stages of a Hugging Face tokenizer.json pipeline that run before the model: normalizers and
// pre-tokenizers, built from their JSON. Each mirrors the behaviour of its `tokenizers` namesake;
// a component dsocr does not implement is a load error naming it (never a silent difference).
//
// Supported: normalizers Sequence, Prepend, Replace, Strip; pre-tokenizers Sequence, Split (String
// or Regex pattern, behaviours Removed/Isolated/MergedWithPrevious/MergedWithNext/Contiguous,
// invert), ByteLevel (with or without its GPT-2 regex, add_prefix_space), which must come last
// (BPE then runs on the raw bytes of each piece).
//
// Thread-safety: built once, then immutable; safe to use from many threads.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/status.h"

namespace dsocr::tokenizer {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string* text) const = 0;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces `pieces` by its split; empty pieces are dropped.
  virtual void pre_tokenize(std::vector<std::string>* pieces) const = 0;
};

// `json` may be null (no normalizer): returns nullptr then.
StatusOr<std::unique_ptr<Normalizer>> make_normalizer(const nlohmann::json& json);

struct PreTokenizerInfo {
  std::unique_ptr<PreTokenizer> pre_tokenizer;  // nullptr: no splitting
  bool byte_level = false;  // a ByteLevel pre-tokenizer ends the chain: BPE sees raw bytes
};
StatusOr<PreTokenizerInfo> make_pre_tokenizer(const nlohmann::json& json);

// GPT-2's reversible byte <-> printable-character map used by ByteLevel.
const std::string& byte_to_unicode(unsigned char byte);  // UTF-8 of the mapped character
// The byte a mapped character stands for, or -1.
int unicode_to_byte(char32_t cp);

}  // namespace dsocr::tokenizer

#include "tokenizer/incremental_decoder.h"

#include "tokenizer/utf8.h"

namespace dsocr::tokenizer {

IncrementalDecoder::IncrementalDecoder(std::shared_ptr<const Tokenizer> tokenizer,
                                       bool skip_special_tokens)
    : tokenizer_(std::move(tokenizer)), skip_special_tokens_(skip_special_tokens) {}

std::string IncrementalDecoder::push(int32_t id) { return push(std::span<const int32_t>(&id, 1)); }

std::string IncrementalDecoder::push(std::span<const int32_t> ids) {
  for (int32_t id : ids) pending_.append(tokenizer_->token_bytes(id, skip_special_tokens_));
  return take_complete_prefix();
}

std::string IncrementalDecoder::take_complete_prefix() {
  // Everything up to a trailing incomplete-but-valid prefix is final: complete characters stay,
  // invalid subparts become U+FFFD exactly as the one-shot lossy conversion would make them.
  size_t cut = 0;
  while (cut < pending_.size()) {
    if (static_cast<uint8_t>(pending_[cut]) < 0x80) {
      ++cut;
      continue;
    }
    bool incomplete = false;
    size_t len = valid_sequence_length(pending_, cut, &incomplete);
    if (len > 0) {
      cut += len;
    } else if (incomplete) {
      break;
    } else {
      cut += invalid_subpart_length(pending_, cut);
    }
  }
  std::string out = to_valid_utf8_lossy(std::string_view(pending_).substr(0, cut));
  pending_.erase(0, cut);
  return out;
}

std::string IncrementalDecoder::finish() {
  std::string out = to_valid_utf8_lossy(pending_);
  pending_.clear();
  return out;
}

}  // namespace dsocr::tokenizer

// BpeModel: byte-pair encoding over a vocabulary and ranked merges, as Hugging Face tokenizers'
// BPE model applies them (lowest-rank pair first, leftmost among equals, merged in place).
//
// Two symbol alphabets: in byte-level mode (a ByteLevel pre-tokenizer precedes it) a word's
// initial symbols are its raw bytes, each standing for its GPT-2 mapped character; otherwise they
// are its UTF-8 characters, with unk_token / byte_fallback for characters outside the vocabulary.
//
// Thread-safety: immutable after construction except for an internal word cache, which is sharded
// and locked; tokenize() may be called from many threads at once.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/status.h"

namespace dsocr::tokenizer {

class BpeModel {
 public:
  static StatusOr<std::unique_ptr<BpeModel>> from_json(const nlohmann::json& model_json,
                                                       bool byte_level);

  // Appends the ids of one pre-tokenized word.
  void tokenize(std::string_view word, std::vector<int32_t>* ids) const;

  // Vocabulary as written in tokenizer.json (byte-level tokens in their mapped characters).
  const std::unordered_map<std::string, int32_t>& vocab() const { return vocab_; }

 private:
  BpeModel() = default;
  void merge_word(std::vector<int32_t>* symbols) const;
  void initial_symbols(std::string_view word, std::vector<int32_t>* symbols) const;

  struct MergeTarget {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t pair_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  const MergeTarget* find_merge(int32_t left, int32_t right) const {
    auto it = merges_.find(pair_key(left, right));
    return it == merges_.end() ? nullptr : &it->second;
  }

  bool byte_level_ = false;
  bool ignore_merges_ = false;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  std::optional<int32_t> unk_id_;
  std::unordered_map<std::string, int32_t> vocab_;
  std::unordered_map<std::string, int32_t> byte_vocab_;  // byte-level: raw bytes -> id
  std::array<int32_t, 256> byte_symbol_{};               // byte-level: byte -> id (-1: none)
  std::array<int32_t, 256> byte_fallback_id_{};          // "<0xAB>" tokens (-1: none)
  std::unordered_map<uint64_t, MergeTarget> merges_;

  // Word cache: sharded so that concurrent encodes rarely contend.
  static constexpr size_t kCacheShards = 64;
  static constexpr size_t kCacheEntriesPerShard = 4096;
  static constexpr size_t kMaxCachedWordBytes = 256;
  struct CacheShard {
    std::mutex mu;
    std::unordered_map<std::string, std::vector<int32_t>> words;
  };
  mutable std::unique_ptr<CacheShard[]> cache_ = std::make_unique<CacheShard[]>(kCacheShards);
};

}  // namespace dsocr::tokenizer

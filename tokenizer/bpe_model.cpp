#include "tokenizer/bpe_model.h"

#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <queue>

#include "tokenizer/pipeline.h"
#include "tokenizer/utf8.h"

namespace dsocr::tokenizer {
namespace {

using json = nlohmann::json;

// The raw bytes a byte-level vocabulary entry stands for, or nullopt if one of its characters is
// not in the GPT-2 byte map (such entries, e.g. special tokens, are never produced by merges).
std::optional<std::string> mapped_to_bytes(std::string_view token) {
  std::string bytes;
  for (size_t i = 0; i < token.size();) {
    size_t len = valid_sequence_length(token, i);
    if (len == 0) return std::nullopt;
    int b = unicode_to_byte(decode_code_point(token, i, len));
    if (b < 0) return std::nullopt;
    bytes.push_back(static_cast<char>(b));
    i += len;
  }
  return bytes;
}

}  // namespace

StatusOr<std::unique_ptr<BpeModel>> BpeModel::from_json(const json& j, bool byte_level) {
  if (!j.is_object() || j.value("type", std::string("BPE")) != "BPE") {
    std::string type = j.is_object() ? j.value("type", std::string("?")) : "?";
    return unimplemented("tokenizer.json: model '" + type +
                         "' is not supported by dsocr (BPE only)");
  }
  if (j.contains("dropout") && !j["dropout"].is_null() && j["dropout"].get<double>() > 0) {
    return unimplemented("tokenizer.json: BPE dropout is not supported (inference only)");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (j.contains(key) && j[key].is_string() && !j[key].get<std::string>().empty()) {
      return unimplemented(std::string("tokenizer.json: BPE ") + key + " is not supported");
    }
  }
  if (!j.contains("vocab") || !j["vocab"].is_object()) {
    return invalid_argument("tokenizer.json: model.vocab must be an object");
  }
  std::unique_ptr<BpeModel> m(new BpeModel());
  m->byte_level_ = byte_level;
  m->ignore_merges_ = j.value("ignore_merges", false);
  m->byte_fallback_ = j.value("byte_fallback", false);
  m->fuse_unk_ = j.value("fuse_unk", false);
  m->vocab_.reserve(j["vocab"].size());
  for (const auto& [token, id] : j["vocab"].items()) {
    if (!id.is_number_integer()) {
      return invalid_argument("tokenizer.json: vocab entry '" + token + "' has a non-integer id");
    }
    m->vocab_.emplace(token, id.get<int32_t>());
  }
  if (j.contains("unk_token") && j["unk_token"].is_string()) {
    auto it = m->vocab_.find(j["unk_token"].get<std::string>());
    if (it == m->vocab_.end()) {
      return invalid_argument("tokenizer.json: unk_token is not in the vocabulary");
    }
    m->unk_id_ = it->second;
  }
  m->byte_symbol_.fill(-1);
  m->byte_fallback_id_.fill(-1);
  for (int b = 0; b < 256; ++b) {
    if (byte_level) {
      auto it = m->vocab_.find(byte_to_unicode(static_cast<unsigned char>(b)));
      if (it != m->vocab_.end()) m->byte_symbol_[b] = it->second;
    }
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    if (auto it = m->vocab_.find(name); it != m->vocab_.end()) m->byte_fallback_id_[b] = it->second;
  }
  if (byte_level) {
    m->byte_vocab_.reserve(m->vocab_.size());
    for (const auto& [token, id] : m->vocab_) {
      if (auto bytes = mapped_to_bytes(token)) m->byte_vocab_.emplace(std::move(*bytes), id);
    }
  }

  const json& merges = j.value("merges", json::array());
  if (!merges.is_array()) return invalid_argument("tokenizer.json: model.merges must be an array");
  m->merges_.reserve(merges.size() * 2);
  int32_t rank = 0;
  for (const auto& merge : merges) {
    std::string left, right;
    if (merge.is_string()) {  // "left right"
      const std::string& s = merge.get_ref<const std::string&>();
      size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        return invalid_argument("tokenizer.json: merge '" + s + "' is not two tokens");
      }
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {  // ["left", "right"]
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    } else {
      return invalid_argument("tokenizer.json: merge #" + std::to_string(rank) + " is malformed");
    }
    auto l = m->vocab_.find(left), r = m->vocab_.find(right), n = m->vocab_.find(left + right);
    if (l == m->vocab_.end() || r == m->vocab_.end() || n == m->vocab_.end()) {
      return invalid_argument("tokenizer.json: merge '" + left + " " + right +
                              "' uses a token missing from the vocabulary");
    }
    // The first occurrence of a pair wins, as in HF (later duplicates keep the earlier rank).
    m->merges_.emplace(pair_key(l->second, r->second), MergeTarget{rank, n->second});
    ++rank;
  }
  return m;
}

void BpeModel::initial_symbols(std::string_view word, std::vector<int32_t>* symbols) const {
  symbols->clear();
  if (byte_level_) {
    for (unsigned char b : word) {
      if (byte_symbol_[b] >= 0) {
        symbols->push_back(byte_symbol_[b]);
      } else if (unk_id_) {
        if (!(fuse_unk_ && !symbols->empty() && symbols->back() == *unk_id_)) {
          symbols->push_back(*unk_id_);
        }
      }
    }
    return;
  }
  for (size_t i = 0; i < word.size();) {
    size_t len = valid_sequence_length(word, i);
    if (len == 0) len = 1;  // input is valid UTF-8 by the time it gets here; be safe anyway
    auto it = vocab_.find(std::string(word.substr(i, len)));
    if (it != vocab_.end()) {
      symbols->push_back(it->second);
    } else if (byte_fallback_ && [&] {
                 for (size_t k = 0; k < len; ++k) {
                   if (byte_fallback_id_[static_cast<unsigned char>(word[i + k])] < 0) return false;
                 }
                 return true;
               }()) {
      for (size_t k = 0; k < len; ++k) {
        symbols->push_back(byte_fallback_id_[static_cast<unsigned char>(word[i + k])]);
      }
    } else if (unk_id_) {
      if (!(fuse_unk_ && !symbols->empty() && symbols->back() == *unk_id_)) {
        symbols->push_back(*unk_id_);
      }
    }
    i += len;
  }
}

// HF's Word::merge_all: a heap of candidate merges ordered by (rank, position); stale entries
// are skipped when the pair at their position no longer produces the same token.
void BpeModel::merge_word(std::vector<int32_t>* symbols) const {
  const int n = static_cast<int>(symbols->size());
  if (n < 2) return;
  struct Symbol {
    int32_t id;
    int prev, next;
    bool alive;
  };
  std::vector<Symbol> sym(n);
  for (int i = 0; i < n; ++i) sym[i] = {(*symbols)[i], i - 1, i + 1 < n ? i + 1 : -1, true};
  struct Candidate {
    int32_t rank;
    int pos;
    int32_t new_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  for (int i = 0; i + 1 < n; ++i) {
    if (const MergeTarget* m = find_merge(sym[i].id, sym[i + 1].id)) {
      queue.push({m->rank, i, m->new_id});
    }
  }
  while (!queue.empty()) {
    Candidate top = queue.top();
    queue.pop();
    Symbol& cur = sym[top.pos];
    if (!cur.alive || cur.next < 0) continue;
    const int right_pos = cur.next;
    const MergeTarget* m = find_merge(cur.id, sym[right_pos].id);
    if (m == nullptr || m->new_id != top.new_id) continue;
    cur.id = top.new_id;
    cur.next = sym[right_pos].next;
    sym[right_pos].alive = false;
    if (cur.next >= 0) sym[cur.next].prev = top.pos;
    if (cur.prev >= 0) {
      if (const MergeTarget* pm = find_merge(sym[cur.prev].id, cur.id)) {
        queue.push({pm->rank, cur.prev, pm->new_id});
      }
    }
    if (cur.next >= 0) {
      if (const MergeTarget* nm = find_merge(cur.id, sym[cur.next].id)) {
        queue.push({nm->rank, top.pos, nm->new_id});
      }
    }
  }
  symbols->clear();
  for (int i = 0; i >= 0; i = sym[i].next) symbols->push_back(sym[i].id);
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    const auto& table = byte_level_ ? byte_vocab_ : vocab_;
    if (auto it = table.find(std::string(word)); it != table.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  CacheShard* shard = nullptr;
  if (cacheable) {
    shard = &cache_[std::hash<std::string_view>()(word) % kCacheShards];
    std::lock_guard<std::mutex> lock(shard->mu);
    auto it = shard->words.find(std::string(word));
    if (it != shard->words.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> symbols;
  initial_symbols(word, &symbols);
  merge_word(&symbols);
  ids->insert(ids->end(), symbols.begin(), symbols.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(shard->mu);
    if (shard->words.size() >= kCacheEntriesPerShard) shard->words.clear();
    shard->words.emplace(std::string(word), std::move(symbols));
  }
}

}  // namespace dsocr::tokenizer

#include "engine/core/block_manager.h"

#include <algorithm>

#include "common/check.h"

namespace dsocr::engine {
namespace {

uint64_t mix(uint64_t h, uint64_t v) {
  // splitmix64 of (h ^ v): chaining keeps order and position significant.
  uint64_t z = h ^ (v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2));
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

uint64_t cache_salt_hash(std::string_view salt) {
  if (salt.empty()) return 0;
  // The length first, so that no salt is a prefix-extension of another's chain.
  uint64_t h = mix(0x452821E638D01377ull, salt.size());
  for (unsigned char c : salt) h = mix(h, c);
  return h == 0 ? 1 : h;
}

std::vector<uint64_t> block_hashes(std::span<const int32_t> tokens,
                                   std::span<const ImageSpanRef> images, int block_size,
                                   uint64_t salt_hash) {
  DSOCR_CHECK_GT(block_size, 0);
  std::vector<uint64_t> out;
  const int64_t full = static_cast<int64_t>(tokens.size()) / block_size;
  uint64_t h = 0x243F6A8885A308D3ull;
  if (salt_hash != 0) h = mix(h, salt_hash);
  for (int64_t b = 0; b < full; ++b) {
    const int64_t begin = b * block_size, end = begin + block_size;
    for (int64_t i = begin; i < end; ++i) h = mix(h, static_cast<uint32_t>(tokens[i]));
    // Images whose placeholders overlap this block: their content and where the block cuts them.
    for (const auto& img : images) {
      if (img.offset < end && img.offset + img.length > begin) {
        h = mix(mix(h, img.content_hash), static_cast<uint64_t>(begin - img.offset));
      }
    }
    out.push_back(h);
  }
  return out;
}

BlockManager::BlockManager(int num_blocks, int block_size, bool enable_prefix_caching)
    : block_size_(block_size), prefix_caching_(enable_prefix_caching) {
  DSOCR_CHECK_GT(num_blocks, 0);
  DSOCR_CHECK_GT(block_size, 0);
  ref_count_.assign(num_blocks, 0);
  hash_.assign(num_blocks, std::nullopt);
  prev_.assign(num_blocks, -1);
  next_.assign(num_blocks, -1);
  in_free_list_.assign(num_blocks, 0);
  for (BlockId b = 0; b < num_blocks; ++b) push_free(b);
}

void BlockManager::push_free(BlockId block) {
  DSOCR_CHECK(!in_free_list_[block]) << "block " << block << " freed twice";
  prev_[block] = tail_;
  next_[block] = -1;
  if (tail_ >= 0)
    next_[tail_] = block;
  else
    head_ = block;
  tail_ = block;
  in_free_list_[block] = 1;
  ++num_free_;
}

void BlockManager::unlink_free(BlockId block) {
  DSOCR_CHECK(in_free_list_[block]) << "block " << block << " is not free";
  if (prev_[block] >= 0)
    next_[prev_[block]] = next_[block];
  else
    head_ = next_[block];
  if (next_[block] >= 0)
    prev_[next_[block]] = prev_[block];
  else
    tail_ = prev_[block];
  prev_[block] = next_[block] = -1;
  in_free_list_[block] = 0;
  --num_free_;
}

BlockId BlockManager::take_free_block() {
  BlockId block = head_;
  DSOCR_CHECK_GE(block, 0) << "no free block (callers check num_free_blocks first)";
  unlink_free(block);
  if (hash_[block]) {  // evict its cached contents
    auto it = cached_.find(*hash_[block]);
    if (it != cached_.end() && it->second == block) cached_.erase(it);
    hash_[block].reset();
    ++stats_.evicted_blocks;
  }
  return block;
}

int BlockManager::find_cached_prefix(std::span<const uint64_t> hashes, int64_t num_tokens) {
  stats_.queried_tokens += static_cast<uint64_t>(num_tokens);
  if (!prefix_caching_ || num_tokens <= 0) return 0;
  // Leave at least one token to compute: never more than (num_tokens - 1) / block_size blocks.
  const int64_t cap =
      std::min<int64_t>(static_cast<int64_t>(hashes.size()), (num_tokens - 1) / block_size_);
  int hits = 0;
  while (hits < cap && cached_.count(hashes[hits])) ++hits;
  stats_.hit_tokens += static_cast<uint64_t>(hits) * block_size_;
  return hits;
}

bool BlockManager::allocate(KvBlocks* seq, int64_t num_tokens, std::span<const uint64_t> hashes,
                            int num_cached_blocks) {
  const int needed = blocks_for_tokens(num_tokens);
  if (needed <= static_cast<int>(seq->blocks.size())) return true;
  DSOCR_CHECK(num_cached_blocks == 0 || seq->blocks.empty())
      << "cached prefix on a started sequence";
  DSOCR_CHECK_LE(num_cached_blocks, static_cast<int>(hashes.size()));
  std::vector<BlockId> hit_blocks;
  int reclaimed_from_free = 0;
  for (int i = 0; i < num_cached_blocks; ++i) {
    auto it = cached_.find(hashes[i]);
    DSOCR_CHECK(it != cached_.end()) << "cached block vanished between lookup and allocation";
    hit_blocks.push_back(it->second);
    if (ref_count_[it->second] == 0) ++reclaimed_from_free;
  }
  const int fresh = needed - static_cast<int>(seq->blocks.size()) - num_cached_blocks;
  if (fresh + reclaimed_from_free > num_free_) return false;
  for (BlockId b : hit_blocks) {
    if (ref_count_[b]++ == 0) unlink_free(b);
    seq->blocks.push_back(b);
  }
  seq->num_cached_blocks += num_cached_blocks;
  for (int i = 0; i < fresh; ++i) {
    BlockId b = take_free_block();
    ref_count_[b] = 1;
    seq->blocks.push_back(b);
  }
  return true;
}

void BlockManager::cache_blocks(KvBlocks* seq, std::span<const uint64_t> hashes,
                                int64_t num_computed_tokens) {
  if (!prefix_caching_) return;
  const int full = static_cast<int>(
      std::min<int64_t>({num_computed_tokens / block_size_, static_cast<int64_t>(hashes.size()),
                         static_cast<int64_t>(seq->blocks.size())}));
  for (int i = seq->num_cached_blocks; i < full; ++i) {
    BlockId b = seq->blocks[i];
    auto [it, inserted] = cached_.try_emplace(hashes[i], b);
    // If another sequence computed the same block first, keep that one; ours stays private.
    if (inserted) hash_[b] = hashes[i];
  }
  seq->num_cached_blocks = std::max(seq->num_cached_blocks, full);
}

void BlockManager::free(KvBlocks* seq) {
  for (auto it = seq->blocks.rbegin(); it != seq->blocks.rend(); ++it) {
    DSOCR_CHECK_GT(ref_count_[*it], 0) << "block " << *it << " freed twice";
    if (--ref_count_[*it] == 0) push_free(*it);
  }
  seq->blocks.clear();
  seq->num_cached_blocks = 0;
}

void BlockManager::reset_prefix_cache() {
  for (auto it = cached_.begin(); it != cached_.end();) {
    if (ref_count_[it->second] == 0) {
      hash_[it->second].reset();
      it = cached_.erase(it);
    } else {
      ++it;
    }
  }
}

std::string BlockManager::check_invariants() const {
  int free_seen = 0;
  BlockId prev = -1;
  for (BlockId b = head_; b >= 0; prev = b, b = next_[b]) {
    if (prev_[b] != prev) return "free list links broken at block " + std::to_string(b);
    if (ref_count_[b] != 0) return "block " + std::to_string(b) + " is free but referenced";
    if (++free_seen > num_blocks()) return "free list has a cycle";
  }
  if (free_seen != num_free_)
    return "free count " + std::to_string(num_free_) + " != list length " +
           std::to_string(free_seen);
  for (BlockId b = 0; b < num_blocks(); ++b) {
    if (ref_count_[b] < 0) return "negative ref count on block " + std::to_string(b);
    if ((ref_count_[b] == 0) != static_cast<bool>(in_free_list_[b])) {
      return "block " + std::to_string(b) + " free-list membership disagrees with its ref count";
    }
  }
  for (const auto& [hash, b] : cached_) {
    if (!hash_[b] || *hash_[b] != hash)
      return "hash index points at block " + std::to_string(b) + " with another hash";
  }
  return "";
}

}  // namespace dsocr::engine

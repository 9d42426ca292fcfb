// BlockManager: the KV cache's blocks as integers — free list, reference counts, allocation for
// new tokens, and prefix caching. Torch-free: the tensors live in the KV cache; this class only
// decides which block ids a sequence owns, so the scheduler can be simulated in tests without a
// model.
//
// Prefix caching: a full block is identified by a chained hash of every token up to its end and of
// the content hashes of the images whose placeholder rows it holds (block_hashes()). Two pages with
// the same prompt therefore never share KV, while the same page asked twice does. Full blocks are
// registered once computed (cache_blocks()); a later sequence whose leading block hashes match
// reuses them (find_cached_prefix() + allocate()). A hit always leaves at least one prompt token to
// compute, because the model needs one position to produce logits from.
//
// Cache salt: a request may carry a salt (an opaque string from its client) that starts its hash
// chain, so requests with different salts never share a block and a client cannot learn from its
// cached-token count that someone else sent the same page; equal salts share as usual. The empty
// salt is the shared cache (its hashes are those of an unsalted chain).
//
// Eviction: a block whose last user frees it goes to the free list but keeps its cached contents
// until it is reused (LRU: the longest-free block is taken first; a sequence's blocks are freed
// tail first, so a shared prefix outlives the suffixes that depend on it).
//
// Thread-safety: none; owned and used by the engine thread only.
// Invariants (check_invariants()): every block is either referenced (ref > 0, not on the free list)
// or free (ref == 0, on the free list exactly once); the hash index maps only to blocks whose
// recorded hash is that key.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/core/batching.h"

namespace dsocr::engine {

using BlockId = int32_t;

// A span of image placeholder tokens in a prompt and the content hash of the image it shows.
struct ImageSpanRef {
  int64_t offset;  // first placeholder position
  int64_t length;  // number of placeholder tokens
  uint64_t content_hash;
};

// The 64-bit chain start a cache salt stands for: 0 for the empty salt (no salt), never 0 else.
uint64_t cache_salt_hash(std::string_view salt);

// The chained hashes of the full blocks of `tokens` (tokens.size() / block_size of them), the
// chain started by `salt_hash` (from cache_salt_hash(); 0: unsalted).
std::vector<uint64_t> block_hashes(std::span<const int32_t> tokens,
                                   std::span<const ImageSpanRef> images, int block_size,
                                   uint64_t salt_hash = 0);

// The blocks one sequence (request) holds, in order.
struct KvBlocks {
  std::vector<BlockId> blocks;
  int num_cached_blocks = 0;  // leading blocks registered in (or taken from) the prefix cache
};

class BlockManager {
 public:
  BlockManager(int num_blocks, int block_size, bool enable_prefix_caching);

  int block_size() const { return block_size_; }
  int num_blocks() const { return static_cast<int>(ref_count_.size()); }
  // Free blocks, cached-but-unused ones included (they are reclaimed on demand).
  int num_free_blocks() const { return num_free_; }
  double usage() const { return 1.0 - static_cast<double>(num_free_) / num_blocks(); }
  int blocks_for_tokens(int64_t num_tokens) const {
    return static_cast<int>((num_tokens + block_size_ - 1) / block_size_);
  }

  // How many leading blocks of a sequence with these full-block hashes are cached, capped so
  // that at least one of its `num_tokens` tokens is left to compute. Records the lookup in stats.
  int find_cached_prefix(std::span<const uint64_t> hashes, int64_t num_tokens);

  // Grows `seq` to hold `num_tokens` tokens. When `seq` is empty, its first `num_cached_blocks`
  // blocks are the cached blocks of `hashes` (from find_cached_prefix()). Returns false, changing
  // nothing, when there are not enough free blocks.
  bool allocate(KvBlocks* seq, int64_t num_tokens, std::span<const uint64_t> hashes = {},
                int num_cached_blocks = 0);

  // Registers the blocks of `seq` that are full after `num_computed_tokens` tokens.
  void cache_blocks(KvBlocks* seq, std::span<const uint64_t> hashes, int64_t num_computed_tokens);

  // Releases every block of `seq` (tail first) and empties it.
  void free(KvBlocks* seq);

  // Drops every cached block that nobody uses (e.g. after a weights reload).
  void reset_prefix_cache();

  PrefixCacheStats stats() const { return stats_; }
  int ref_count(BlockId block) const { return ref_count_[block]; }
  // Empty when consistent, else a description of the first violation (for tests).
  std::string check_invariants() const;

 private:
  BlockId take_free_block();  // front of the LRU list; evicts its cached contents
  void push_free(BlockId block);
  void unlink_free(BlockId block);

  const int block_size_;
  const bool prefix_caching_;
  std::vector<int> ref_count_;
  std::vector<std::optional<uint64_t>> hash_;  // content of the block if it is a cached full block
  std::unordered_map<uint64_t, BlockId> cached_;
  // Intrusive doubly linked free list: head is evicted first.
  std::vector<BlockId> prev_, next_;
  std::vector<uint8_t> in_free_list_;
  BlockId head_ = -1, tail_ = -1;
  int num_free_ = 0;
  PrefixCacheStats stats_;
};

}  // namespace dsocr::engine

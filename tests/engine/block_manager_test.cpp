#include "engine/core/block_manager.h"

#include <catch2/catch.hpp>
#include <random>

namespace dsocr::engine {
namespace {

std::vector<int32_t> iota_tokens(int n, int start = 0) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = start + i;
  return t;
}

TEST_CASE("BlockManager: allocate, grow, free", "[block_manager]") {
  BlockManager bm(8, 4, true);
  KvBlocks seq;
  REQUIRE(bm.allocate(&seq, 5));  // 2 blocks
  CHECK(seq.blocks.size() == 2);
  CHECK(bm.num_free_blocks() == 6);
  REQUIRE(bm.allocate(&seq, 8));  // still 2
  CHECK(seq.blocks.size() == 2);
  REQUIRE(bm.allocate(&seq, 9));  // 3
  CHECK(seq.blocks.size() == 3);
  CHECK(bm.usage() == Approx(3.0 / 8));
  KvBlocks big;
  CHECK_FALSE(bm.allocate(&big, 6 * 4));  // needs 6, 5 free: refused, nothing taken
  CHECK(big.blocks.empty());
  CHECK(bm.num_free_blocks() == 5);
  bm.free(&seq);
  CHECK(seq.blocks.empty());
  CHECK(bm.num_free_blocks() == 8);
  CHECK(bm.check_invariants().empty());
}

TEST_CASE("BlockManager: prefix hits share blocks, capped to leave one token", "[block_manager]") {
  BlockManager bm(16, 4, true);
  auto tokens = iota_tokens(10);  // 2 full blocks + 2 tokens
  auto hashes = block_hashes(tokens, {}, 4);
  REQUIRE(hashes.size() == 2);
  KvBlocks a;
  CHECK(bm.find_cached_prefix(hashes, 10) == 0);
  REQUIRE(bm.allocate(&a, 10));
  bm.cache_blocks(&a, hashes, 10);
  CHECK(a.num_cached_blocks == 2);

  KvBlocks b;
  int hits = bm.find_cached_prefix(hashes, 10);
  CHECK(hits == 2);
  REQUIRE(bm.allocate(&b, 10, hashes, hits));
  CHECK(b.blocks[0] == a.blocks[0]);
  CHECK(b.blocks[1] == a.blocks[1]);
  CHECK(b.blocks[2] != a.blocks[2]);
  CHECK(bm.ref_count(a.blocks[0]) == 2);

  // Exactly 8 tokens = 2 full blocks: only 1 block may hit, the last token must be computed.
  std::vector<int32_t> eight(tokens.begin(), tokens.begin() + 8);
  CHECK(bm.find_cached_prefix(block_hashes(eight, {}, 4), 8) == 1);
  CHECK(bm.stats().hit_tokens == 8 + 4);
  CHECK(bm.check_invariants().empty());
  bm.free(&a);
  bm.free(&b);
  CHECK(bm.num_free_blocks() == 16);
  CHECK(bm.check_invariants().empty());
}

TEST_CASE("BlockManager: image content is part of the block hash", "[block_manager]") {
  auto tokens = std::vector<int32_t>(12, 128815);  // all image placeholders
  ImageSpanRef page_a{0, 12, 0xAAAA}, page_b{0, 12, 0xBBBB};
  auto ha = block_hashes(tokens, std::span(&page_a, 1), 4);
  auto hb = block_hashes(tokens, std::span(&page_b, 1), 4);
  for (size_t i = 0; i < ha.size(); ++i) CHECK(ha[i] != hb[i]);
  CHECK(block_hashes(tokens, std::span(&page_a, 1), 4) == ha);  // deterministic
  // Same tokens, image shifted by one position: different hashes from the first affected block.
  ImageSpanRef shifted{1, 11, 0xAAAA};
  CHECK(block_hashes(tokens, std::span(&shifted, 1), 4)[0] != ha[0]);
  // Text-only prefix before the image is shared.
  auto mixed = iota_tokens(4);
  mixed.insert(mixed.end(), 8, 128815);
  ImageSpanRef after_text_a{4, 8, 0xAAAA}, after_text_b{4, 8, 0xBBBB};
  auto ma = block_hashes(mixed, std::span(&after_text_a, 1), 4);
  auto mb = block_hashes(mixed, std::span(&after_text_b, 1), 4);
  CHECK(ma[0] == mb[0]);
  CHECK(ma[1] != mb[1]);
}

TEST_CASE("BlockManager: a cache salt starts a chain of its own", "[block_manager]") {
  auto tokens = iota_tokens(12);
  const auto plain = block_hashes(tokens, {}, 4);
  CHECK(cache_salt_hash("") == 0);
  CHECK(block_hashes(tokens, {}, 4, cache_salt_hash("")) == plain);  // empty: the shared cache
  const uint64_t a = cache_salt_hash("tenant-a"), b = cache_salt_hash("tenant-b");
  CHECK(a != 0);
  CHECK(a != b);
  CHECK(cache_salt_hash("tenant-a") == a);  // deterministic across requests
  CHECK(cache_salt_hash(std::string_view("a\0", 2)) != cache_salt_hash("a"));
  const auto salted_a = block_hashes(tokens, {}, 4, a);
  const auto salted_b = block_hashes(tokens, {}, 4, b);
  CHECK(block_hashes(tokens, {}, 4, a) == salted_a);
  for (size_t i = 0; i < plain.size(); ++i) {
    INFO("block " << i);
    CHECK(salted_a[i] != plain[i]);
    CHECK(salted_a[i] != salted_b[i]);
  }
  // What the cache makes of it: a prefix computed under salt a serves a, never b or unsalted.
  BlockManager bm(8, 4, true);
  KvBlocks seq;
  REQUIRE(bm.allocate(&seq, 12));
  bm.cache_blocks(&seq, salted_a, 12);
  bm.free(&seq);
  CHECK(bm.find_cached_prefix(salted_a, 13) == 3);
  CHECK(bm.find_cached_prefix(salted_b, 13) == 0);
  CHECK(bm.find_cached_prefix(plain, 13) == 0);
}

TEST_CASE("BlockManager: eviction is LRU, tails first", "[block_manager]") {
  BlockManager bm(4, 2, true);
  auto tokens = iota_tokens(8);
  auto hashes = block_hashes(tokens, {}, 2);
  KvBlocks a;
  REQUIRE(bm.allocate(&a, 8));
  bm.cache_blocks(&a, hashes, 8);
  const std::vector<BlockId> a_blocks = a.blocks;
  bm.free(&a);  // all 4 cached and free; tail freed first
  CHECK(bm.num_free_blocks() == 4);
  KvBlocks other;
  REQUIRE(bm.allocate(&other, 2));  // takes one block: must evict the LAST block of `a`
  CHECK(other.blocks[0] == a_blocks[3]);
  CHECK(bm.find_cached_prefix(hashes, 8) == 3);  // first three still cached
  CHECK(bm.stats().evicted_blocks == 1);
  // Hits on free cached blocks take them back off the free list; the one fresh block is the
  // least recently freed remaining one (block 2 of `a`), whose cached contents go.
  KvBlocks again;
  REQUIRE(bm.find_cached_prefix(hashes, 6) == 2);  // capped: 6 tokens may hit 2 blocks
  REQUIRE(bm.allocate(&again, 6, hashes, 2));
  CHECK(again.blocks[0] == a_blocks[0]);
  CHECK(again.blocks[2] == a_blocks[2]);
  CHECK(bm.num_free_blocks() == 0);
  CHECK(bm.stats().evicted_blocks == 2);
  KvBlocks none;
  CHECK_FALSE(bm.allocate(&none, 1));
  CHECK(bm.check_invariants().empty());
}

TEST_CASE("BlockManager: prefix caching off never hits", "[block_manager]") {
  BlockManager bm(8, 4, false);
  auto hashes = block_hashes(iota_tokens(12), {}, 4);
  KvBlocks a;
  REQUIRE(bm.allocate(&a, 12));
  bm.cache_blocks(&a, hashes, 12);
  CHECK(bm.find_cached_prefix(hashes, 12) == 0);
}

TEST_CASE("BlockManager: 10,000 random operations keep every invariant",
          "[block_manager][property]") {
  std::mt19937 rng(1234);
  BlockManager bm(64, 4, true);
  struct Live {
    KvBlocks blocks;
    std::vector<uint64_t> hashes;
    int64_t tokens;
  };
  std::vector<Live> live;
  // A few shared prompt prefixes so hits and sharing really happen.
  std::vector<std::vector<int32_t>> prompts;
  for (int p = 0; p < 5; ++p) prompts.push_back(iota_tokens(40, p * 1000));
  for (int step = 0; step < 10000; ++step) {
    int op = std::uniform_int_distribution<int>(0, 9)(rng);
    if (op < 4 || live.empty()) {  // new sequence, maybe with a cached prefix
      auto& prompt = prompts[rng() % prompts.size()];
      int64_t n = std::uniform_int_distribution<int64_t>(1, 40)(rng);
      std::vector<int32_t> tokens(prompt.begin(), prompt.begin() + n);
      Live l{{}, block_hashes(tokens, {}, 4), n};
      int hits = bm.find_cached_prefix(l.hashes, n);
      if (bm.allocate(&l.blocks, n, l.hashes, hits)) {
        bm.cache_blocks(&l.blocks, l.hashes, n);
        live.push_back(std::move(l));
      }
    } else if (op < 7) {  // grow (decode)
      auto& l = live[rng() % live.size()];
      if (bm.allocate(&l.blocks, l.tokens + 1)) ++l.tokens;
    } else {  // finish or cancel
      size_t i = rng() % live.size();
      bm.free(&live[i].blocks);
      live.erase(live.begin() + static_cast<long>(i));
    }
    if (step % 97 == 0) REQUIRE(bm.check_invariants().empty());
    int referenced = 0;
    for (BlockId b = 0; b < bm.num_blocks(); ++b) referenced += bm.ref_count(b) > 0;
    REQUIRE(referenced + bm.num_free_blocks() == bm.num_blocks());
  }
  for (auto& l : live) bm.free(&l.blocks);
  CHECK(bm.num_free_blocks() == bm.num_blocks());  // no leak
  CHECK(bm.check_invariants().empty());
  CHECK(bm.stats().hit_tokens > 0);
  CHECK(bm.stats().evicted_blocks > 0);
}

}  // namespace
}  // namespace dsocr::engine

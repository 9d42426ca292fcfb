// The CPU decode kernel (cpu_kernels.h) against the reference gather + SDPA path, and batch
// invariance of the kernel by construction.
#include "engine/kernels/paged_attention.h"

#include <ATen/ATen.h>

#include <torch/cuda.h>
#include <algorithm>
#include <catch2/catch.hpp>
#include <limits>
#include <numeric>
#include <random>

namespace dsocr::engine {
namespace {

struct Setup {
  int64_t heads, kv_heads, head_dim, block_size;
  std::vector<int64_t> context_lens;  // one decode row per sequence
  at::ScalarType dtype;
};

struct Case {
  at::Tensor query, key_cache, value_cache;
  ForwardBatch batch;
};

// Random caches; each sequence gets its blocks from a shuffled pool, so tables are scattered.
Case make_case(const Setup& s, uint64_t seed) {
  at::manual_seed(static_cast<int64_t>(seed));
  Case c;
  int64_t blocks_needed = 0;
  for (int64_t len : s.context_lens) blocks_needed += (len + s.block_size - 1) / s.block_size;
  const int64_t num_blocks = blocks_needed + 3;
  auto opts = at::TensorOptions().dtype(s.dtype);
  c.key_cache = at::randn({num_blocks, s.block_size, s.kv_heads, s.head_dim}, opts);
  c.value_cache = at::randn({num_blocks, s.block_size, s.kv_heads, s.head_dim}, opts);
  const int64_t rows = static_cast<int64_t>(s.context_lens.size());
  c.query = at::randn({rows, s.heads, s.head_dim}, opts);
  std::vector<int32_t> pool(static_cast<size_t>(num_blocks));
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), std::mt19937(static_cast<unsigned>(seed)));
  size_t next = 0;
  for (int64_t i = 0; i < rows; ++i) {
    SequenceSlice seq;
    seq.q_start = i;
    seq.q_len = 1;
    seq.context_len = s.context_lens[static_cast<size_t>(i)];
    for (int64_t b = 0; b < (seq.context_len + s.block_size - 1) / s.block_size; ++b)
      seq.block_table.push_back(pool[next++]);
    c.batch.sequences.push_back(std::move(seq));
  }
  return c;
}

at::Tensor run(const Case& c, const Setup& s, bool reference) {
  AttentionPlan plan =
      AttentionPlan::build(c.batch, s.block_size, at::kCPU, s.heads, s.head_dim, reference);
  CHECK(plan.cpu_decodes.empty() == reference);
  return paged_attention(c.query, c.key_cache, c.value_cache, plan, 1.0 / std::sqrt(s.head_dim));
}

TEST_CASE("CPU decode attention equals the reference path", "[paged_attention]") {
  const std::vector<Setup> setups = {
      {4, 4, 16, 16, {1, 7, 16, 17, 40}, at::kFloat},  // MHA, lengths around a block
      {8, 2, 64, 16, {300, 5, 1131, 64}, at::kFloat},  // GQA 4:1, a page-sized context
      {10, 10, 128, 32, {1, 257, 1000}, at::kFloat},   // the full model's head layout
      {8, 8, 64, 16, {33, 1200, 9}, at::kBFloat16},
      {4, 1, 256, 8, {3, 100}, at::kFloat},  // widest supported head
  };
  uint64_t seed = 1;
  for (const Setup& s : setups) {
    CAPTURE(s.heads, s.kv_heads, s.head_dim, s.block_size, s.dtype);
    Case c = make_case(s, seed++);
    at::Tensor kernel = run(c, s, false).to(at::kFloat);
    at::Tensor reference = run(c, s, true).to(at::kFloat);
    const double tolerance = s.dtype == at::kFloat ? 2e-5 : 2e-2;
    const double max_diff = (kernel - reference).abs().max().item<double>();
    CAPTURE(max_diff);
    CHECK(max_diff <= tolerance * std::max(1.0, reference.abs().max().item<double>()));
  }
}

TEST_CASE("a bfloat16 KV cache under float32 compute: kernel, reference and widened caches agree",
          "[paged_attention]") {
  // --kv-cache-dtype bfloat16 with float32 compute: the query stays float32, the caches are
  // bfloat16. Both paths widen the cached values exactly, so they equal float32 attention over
  // the widened caches (up to the order of sums).
  const Setup s{10, 10, 128, 16, {1, 300, 1200}, at::kFloat};
  Case c = make_case(s, 9);
  Case narrow = c;
  narrow.key_cache = c.key_cache.to(at::kBFloat16);
  narrow.value_cache = c.value_cache.to(at::kBFloat16);
  Case widened = c;
  widened.key_cache = narrow.key_cache.to(at::kFloat);
  widened.value_cache = narrow.value_cache.to(at::kFloat);
  const at::Tensor expected = run(widened, s, true);
  for (bool reference : {false, true}) {
    CAPTURE(reference);
    const at::Tensor out = run(narrow, s, reference);
    REQUIRE(out.scalar_type() == at::kFloat);
    CHECK(at::allclose(out, expected, 2e-5, 2e-5));
  }
}

TEST_CASE("CPU decode attention of a sequence does not depend on its batch", "[paged_attention]") {
  const Setup s{8, 8, 64, 16, {500, 3, 77, 1024, 260}, at::kFloat};
  Case together = make_case(s, 42);
  at::Tensor all = run(together, s, false);
  // Each sequence alone, its row moved to 0: bit-identical output.
  for (size_t i = 0; i < s.context_lens.size(); ++i) {
    Case alone = together;
    alone.batch.sequences = {together.batch.sequences[i]};
    alone.batch.sequences[0].q_start = 0;
    alone.query =
        together.query.slice(0, static_cast<int64_t>(i), static_cast<int64_t>(i) + 1).contiguous();
    at::Tensor one = run(alone, s, false);
    CHECK(at::equal(one[0], all[static_cast<int64_t>(i)]));
  }
}

TEST_CASE("prefill rows keep the reference path when decodes use the kernel", "[paged_attention]") {
  // One prefill chunk of 5 rows continuing 11 cached tokens, and two decodes.
  const Setup s{4, 2, 32, 8, {}, at::kFloat};
  at::manual_seed(3);
  Case c;
  c.key_cache = at::randn({12, 8, 2, 32});
  c.value_cache = at::randn({12, 8, 2, 32});
  c.query = at::randn({7, 4, 32});
  c.batch.sequences = {{0, 5, 16, {4, 9}}, {5, 1, 20, {0, 1, 2}}, {6, 1, 3, {7}}};
  at::Tensor kernel = run(c, s, false);
  at::Tensor reference = run(c, s, true);
  CHECK(at::equal(kernel.slice(0, 0, 5), reference.slice(0, 0, 5)));
  CHECK(at::allclose(kernel, reference, 1e-5, 1e-5));
}

// Sequences of (q_len, context_len) rows on `device`: the last q_len positions of each are this
// step's rows (a prefill chunk over a cached prefix, or one decode row).
Case make_mixed_case(const std::vector<std::pair<int64_t, int64_t>>& seqs, int64_t heads,
                     int64_t block_size, at::Device device, uint64_t seed) {
  at::manual_seed(static_cast<int64_t>(seed));
  Case c;
  int64_t blocks_needed = 0, rows = 0;
  for (auto [q_len, len] : seqs) {
    blocks_needed += (len + block_size - 1) / block_size;
    rows += q_len;
  }
  const int64_t num_blocks = blocks_needed + 5;
  const auto opts = at::TensorOptions().dtype(at::kBFloat16).device(device);
  c.key_cache = at::randn({num_blocks, block_size, heads, 128}, opts);
  c.value_cache = at::randn({num_blocks, block_size, heads, 128}, opts);
  c.query = at::randn({rows, heads, 128}, opts);
  std::vector<int32_t> pool(static_cast<size_t>(num_blocks));
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), std::mt19937(static_cast<unsigned>(seed)));
  size_t next = 0;
  int64_t q_start = 0;
  for (auto [q_len, len] : seqs) {
    SequenceSlice seq{q_start, q_len, len, {}};
    for (int64_t b = 0; b < (len + block_size - 1) / block_size; ++b)
      seq.block_table.push_back(pool[next++]);
    c.batch.sequences.push_back(std::move(seq));
    q_start += q_len;
  }
  // NaN wherever no sequence's context is: unused blocks and the tails of last blocks. A kernel
  // that reads one of them returns NaN. (Not block 0's first row: the reference path's padding
  // reads it, masked, and a masked NaN still poisons SDPA's sums.)
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (size_t b = next; b < pool.size(); ++b) {
    if (pool[b] == 0) continue;
    c.key_cache[pool[b]].fill_(nan);
    c.value_cache[pool[b]].fill_(nan);
  }
  for (const SequenceSlice& seq : c.batch.sequences) {
    const int64_t used = seq.context_len - (seq.context_len - 1) / block_size * block_size;
    c.key_cache[seq.block_table.back()].slice(0, used).fill_(nan);
    c.value_cache[seq.block_table.back()].slice(0, used).fill_(nan);
  }
  return c;
}

TEST_CASE("GPU attention kernels (FlashInfer) equal the reference path",
          "[paged_attention][cuda]") {
  if (!torch::cuda::is_available()) {
    WARN("skipped: no CUDA device");
    return;
  }
  const at::Device cuda(at::kCUDA, 0);
  const int64_t heads = 10, block_size = 16;  // the full model's layout
  const std::vector<std::vector<std::pair<int64_t, int64_t>>> steps = {
      {{1, 1}, {1, 16}, {1, 17}, {1, 300}, {1, 1131}, {1, 2500}},  // decode only
      {{37, 37}},                                                  // a first chunk, plain causal
      {{1, 50}, {100, 1131}, {1, 1}, {16, 48}, {300, 300}},        // mixed, cached prefixes
      {{1, 8000}, {1, 9001}},                                      // decode, split KV
      {{16, 16000}, {512, 528}, {512, 3512}},                      // long prefixes, big chunks
      {{1, 700}, {1, 33}, {2, 2}},                                 // decode rows via prefill
  };
  uint64_t seed = 40;
  for (const auto& step : steps) {
    int64_t max_blocks = 0;
    for (auto [q_len, len] : step) max_blocks += (len + block_size - 1) / block_size;
    Case c = make_mixed_case(step, heads, block_size, cuda, seed++);
    std::shared_ptr<GpuAttention> gpu =
        make_gpu_attention(cuda, heads, heads, 128, block_size, c.key_cache.size(0), at::kBFloat16);
    REQUIRE(gpu != nullptr);
    const double scale = 1.0 / std::sqrt(128.0);
    AttentionPlan fast_plan =
        AttentionPlan::build(c.batch, block_size, cuda, heads, 128, false, gpu.get());
    REQUIRE(fast_plan.gpu != nullptr);
    at::Tensor fast =
        paged_attention(c.query, c.key_cache, c.value_cache, fast_plan, scale).to(at::kFloat);
    AttentionPlan ref_plan = AttentionPlan::build(c.batch, block_size, cuda, heads, 128, true);
    at::Tensor reference =
        paged_attention(c.query, c.key_cache, c.value_cache, ref_plan, scale).to(at::kFloat);
    const double error = ((fast - reference).norm() / reference.norm()).item<double>();
    CAPTURE(step.size(), error);
    CHECK(at::isfinite(fast).all().item<bool>());
    CHECK(error < 1e-2);
    // Every row's error, not only the whole's: a wrong row hides in a large batch's norm.
    const at::Tensor row_error =
        (fast - reference).flatten(1).norm(2, 1) / reference.flatten(1).norm(2, 1);
    CHECK(row_error.max().item<double>() < 2e-2);
    // Planned again and run twice: the same bits (no state carried between runs).
    AttentionPlan again =
        AttentionPlan::build(c.batch, block_size, cuda, heads, 128, false, gpu.get());
    CHECK(at::equal(
        paged_attention(c.query, c.key_cache, c.value_cache, again, scale).to(at::kFloat), fast));
  }
}

}  // namespace
}  // namespace dsocr::engine

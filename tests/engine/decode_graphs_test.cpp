// Decode steps replayed from CUDA graphs (engine/decode_graphs.h) against the same steps run
// eagerly, on a small random language model with the real head size (128) on the GPU.
#include "engine/decode_graphs.h"

#include <ATen/ATen.h>
#include <torch/cuda.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <numeric>
#include <random>

#include "common/logging.h"
#include "engine/kernels/paged_attention.h"
#include "tests/engine/random_language_model.h"
#include "weights/loader.h"

namespace dsocr::engine {
namespace {

TEST_CASE("CUDA-graph decode steps equal eager steps", "[decode_graphs][cuda]") {
  if (!torch::cuda::is_available()) {
    WARN("skipped: no CUDA device");
    return;
  }
  at::NoGradGuard no_grad;
  const at::Device cuda(at::kCUDA, 0);
  weights::LanguageConfig config;
  config.vocab_size = 2048, config.hidden_size = 256, config.num_hidden_layers = 3;
  config.num_attention_heads = 2, config.num_key_value_heads = 2;  // head_dim 128
  config.intermediate_size = 512, config.moe_intermediate_size = 128;
  config.n_routed_experts = 8, config.n_shared_experts = 1, config.num_experts_per_tok = 2;
  const auto dir =
      std::filesystem::temp_directory_path() / ("dsocr_graphs_" + std::to_string(::getpid()));
  auto state = weights::StateDict::open(model::write_checkpoint(config, false, dir));
  REQUIRE(state.ok());
  model::LanguageModel lm(config);
  REQUIRE(lm->load(*state, at::kBFloat16, cuda).ok());

  constexpr int64_t kBlock = 16, kSeqs = 13, kMaxLen = 1024;
  const int64_t per_seq = kMaxLen / kBlock, blocks = kSeqs * per_seq;
  KvCache cache =
      KvCache::allocate(config.num_hidden_layers, blocks + 1, kBlock, 2, 128, at::kBFloat16, cuda);
  cache.gpu_attention = make_gpu_attention(cuda, 2, 2, 128, kBlock, blocks + 1, at::kBFloat16,
                                           /*max_graph_batch=*/16, per_seq);
  if (cache.gpu_attention == nullptr) {
    WARN("skipped: this build has no GPU attention kernels (DSOCR_CUDA=OFF)");
    return;
  }

  // Thirteen sequences with scattered blocks, their prompts (1..600 tokens) prefilled eagerly.
  std::mt19937 rng(5);
  std::vector<int32_t> pool(static_cast<size_t>(blocks));
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  std::vector<std::vector<int32_t>> tables(kSeqs);
  std::vector<int64_t> lengths(kSeqs);
  for (int64_t s = 0; s < kSeqs; ++s) {
    tables[s].assign(pool.begin() + s * per_seq, pool.begin() + (s + 1) * per_seq);
    lengths[s] = 1 + static_cast<int64_t>(rng() % 600);
    const int64_t n = lengths[s];
    ForwardBatch b;
    const auto longs = at::TensorOptions().dtype(at::kLong);
    b.input_ids = at::randint(2, config.vocab_size, {n}, longs).to(cuda);
    b.positions = at::arange(n, longs);
    std::vector<int64_t> slots(static_cast<size_t>(n));
    for (int64_t p = 0; p < n; ++p) slots[p] = tables[s][p / kBlock] * kBlock + p % kBlock;
    b.slot_mapping = at::tensor(slots, longs).to(cuda);
    b.positions = b.positions.to(cuda);
    b.sequences.push_back({0, n, n, tables[s]});
    b.logits_rows = at::full({1}, n - 1, longs).to(cuda);
    (void)lm->forward(b, cache);
  }

  auto logger = log::get("engine");
  std::unique_ptr<DecodeGraphs> graphs =
      DecodeGraphs::capture(lm, cache, static_cast<int32_t>(blocks), 16, *logger);
  REQUIRE(graphs != nullptr);
  CHECK(graphs->sizes().back() == 16);

  // Decode steps over changing subsets: each step's batch through the graph, then the same rows
  // eagerly (writing the same K/V again), logits compared row by row.
  for (int64_t step = 0; step < 12; ++step) {
    std::vector<int64_t> chosen;
    for (int64_t s = 0; s < kSeqs; ++s)
      if (rng() % 3 != 0 || step == 0) chosen.push_back(s);
    if (step % 4 == 3) chosen.resize(1);
    DecodeRows rows;
    for (int64_t s : chosen) {
      const int64_t p = lengths[s];
      rows.ids.push_back(2 + static_cast<int64_t>(rng() % (config.vocab_size - 2)));
      rows.positions.push_back(p);
      rows.slots.push_back(tables[s][p / kBlock] * kBlock + p % kBlock);
      rows.context_lens.push_back(p + 1);
      rows.block_tables.push_back(tables[s]);
    }
    const int64_t b = static_cast<int64_t>(chosen.size());
    CAPTURE(step, b);
    // The blocks of the sequences not in this step, and the scratch block: the replay (its
    // padding rows included) must not write them.
    std::vector<int64_t> untouched = {blocks};
    for (int64_t s = 0; s < kSeqs; ++s)
      if (std::find(chosen.begin(), chosen.end(), s) == chosen.end())
        untouched.insert(untouched.end(), tables[s].begin(), tables[s].end());
    const at::Tensor untouched_index = at::tensor(untouched, at::kLong).to(cuda);
    const at::Tensor before_k = cache.keys[1].index_select(0, untouched_index).clone();
    const at::Tensor before_v = cache.values[2].index_select(0, untouched_index).clone();
    at::Tensor replayed = graphs->run(rows);
    CHECK(at::equal(cache.keys[1].index_select(0, untouched_index), before_k));
    CHECK(at::equal(cache.values[2].index_select(0, untouched_index), before_v));
    REQUIRE(replayed.defined());
    REQUIRE(replayed.size(0) == b);
    replayed = replayed.clone();

    ForwardBatch eager;
    eager.input_ids = at::tensor(rows.ids, at::kLong).to(cuda);
    eager.positions = at::tensor(rows.positions, at::kLong).to(cuda);
    eager.slot_mapping = at::tensor(rows.slots, at::kLong).to(cuda);
    eager.logits_rows = at::arange(b, at::TensorOptions().dtype(at::kLong).device(cuda));
    for (int64_t i = 0; i < b; ++i)
      eager.sequences.push_back({i, 1, rows.context_lens[i], rows.block_tables[i]});
    const at::Tensor reference = lm->forward(eager, cache);
    const at::Tensor error = (replayed - reference).norm(2, 1) / reference.norm(2, 1);
    CAPTURE(error.max().item<double>());
    CHECK(at::isfinite(replayed).all().item<bool>());
    CHECK(error.max().item<double>() < 2e-2);
    CHECK((replayed.argmax(1) == reference.argmax(1)).to(at::kFloat).mean().item<double>() >= 0.9);
    for (int64_t s : chosen) ++lengths[s];
  }
  // A batch larger than the largest graph: not replayed (the caller runs it eagerly).
  DecodeRows too_many;
  pad_decode_rows(too_many, 17, static_cast<int32_t>(blocks), kBlock);
  CHECK_FALSE(graphs->run(too_many).defined());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace dsocr::engine

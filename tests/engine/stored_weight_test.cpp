// Narrow weights on the CPU (engine/model/stored_weight.h, cpu_kernels.h: linear, widen,
// quantize_int8): each format against float32 arithmetic on its widened matrix, both forward()
// paths, and the int8 quantizer's error bound.
#include <ATen/ATen.h>

#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>

#include "engine/kernels/cpu_kernels.h"
#include "engine/kernels/forward_batch.h"
#include "engine/kernels/kv_cache.h"
#include "engine/model/language_model.h"
#include "engine/model/stored_weight.h"
#include "tests/engine/random_language_model.h"
#include "weights/cpu_allocator.h"
#include "weights/safetensors.h"

namespace dsocr::model {
namespace {

using engine::cpu::WeightFormat;

double max_abs(const at::Tensor& t) { return t.abs().max().item<double>(); }

TEST_CASE("int8 quantization: a scale per group of 32, error within half a step",
          "[stored_weight]") {
  at::manual_seed(1);
  at::Tensor w = at::randn({37, 72});  // groups of 32, 32 and 8 values
  w[3].mul_(100);                      // rows of very different magnitudes
  w[4][40] = 1000;                     // one large value coarsens its group only
  w[5].zero_();                        // all-zero groups: scale 0, not a division by zero
  for (const at::Tensor& source : {w, w.to(at::kBFloat16)}) {
    CAPTURE(source.scalar_type());
    const StoredWeight q = StoredWeight::make(source, WeightFormat::kInt8);
    REQUIRE(q.format() == WeightFormat::kInt8);
    CHECK(q.bytes() == 37 * 72 + 37 * 3 * 4);
    const at::Tensor exact = source.to(at::kFloat);
    const at::Tensor back = q.widened();
    // Each element's group scale, by padding the row to whole groups.
    const at::Tensor padded = at::constant_pad_nd(exact, {0, 96 - 72});
    const at::Tensor group_scale =
        (padded.view({37, 3, 32}).abs().amax(2, true) / 127).expand({37, 3, 32}).reshape({37, 96});
    const at::Tensor scale = group_scale.narrow(1, 0, 72);
    CHECK(((back - exact).abs() <= scale * 0.5 + 1e-6 * exact.abs()).all().item<bool>());
    CHECK(at::equal(back[5], at::zeros({72})));
    // The row with one large value: its other groups keep their fine steps.
    CHECK((back[4].narrow(0, 0, 32) - exact[4].narrow(0, 0, 32)).abs().max().item<float>() <
          0.05);
    // The largest magnitude of each group is represented exactly (it is +-127 steps).
    CHECK(at::allclose(back.abs().amax(1), exact.abs().amax(1), 1e-6, 0));
  }
}

TEST_CASE("a bfloat16 weight in bfloat16 is kept as it is, not copied", "[stored_weight]") {
  const at::Tensor w = at::randn({16, 32}).to(at::kBFloat16);
  const StoredWeight s = StoredWeight::make(w, WeightFormat::kBFloat16);
  CHECK(s.matrix().data == w.data_ptr());
  CHECK(at::equal(s.widened(), w.to(at::kFloat)));
  const StoredWeight from_float = StoredWeight::make(w.to(at::kFloat), WeightFormat::kBFloat16);
  CHECK(at::equal(from_float.widened(), w.to(at::kFloat)));
}

TEST_CASE("stored weights compute float32 x times their widened matrix, both paths",
          "[stored_weight]") {
  at::NoGradGuard no_grad;
  at::manual_seed(2);
  for (auto [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{1, 8}, {7, 40}, {300, 136}}) {
    const at::Tensor w = at::randn({rows, cols}) * 0.2;
    for (WeightFormat format :
         {WeightFormat::kFloat32, WeightFormat::kBFloat16, WeightFormat::kInt8}) {
      const StoredWeight s = StoredWeight::make(w, format);
      const at::Tensor wide = s.widened();
      // 1..16 rows: cpu::linear; 17 and more: widened blocks through sgemm.
      for (int64_t t : {1, 2, 3, 16, 17, 40}) {
        CAPTURE(rows, cols, engine::cpu::weight_format_name(format), t);
        const at::Tensor x = at::randn({t, cols});
        const at::Tensor out = s.forward(x);
        REQUIRE(out.sizes() == at::IntArrayRef({t, rows}));
        const at::Tensor reference = at::mm(x, wide.t());
        CHECK(max_abs(out - reference) <= 1e-5 * std::max(1.0, max_abs(reference)));
        // The result keeps x's dtype.
        CHECK(s.forward(x.to(at::kBFloat16)).scalar_type() == at::kBFloat16);
      }
    }
  }
}

TEST_CASE("cpu::linear: a row's result does not depend on the other rows", "[stored_weight]") {
  at::manual_seed(3);
  const at::Tensor w = at::randn({70, 64});
  const at::Tensor x = at::randn({9, 64});
  for (WeightFormat format :
       {WeightFormat::kFloat32, WeightFormat::kBFloat16, WeightFormat::kInt8}) {
    CAPTURE(engine::cpu::weight_format_name(format));
    const StoredWeight s = StoredWeight::make(w, format);
    const at::Tensor all = s.forward(x);
    for (int64_t i = 0; i < 9; ++i) CHECK(at::equal(s.forward(x.slice(0, i, i + 1))[0], all[i]));
  }
}


// ---- The language model with stored weights against its float32 modules ----

namespace model_level {

namespace fs = std::filesystem;
using engine::ForwardBatch;
using engine::KvCache;

weights::LanguageConfig small_config() {
  weights::LanguageConfig c;
  c.vocab_size = 4096, c.hidden_size = 256, c.num_hidden_layers = 3;
  c.num_attention_heads = 4, c.num_key_value_heads = 4;
  c.intermediate_size = 512, c.moe_intermediate_size = 128;
  c.n_routed_experts = 16, c.n_shared_experts = 2, c.num_experts_per_tok = 4;
  return c;
}

// Feeds tokens through the model over one sequence's KV cache, as the engine does: a prompt in
// one chunk, then one token a step.
class Decoder {
 public:
  Decoder(LanguageModel& lm, int64_t max_tokens) : lm_(lm) {
    const auto& c = lm->config();
    const int64_t blocks = max_tokens / kBlock + 1;
    cache_ = KvCache::allocate(c.num_hidden_layers, blocks, kBlock, c.num_key_value_heads,
                               c.head_dim(), at::kFloat, at::kCPU);
    table_.resize(static_cast<size_t>(blocks));
    std::iota(table_.begin(), table_.end(), 0);
  }
  // The logits after the last of `ids`.
  at::Tensor feed(const std::vector<int64_t>& ids) {
    const auto n = static_cast<int64_t>(ids.size());
    ForwardBatch b;
    b.input_ids = at::tensor(ids, at::kLong);
    b.positions = at::arange(position_, position_ + n, at::kLong);
    b.slot_mapping = b.positions.clone();
    b.sequences.push_back({0, n, position_ + n, table_});
    b.logits_rows = at::full({1}, n - 1, at::kLong);
    position_ += n;
    return lm_->forward(b, cache_)[0].clone();
  }

 private:
  static constexpr int64_t kBlock = 16;
  LanguageModel& lm_;
  KvCache cache_;
  std::vector<int32_t> table_;
  int64_t position_ = 0;
};

// The logits after the prompt and after each of `following`.
std::vector<at::Tensor> run(LanguageModel& lm, const std::vector<int64_t>& prompt,
                            const std::vector<int64_t>& following) {
  Decoder d(lm, static_cast<int64_t>(prompt.size() + following.size()));
  std::vector<at::Tensor> out{d.feed(prompt)};
  for (int64_t t : following) out.push_back(d.feed({t}));
  return out;
}

// Greedy decoding of `steps` tokens after `prompt`.
std::vector<int64_t> greedy(LanguageModel& lm, const std::vector<int64_t>& prompt, int64_t steps) {
  Decoder d(lm, static_cast<int64_t>(prompt.size()) + steps);
  std::vector<int64_t> tokens;
  at::Tensor logits = d.feed(prompt);
  for (int64_t s = 0; s < steps; ++s) {
    tokens.push_back(logits.argmax().item<int64_t>());
    if (s + 1 < steps) logits = d.feed({tokens.back()});
  }
  return tokens;
}

struct Agreement {
  double worst_relative_error = 0;  // max over steps of |Δlogits| / |logits| (L2)
  double mean_relative_error = 0;   // the same, averaged over steps
  double top1_agreement = 0;        // share of steps with the same argmax, on the same inputs
  int64_t greedy_prefix = 0;        // greedy tokens equal to the float32 path's before the first
                                    // difference (free-running)
};

Agreement compare(LanguageModel& reference, LanguageModel& candidate,
                  const std::vector<int64_t>& prompt, int64_t steps) {
  const std::vector<int64_t> ref_tokens = greedy(reference, prompt, steps);
  const std::vector<int64_t> forced(ref_tokens.begin(), ref_tokens.end() - 1);
  const std::vector<at::Tensor> a = run(reference, prompt, forced);
  const std::vector<at::Tensor> b = run(candidate, prompt, forced);
  Agreement r;
  int64_t same = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double e = ((a[i] - b[i]).norm() / a[i].norm()).item<double>();
    r.worst_relative_error = std::max(r.worst_relative_error, e);
    r.mean_relative_error += e / static_cast<double>(a.size());
    same += a[i].argmax().item<int64_t>() == b[i].argmax().item<int64_t>();
  }
  r.top1_agreement = static_cast<double>(same) / static_cast<double>(a.size());
  const std::vector<int64_t> cand_tokens = greedy(candidate, prompt, steps);
  while (r.greedy_prefix < steps && cand_tokens[r.greedy_prefix] == ref_tokens[r.greedy_prefix])
    ++r.greedy_prefix;
  return r;
}

TEST_CASE("language model: bfloat16 and int8 stored weights against the float32 modules",
          "[stored_weight][language_model]") {
  at::NoGradGuard no_grad;
  const weights::LanguageConfig config = small_config();
  const fs::path dir = fs::temp_directory_path() / ("dsocr_stored_" + std::to_string(::getpid()));
  at::manual_seed(7);
  const at::Tensor prompt_ids = at::randint(2, config.vocab_size, {96}, at::kLong);
  const std::vector<int64_t> prompt(prompt_ids.data_ptr<int64_t>(),
                                    prompt_ids.data_ptr<int64_t>() + 96);
  constexpr int64_t kSteps = 64;
  for (bool outliers : {false, true}) {
    CAPTURE(outliers);
    auto state = weights::StateDict::open(write_checkpoint(config, outliers, dir));
    REQUIRE(state.ok());
    LanguageModel modules(config), bf16(config), int8(config);
    REQUIRE(modules->load(*state, at::kFloat, at::kCPU).ok());
    REQUIRE(bf16->load(*state, at::kFloat, at::kCPU, WeightFormat::kBFloat16).ok());
    REQUIRE(int8->load(*state, at::kFloat, at::kCPU, WeightFormat::kInt8).ok());

    // The stored paths are really in use: their modules' own matrices were emptied.
    const auto weight_numel = [](LanguageModel& lm, const std::string& name) {
      return lm->named_parameters()[name].numel();
    };
    CHECK(weight_numel(modules, "model.layers.1.mlp.experts.3.up_proj.weight") ==
          config.moe_intermediate_size * config.hidden_size);
    CHECK(weight_numel(bf16, "model.layers.1.mlp.experts.3.up_proj.weight") == 0);
    CHECK(weight_numel(int8, "lm_head.weight") == 0);

    // bfloat16 as stored: the same numbers as the float32 modules, up to the order of sums (a
    // near-tie may still flip one step's argmax between summation orders).
    const Agreement same = compare(modules, bf16, prompt, kSteps);
    CHECK(same.worst_relative_error < 1e-4);
    CHECK(same.top1_agreement >= 0.98);

    // int8: the error it adds (docs/cpu.md quotes these figures; print them with
    // `engine_test "[language_model]" -s`).
    const Agreement q = compare(modules, int8, prompt, kSteps);
    std::printf("int8 vs float32 (%s weights): logits error mean %.4f, worst %.4f; top-1 "
                "agreement %.3f on the same inputs; greedy tokens equal for %lld of %lld\n",
                outliers ? "outlier" : "random", q.mean_relative_error, q.worst_relative_error,
                q.top1_agreement,
                static_cast<long long>(q.greedy_prefix), static_cast<long long>(kSteps));
    // The mean, not the worst step: a step where rounding flips one of the router's near-tied
    // expert choices (random routers have many) differs far more than the rest.
    CHECK(q.mean_relative_error < (outliers ? 0.08 : 0.03));
    CHECK(q.top1_agreement >= 0.85);
    // And not the bfloat16 numbers: int8 really is in use.
    CHECK(q.mean_relative_error > 1e-4);
  }
  fs::remove_all(dir);
}

}  // namespace model_level

}  // namespace
}  // namespace dsocr::model

namespace dsocr::model {
namespace {

// Not a test: the speed of cpu::linear per format at decode sizes (hidden, `[.bench]`):
//   ./build/bin/engine_test "[.bench][stored_weight]" -s
TEST_CASE("stored weight speed per format (benchmark)", "[.bench][stored_weight]") {
  at::NoGradGuard no_grad;
  for (auto [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{129280, 1280}, {6848, 1280},
                                                                    {896 * 64, 1280}}) {
    const at::Tensor w = at::randn({rows, cols}) * 0.05;
    for (WeightFormat format :
         {WeightFormat::kFloat32, WeightFormat::kBFloat16, WeightFormat::kInt8}) {
      const StoredWeight s = StoredWeight::make(w, format);
      for (int64_t t : {1, 8}) {
        const at::Tensor x = at::randn({t, cols});
        (void)s.forward(x);
        const auto start = std::chrono::steady_clock::now();
        constexpr int kRuns = 10;
        for (int i = 0; i < kRuns; ++i) (void)s.forward(x);
        const double ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                .count() / kRuns;
        std::printf("[%lld x %lld] %-8s rows %lld: %7.2f ms, %6.1f GB/s of weights\n",
                    static_cast<long long>(rows), static_cast<long long>(cols),
                    engine::cpu::weight_format_name(format), static_cast<long long>(t), ms,
                    static_cast<double>(s.bytes()) / ms / 1e6);
      }
    }
  }
}

}  // namespace
}  // namespace dsocr::model

namespace dsocr::model {
namespace {

namespace fs = std::filesystem;

// /proc/self/status fields in bytes ("VmRSS", "VmHWM").
int64_t status_bytes(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1)) * 1024;
  }
  return -1;
}

TEST_CASE("loading int8 weights from a bfloat16 checkpoint peaks near the final footprint",
          "[stored_weight][language_model]") {
  at::NoGradGuard no_grad;
  // ~150 MB of bfloat16: large enough to see the file's pages and a widened copy in RSS.
  weights::LanguageConfig config = model_level::small_config();
  config.vocab_size = 32000, config.hidden_size = 512, config.intermediate_size = 1024;
  config.moe_intermediate_size = 256, config.n_routed_experts = 32;
  const fs::path dir =
      fs::temp_directory_path() / ("dsocr_stored_peak_" + std::to_string(::getpid()));
  const fs::path file = write_checkpoint(config, false, dir);
  const auto file_bytes = static_cast<int64_t>(fs::file_size(file));
  {
    auto state = weights::StateDict::open(file);
    REQUIRE(state.ok());
    weights::release_cached_cpu_memory();
    // Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
    {
      std::ofstream clear("/proc/self/clear_refs");
      clear << "5";
      if (!clear.flush()) {
        WARN("cannot reset the peak RSS here (/proc/self/clear_refs): not measured");
        return;
      }
    }
    const int64_t before = status_bytes("VmRSS"), file_pages_before = status_bytes("RssFile");
    REQUIRE(before > 0);
    REQUIRE(status_bytes("VmHWM") < before + (8 << 20));
    LanguageModel lm(config);
    REQUIRE(lm->load(*state, at::kFloat, at::kCPU, WeightFormat::kInt8).ok());
    const int64_t peak = status_bytes("VmHWM");
    const int64_t file_pages = status_bytes("RssFile") - file_pages_before;
    std::printf("int8 load of a %.0f MB bfloat16 checkpoint: peak +%.0f MB, file pages +%.0f MB\n",
                file_bytes / 1e6, (peak - before) / 1e6, file_pages / 1e6);
    // The file's pages were released as each matrix was quantized: they are not held after.
    CHECK(file_pages < file_bytes / 10);
    // The int8 matrices and their scales (~0.45x the file: the bfloat16 embedding table stays
    // a view of the file) plus one block of rows being converted; never the whole file's pages
    // plus the copies (~1.2x the file), let alone float32 modules (2x).
    CHECK(peak - before < file_bytes * 7 / 10);
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace dsocr::model

// Config, checkpoint layout, make-model and strict loading.
#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "weights/checkpoint_layout.h"
#include "weights/loader.h"
#include "weights/make_model.h"
#include "weights/model_config.h"

namespace dsocr::weights {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

const fs::path kShared =
    fs::path(DSOCR_TEST_SOURCE_DIR) / ".." / "shared" / "model-files" / "deepseek-ocr2";

struct TempDir {
  fs::path path = fs::temp_directory_path() /
                  ("dsocr-mf-" + std::to_string(::getpid()) + "-" + std::to_string(std::rand()));
  ~TempDir() { fs::remove_all(path); }
};

TEST_CASE("ModelConfig: the official config.json gives the spec's values", "[config]") {
  auto c = ModelConfig::from_file(kShared / "config.json");
  REQUIRE(c.ok());
  const auto& l = c->language;
  CHECK(l.hidden_size == 1280);
  CHECK(l.num_hidden_layers == 12);
  CHECK(l.head_dim() == 128);
  CHECK(l.n_routed_experts == 64);
  CHECK(l.num_experts_per_tok == 6);
  CHECK(l.vocab_size == 129280);
  CHECK(l.rope_theta == 10000.0);  // absent from the file: code default
  CHECK(l.rms_norm_eps == 1e-6);
  CHECK_FALSE(l.norm_topk_prob);
  CHECK(c->sam.width == 768);  // no dsocr_vision block: spec §2.3 values
  CHECK(c->sam.downsample_channels == std::vector<int64_t>{512, 896});
  CHECK(c->encoder.hidden_size == 896);
  CHECK(c->encoder.rope_theta == 1e6);
  CHECK(c->image_token_id == 128815);
}

TEST_CASE("ModelConfig: errors name the key", "[config]") {
  json j = ModelConfig().to_json();
  auto expect = [](json bad, const std::string& needle) {
    auto c = ModelConfig::from_json(bad);
    REQUIRE_FALSE(c.ok());
    INFO(c.status().message());
    CHECK(c.status().message().find(needle) != std::string::npos);
  };
  json b = j;
  b["hidden_size"] = "wide";
  expect(b, "hidden_size has the wrong type");
  b = j;
  b["num_attention_heads"] = 7;
  expect(b, "divisible by num_attention_heads (7)");
  b = j;
  b["use_mla"] = true;
  expect(b, "use_mla");
  b = j;
  b["dsocr_vision"]["encoder"]["hidden_size"] = 640;
  expect(b, "downsample_channels[1] (896) must equal the encoder hidden_size (640)");
  b = j;
  b["num_experts_per_tok"] = 65;
  expect(b, "num_experts_per_tok (65) exceeds n_routed_experts (64)");
  CHECK(ModelConfig::from_file("/nonexistent/config.json").status().code() ==
        StatusCode::kNotFound);
}

TEST_CASE("ModelConfig: to_json round-trips every preset", "[config]") {
  for (const char* preset : {"tiny", "small", "full"}) {
    auto c = preset_config(preset);
    REQUIRE(c.ok());
    auto back = ModelConfig::from_json(c->to_json());
    REQUIRE(back.ok());
    CHECK(back->to_json() == c->to_json());
    CHECK(deepseek_ocr2_tensors(*back).size() == deepseek_ocr2_tensors(*c).size());
  }
  CHECK_FALSE(preset_config("huge").ok());
}

TEST_CASE("Layout: the full preset is the official checkpoint, name for name", "[layout]") {
  auto c = preset_config("full");
  REQUIRE(c.ok());
  auto tensors = deepseek_ocr2_tensors(*c);
  CHECK(tensors.size() == 2707);
  CHECK(total_parameters(tensors) == 3389119360LL);
  std::ifstream in(kShared / "model.safetensors.index.json");
  REQUIRE(in);
  json index = json::parse(in);
  std::set<std::string> official, ours;
  for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it)
    official.insert(it.key());
  for (const auto& t : tensors) ours.insert(t.name);
  CHECK(ours == official);
  // Shapes the spec's table fixes (§3.2), one of each kind.
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& t : tensors) shapes[t.name] = t.shape;
  CHECK(shapes["model.sam_model.pos_embed"] == std::vector<int64_t>{1, 64, 64, 768});
  CHECK(shapes["model.sam_model.blocks.2.attn.rel_pos_h"] == std::vector<int64_t>{127, 64});
  CHECK(shapes["model.sam_model.blocks.3.attn.rel_pos_w"] == std::vector<int64_t>{27, 64});
  CHECK(shapes["model.sam_model.net_3.weight"] == std::vector<int64_t>{896, 512, 3, 3});
  CHECK(shapes["model.qwen2_model.model.model.layers.0.self_attn.k_proj.weight"] ==
        std::vector<int64_t>{128, 896});
  CHECK(shapes["model.qwen2_model.query_768.weight"] == std::vector<int64_t>{144, 896});
  CHECK(shapes["model.projector.layers.weight"] == std::vector<int64_t>{1280, 896});
  CHECK(shapes["model.layers.0.mlp.gate_proj.weight"] == std::vector<int64_t>{6848, 1280});
  CHECK(shapes["model.layers.5.mlp.shared_experts.up_proj.weight"] ==
        std::vector<int64_t>{1792, 1280});
  CHECK(shapes["model.layers.11.mlp.experts.63.down_proj.weight"] ==
        std::vector<int64_t>{1280, 896});
  CHECK(shapes["lm_head.weight"] == std::vector<int64_t>{129280, 1280});
}

TEST_CASE("make-model: tiny checkpoint, deterministic, loadable", "[make_model]") {
  TempDir a, b;
  MakeModelOptions options{
      .preset = "tiny", .seed = 7, .dtype = DType::kBF16, .out = a.path, .tokenizer_dir = kShared};
  REQUIRE(make_model(options).ok());
  options.out = b.path;
  REQUIRE(make_model(options).ok());
  auto read = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const std::string shard = "model-00001-of-000001.safetensors";
  CHECK(read(a.path / shard) == read(b.path / shard));  // same seed, same bytes
  CHECK(fs::exists(a.path / "tokenizer.json"));
  auto config = ModelConfig::from_file(a.path / "config.json");
  REQUIRE(config.ok());
  CHECK(config->language.hidden_size == 64);
  auto sd = StateDict::open(a.path);
  REQUIRE(sd.ok());
  CHECK(sd->size() == deepseek_ocr2_tensors(*config).size());
  at::Tensor norm = *sd->get("model.norm.weight");
  CHECK(norm.scalar_type() == at::kBFloat16);
  CHECK(std::abs(norm.to(at::kFloat).mean().item<float>() - 1.0f) < 0.1f);  // norms near one
  at::Tensor q = sd->get("model.layers.1.self_attn.q_proj.weight")->to(at::kFloat);
  CHECK(std::abs(q.std().item<float>() - 1.0f / 8.0f) < 0.02f);  // 1/sqrt(fan_in 64)
  CHECK(at::isfinite(q).all().item<bool>());
  options.seed = 8;
  options.out = b.path;
  REQUIRE(make_model(options).ok());
  CHECK(read(a.path / shard) != read(b.path / shard));
}

// A module shaped like two checkpoint entries, for strict loading.
struct Pair : torch::nn::Module {
  at::Tensor weight = register_parameter("weight", at::zeros({2, 3}));
  at::Tensor bias = register_parameter("bias", at::zeros({2}));
};

TEST_CASE("load_module: strict, all problems at once, never half-loaded", "[loader]") {
  TempDir dir;
  fs::create_directories(dir.path);
  REQUIRE(
      write_safetensors(dir.path / "m.safetensors", {{"p.weight", at::ones({2, 3}, at::kBFloat16)},
                                                     {"p.bias", at::full({2}, 2.0)},
                                                     {"q.extra", at::ones({1})}})
          .ok());
  auto sd = StateDict::open(dir.path / "m.safetensors");
  REQUIRE(sd.ok());
  Pair m;
  CHECK(load_module(m, *sd, {.prefix = "p."}).ok());
  CHECK(m.weight.scalar_type() == at::kFloat);  // converted to the module's dtype, once
  CHECK(at::equal(m.weight, at::ones({2, 3})));
  CHECK(at::equal(m.bias, at::full({2}, 2.0)));

  REQUIRE(write_safetensors(dir.path / "bad.safetensors", {{"p.weight", at::ones({3, 2})},
                                                           {"p.stray", at::ones({1})},
                                                           {"p.stray2", at::ones({1})}})
              .ok());
  auto bad = StateDict::open(dir.path / "bad.safetensors");
  Pair fresh;
  Status s = load_module(fresh, *bad, {.prefix = "p."});
  INFO(s.message());
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("1 missing, 2 unexpected, 1 mismatched") != std::string::npos);
  CHECK(s.message().find("missing: p.bias") != std::string::npos);
  CHECK(s.message().find("unexpected: p.stray") != std::string::npos);
  CHECK(s.message().find("p.weight: checkpoint shape [3, 2], module expects [2, 3]") !=
        std::string::npos);
  CHECK(at::equal(fresh.weight, at::zeros({2, 3})));  // untouched
}

}  // namespace
}  // namespace dsocr::weights

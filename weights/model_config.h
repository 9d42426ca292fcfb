// ModelConfig: DeepSeek-OCR-2's hyper-parameters, typed, from a model directory's config.json.
//
// Language-model keys are read at the top level of config.json (where the reference code reads
// them), falling back to "language_config", then to the code defaults of spec §2.2 for keys the
// file omits (rope_theta 1e4, rms_norm_eps 1e-6, norm_topk_prob false, ...). The official file
// cannot describe the vision encoders (the official code hard-codes them, spec §2.3); a
// "dsocr_vision" block, written by `dsocr make-model`, carries them for shrunk test models, and
// the spec §2.3 values apply when it is absent (as in the real file).
//
// validate() rejects what the model code cannot run, naming the key ("language.hidden_size (100)
// must be divisible by num_attention_heads (3)").
//
// Thread-safety: a plain value.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/status.h"

namespace dsocr::weights {

struct LanguageConfig {
  int64_t vocab_size = 129280;
  int64_t hidden_size = 1280;
  int64_t intermediate_size = 6848;     // dense MLP (layers < first_k_dense_replace)
  int64_t moe_intermediate_size = 896;  // each routed expert
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 10;
  int64_t num_key_value_heads = 10;
  int64_t n_routed_experts = 64;
  int64_t n_shared_experts = 2;
  int64_t num_experts_per_tok = 6;
  int64_t first_k_dense_replace = 1;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  std::string topk_method = "greedy";
  std::string scoring_func = "softmax";
  bool norm_topk_prob = false;
  double routed_scaling_factor = 1.0;
  int64_t max_position_embeddings = 8192;
  int64_t bos_token_id = 0;
  int64_t eos_token_id = 1;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  bool use_mla = false;

  int64_t head_dim() const { return hidden_size / num_attention_heads; }
};

struct SamConfig {
  int64_t width = 768;
  int64_t layers = 12;
  int64_t heads = 12;
  int64_t mlp_dim = 3072;
  int64_t window_size = 14;
  std::vector<int64_t> global_attn_indexes = {2, 5, 8, 11};
  int64_t out_chans = 256;
  std::vector<int64_t> downsample_channels = {512, 896};  // net_2, net_3 outputs
  int64_t image_size = 1024;
  int64_t patch_size = 16;
  double layer_norm_eps = 1e-6;

  int64_t grid() const { return image_size / patch_size; }  // 64
  bool is_global(int64_t layer) const;
};

struct EncoderConfig {  // the Qwen2 decoder used as encoder
  int64_t hidden_size = 896;
  int64_t layers = 24;
  int64_t heads = 14;
  int64_t kv_heads = 2;
  int64_t intermediate_size = 4864;
  double rope_theta = 1000000.0;
  double rms_norm_eps = 1e-6;

  int64_t head_dim() const { return hidden_size / heads; }
};

struct ModelConfig {
  LanguageConfig language;
  SamConfig sam;
  EncoderConfig encoder;
  int64_t projector_input_dim = 896;
  int64_t projector_output_dim = 1280;
  int64_t image_token_id = 128815;
  std::string torch_dtype = "bfloat16";
  // Learned query banks of the encoder: 144 for 768 tiles, 256 for the 1024 global view.
  static constexpr int64_t kQueries768 = 144;
  static constexpr int64_t kQueries1024 = 256;

  static StatusOr<ModelConfig> from_json(const nlohmann::json& config);
  static StatusOr<ModelConfig> from_file(const std::filesystem::path& config_json);
  Status validate() const;

  // config.json in the official layout (language keys at the top level and in language_config,
  // vision_config, projector_config) plus the "dsocr_vision" block.
  nlohmann::json to_json() const;
};

}  // namespace dsocr::weights

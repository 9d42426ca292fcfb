#include "weights/model_config.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

namespace dsocr::weights {
namespace {

using json = nlohmann::json;

// Reads `key` from the first object in `sources` that has it; keeps `*out` otherwise. A present
// key of the wrong type is an error naming it.
template <typename T>
Status read(std::initializer_list<const json*> sources, const char* key, T* out,
            const std::string& where) {
  for (const json* src : sources) {
    if (src == nullptr || !src->is_object() || !src->contains(key)) continue;
    const json& v = (*src)[key];
    if (v.is_null()) return Status();  // explicit null: the default stands
    bool ok;
    if constexpr (std::is_same_v<T, bool>)
      ok = v.is_boolean();
    else if constexpr (std::is_same_v<T, std::string>)
      ok = v.is_string();
    else if constexpr (std::is_same_v<T, double>)
      ok = v.is_number();
    else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
      ok = v.is_array() &&
           std::all_of(v.begin(), v.end(), [](const json& x) { return x.is_number_integer(); });
    } else
      ok = v.is_number_integer();
    if (!ok) return invalid_argument("config.json: " + where + key + " has the wrong type");
    *out = v.get<T>();
    return Status();
  }
  return Status();
}

Status positive(int64_t v, const std::string& name) {
  if (v <= 0)
    return invalid_argument("config.json: " + name + " must be positive, got " + std::to_string(v));
  return Status();
}

}  // namespace

bool SamConfig::is_global(int64_t layer) const {
  return std::find(global_attn_indexes.begin(), global_attn_indexes.end(), layer) !=
         global_attn_indexes.end();
}

StatusOr<ModelConfig> ModelConfig::from_json(const json& j) {
  if (!j.is_object()) return invalid_argument("config.json is not a JSON object");
  ModelConfig c;
  const json* top = &j;
  const json* lang = j.contains("language_config") ? &j["language_config"] : nullptr;
  auto& l = c.language;
#define DSOCR_READ_LANG(field) DSOCR_RETURN_IF_ERROR(read({top, lang}, #field, &l.field, ""))
  DSOCR_READ_LANG(vocab_size);
  DSOCR_READ_LANG(hidden_size);
  DSOCR_READ_LANG(intermediate_size);
  DSOCR_READ_LANG(moe_intermediate_size);
  DSOCR_READ_LANG(num_hidden_layers);
  DSOCR_READ_LANG(num_attention_heads);
  DSOCR_READ_LANG(num_key_value_heads);
  DSOCR_READ_LANG(n_routed_experts);
  DSOCR_READ_LANG(n_shared_experts);
  DSOCR_READ_LANG(num_experts_per_tok);
  DSOCR_READ_LANG(first_k_dense_replace);
  DSOCR_READ_LANG(n_group);
  DSOCR_READ_LANG(topk_group);
  DSOCR_READ_LANG(topk_method);
  DSOCR_READ_LANG(scoring_func);
  DSOCR_READ_LANG(norm_topk_prob);
  DSOCR_READ_LANG(routed_scaling_factor);
  DSOCR_READ_LANG(max_position_embeddings);
  DSOCR_READ_LANG(bos_token_id);
  DSOCR_READ_LANG(eos_token_id);
  DSOCR_READ_LANG(rope_theta);
  DSOCR_READ_LANG(rms_norm_eps);
  DSOCR_READ_LANG(tie_word_embeddings);
  DSOCR_READ_LANG(use_mla);
#undef DSOCR_READ_LANG
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    return unimplemented("config.json: rope_scaling is not supported (DeepSeek-OCR-2 has none)");
  }
  if (j.contains("projector_config")) {
    const json* p = &j["projector_config"];
    DSOCR_RETURN_IF_ERROR(read({p}, "input_dim", &c.projector_input_dim, "projector_config."));
    DSOCR_RETURN_IF_ERROR(read({p}, "n_embed", &c.projector_output_dim, "projector_config."));
    std::string type = "linear";
    DSOCR_RETURN_IF_ERROR(read({p}, "projector_type", &type, "projector_config."));
    if (type != "linear") {
      return unimplemented("config.json: projector_config.projector_type '" + type +
                           "' is not supported");
    }
  } else {
    c.projector_input_dim = c.encoder.hidden_size;
    c.projector_output_dim = l.hidden_size;
  }
  DSOCR_RETURN_IF_ERROR(read({top}, "image_token_id", &c.image_token_id, ""));
  DSOCR_RETURN_IF_ERROR(read({top}, "torch_dtype", &c.torch_dtype, ""));
  if (j.contains("dsocr_vision")) {
    const json& v = j["dsocr_vision"];
    const json* sam = v.contains("sam") ? &v["sam"] : nullptr;
    const json* enc = v.contains("encoder") ? &v["encoder"] : nullptr;
    auto& s = c.sam;
    const std::string sw = "dsocr_vision.sam.", ew = "dsocr_vision.encoder.";
    DSOCR_RETURN_IF_ERROR(read({sam}, "width", &s.width, sw));
    DSOCR_RETURN_IF_ERROR(read({sam}, "layers", &s.layers, sw));
    DSOCR_RETURN_IF_ERROR(read({sam}, "heads", &s.heads, sw));
    DSOCR_RETURN_IF_ERROR(read({sam}, "mlp_dim", &s.mlp_dim, sw));
    DSOCR_RETURN_IF_ERROR(read({sam}, "window_size", &s.window_size, sw));
    DSOCR_RETURN_IF_ERROR(read({sam}, "global_attn_indexes", &s.global_attn_indexes, sw));
    DSOCR_RETURN_IF_ERROR(read({sam}, "out_chans", &s.out_chans, sw));
    DSOCR_RETURN_IF_ERROR(read({sam}, "downsample_channels", &s.downsample_channels, sw));
    auto& e = c.encoder;
    DSOCR_RETURN_IF_ERROR(read({enc}, "hidden_size", &e.hidden_size, ew));
    DSOCR_RETURN_IF_ERROR(read({enc}, "layers", &e.layers, ew));
    DSOCR_RETURN_IF_ERROR(read({enc}, "heads", &e.heads, ew));
    DSOCR_RETURN_IF_ERROR(read({enc}, "kv_heads", &e.kv_heads, ew));
    DSOCR_RETURN_IF_ERROR(read({enc}, "intermediate_size", &e.intermediate_size, ew));
    DSOCR_RETURN_IF_ERROR(read({enc}, "rope_theta", &e.rope_theta, ew));
    DSOCR_RETURN_IF_ERROR(read({enc}, "rms_norm_eps", &e.rms_norm_eps, ew));
  }
  DSOCR_RETURN_IF_ERROR(c.validate());
  return c;
}

StatusOr<ModelConfig> ModelConfig::from_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) return not_found("cannot open " + path.string());
  json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return invalid_argument(path.string() + " is not valid JSON");
  auto c = from_json(j);
  if (!c.ok()) return c.status().with_context(path.string());
  return c;
}

Status ModelConfig::validate() const {
  const auto& l = language;
  for (auto [v, name] : std::initializer_list<std::pair<int64_t, const char*>>{
           {l.vocab_size, "vocab_size"},
           {l.hidden_size, "hidden_size"},
           {l.intermediate_size, "intermediate_size"},
           {l.moe_intermediate_size, "moe_intermediate_size"},
           {l.num_hidden_layers, "num_hidden_layers"},
           {l.num_attention_heads, "num_attention_heads"},
           {l.num_key_value_heads, "num_key_value_heads"},
           {l.num_experts_per_tok, "num_experts_per_tok"},
           {l.max_position_embeddings, "max_position_embeddings"}}) {
    DSOCR_RETURN_IF_ERROR(positive(v, name));
  }
  if (l.hidden_size % l.num_attention_heads != 0) {
    return invalid_argument("config.json: hidden_size (" + std::to_string(l.hidden_size) +
                            ") must be divisible by num_attention_heads (" +
                            std::to_string(l.num_attention_heads) + ")");
  }
  if (l.num_attention_heads % l.num_key_value_heads != 0) {
    return invalid_argument(
        "config.json: num_attention_heads must be a multiple of num_key_value_heads");
  }
  if (l.n_routed_experts < 0 || l.n_shared_experts < 0) {
    return invalid_argument(
        "config.json: n_routed_experts and n_shared_experts must not be negative");
  }
  if (l.first_k_dense_replace < 0 || l.first_k_dense_replace > l.num_hidden_layers) {
    return invalid_argument("config.json: first_k_dense_replace must be in 0..num_hidden_layers");
  }
  if (l.first_k_dense_replace < l.num_hidden_layers && l.num_experts_per_tok > l.n_routed_experts) {
    return invalid_argument("config.json: num_experts_per_tok (" +
                            std::to_string(l.num_experts_per_tok) + ") exceeds n_routed_experts (" +
                            std::to_string(l.n_routed_experts) + ")");
  }
  if (l.use_mla) return unimplemented("config.json: use_mla=true (MLA attention) is not supported");
  if (l.topk_method != "greedy")
    return unimplemented("config.json: topk_method '" + l.topk_method + "' is not supported");
  if (l.scoring_func != "softmax")
    return unimplemented("config.json: scoring_func '" + l.scoring_func + "' is not supported");
  if (l.n_group != 1 || l.topk_group != 1)
    return unimplemented("config.json: grouped expert routing (n_group > 1) is not supported");
  if (!(l.rms_norm_eps > 0) || !(l.rope_theta > 0))
    return invalid_argument("config.json: rms_norm_eps and rope_theta must be positive");
  if (l.bos_token_id < 0 || l.bos_token_id >= l.vocab_size || l.eos_token_id < 0 ||
      l.eos_token_id >= l.vocab_size) {
    return invalid_argument("config.json: bos_token_id/eos_token_id outside the vocabulary");
  }
  if (image_token_id < 0 || image_token_id >= l.vocab_size) {
    return invalid_argument("config.json: image_token_id outside the vocabulary");
  }
  const auto& s = sam;
  for (auto [v, name] : std::initializer_list<std::pair<int64_t, const char*>>{
           {s.width, "dsocr_vision.sam.width"},
           {s.layers, "dsocr_vision.sam.layers"},
           {s.heads, "dsocr_vision.sam.heads"},
           {s.mlp_dim, "dsocr_vision.sam.mlp_dim"},
           {s.window_size, "dsocr_vision.sam.window_size"},
           {s.out_chans, "dsocr_vision.sam.out_chans"},
           {encoder.hidden_size, "dsocr_vision.encoder.hidden_size"},
           {encoder.layers, "dsocr_vision.encoder.layers"},
           {encoder.heads, "dsocr_vision.encoder.heads"},
           {encoder.kv_heads, "dsocr_vision.encoder.kv_heads"},
           {encoder.intermediate_size, "dsocr_vision.encoder.intermediate_size"}}) {
    DSOCR_RETURN_IF_ERROR(positive(v, name));
  }
  if (s.width % s.heads != 0)
    return invalid_argument("config.json: dsocr_vision.sam.width must be divisible by heads");
  for (int64_t g : s.global_attn_indexes) {
    if (g < 0 || g >= s.layers)
      return invalid_argument(
          "config.json: dsocr_vision.sam.global_attn_indexes has a layer outside 0..layers-1");
  }
  if (s.downsample_channels.size() != 2)
    return invalid_argument(
        "config.json: dsocr_vision.sam.downsample_channels must have two entries");
  if (s.downsample_channels[1] != encoder.hidden_size) {
    return invalid_argument("config.json: dsocr_vision.sam.downsample_channels[1] (" +
                            std::to_string(s.downsample_channels[1]) +
                            ") must equal the encoder hidden_size (" +
                            std::to_string(encoder.hidden_size) + ")");
  }
  if (encoder.hidden_size % encoder.heads != 0 || encoder.heads % encoder.kv_heads != 0) {
    return invalid_argument(
        "config.json: dsocr_vision.encoder heads must divide hidden_size and be a multiple of "
        "kv_heads");
  }
  if (projector_input_dim != encoder.hidden_size || projector_output_dim != l.hidden_size) {
    return invalid_argument("config.json: projector_config must map the encoder hidden_size (" +
                            std::to_string(encoder.hidden_size) +
                            ") to the language hidden_size (" + std::to_string(l.hidden_size) +
                            ")");
  }
  return Status();
}

json ModelConfig::to_json() const {
  const auto& l = language;
  json lang = {{"bos_token_id", l.bos_token_id},
               {"eos_token_id", l.eos_token_id},
               {"first_k_dense_replace", l.first_k_dense_replace},
               {"hidden_size", l.hidden_size},
               {"intermediate_size", l.intermediate_size},
               {"kv_lora_rank", nullptr},
               {"lm_head", true},
               {"max_position_embeddings", l.max_position_embeddings},
               {"moe_intermediate_size", l.moe_intermediate_size},
               {"n_group", l.n_group},
               {"n_routed_experts", l.n_routed_experts},
               {"n_shared_experts", l.n_shared_experts},
               {"num_attention_heads", l.num_attention_heads},
               {"num_experts_per_tok", l.num_experts_per_tok},
               {"num_hidden_layers", l.num_hidden_layers},
               {"num_key_value_heads", l.num_key_value_heads},
               {"q_lora_rank", nullptr},
               {"qk_nope_head_dim", 0},
               {"qk_rope_head_dim", 0},
               {"rm_head", false},
               {"topk_group", l.topk_group},
               {"topk_method", l.topk_method},
               {"torch_dtype", torch_dtype},
               {"use_mla", l.use_mla},
               {"v_head_dim", 0},
               {"vocab_size", l.vocab_size}};
  json out = lang;
  out.erase("torch_dtype");
  out["_name_or_path"] = "deepseek-ai/DeepSeek-OCR-2";
  out["architectures"] = {"DeepseekOCR2ForCausalLM"};
  out["model_type"] = "deepseek_vl_v2";
  out["auto_map"] = {{"AutoConfig", "modeling_deepseekocr2.DeepseekOCR2Config"},
                     {"AutoModel", "modeling_deepseekocr2.DeepseekOCR2ForCausalLM"}};
  out["transformers_version"] = "4.46.3";
  out["candidate_resolutions"] = {{1024, 1024}};
  out["global_view_pos"] = "head";
  out["tile_tag"] = "2D";
  out["torch_dtype"] = torch_dtype;
  out["language_config"] = lang;
  out["language_config"]["architectures"] = {"DeepseekV2ForCausalLM"};
  out["projector_config"] = {{"input_dim", projector_input_dim},
                             {"model_type", "mlp_projector"},
                             {"n_embed", projector_output_dim},
                             {"projector_type", "linear"}};
  out["vision_config"] = {{"image_size", sam.image_size},
                          {"mlp_ratio", 3.7362},
                          {"model_name", "deepencoderv2"},
                          {"model_type", "vision"},
                          {"width",
                           {{"qwen2-0-5b", {{"dim", encoder.hidden_size}}},
                            {"sam_vit_b",
                             {{"downsample_channels", {512, 1024}},
                              {"global_attn_indexes", sam.global_attn_indexes},
                              {"heads", sam.heads},
                              {"layers", sam.layers},
                              {"width", sam.width}}}}}};
  out["dsocr_vision"] = {{"sam",
                          {{"width", sam.width},
                           {"layers", sam.layers},
                           {"heads", sam.heads},
                           {"mlp_dim", sam.mlp_dim},
                           {"window_size", sam.window_size},
                           {"global_attn_indexes", sam.global_attn_indexes},
                           {"out_chans", sam.out_chans},
                           {"downsample_channels", sam.downsample_channels}}},
                         {"encoder",
                          {{"hidden_size", encoder.hidden_size},
                           {"layers", encoder.layers},
                           {"heads", encoder.heads},
                           {"kv_heads", encoder.kv_heads},
                           {"intermediate_size", encoder.intermediate_size},
                           {"rope_theta", encoder.rope_theta},
                           {"rms_norm_eps", encoder.rms_norm_eps}}}};
  return out;
}

}  // namespace dsocr::weights

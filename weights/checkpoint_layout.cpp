#include "weights/checkpoint_layout.h"

#include <cmath>

namespace dsocr::weights {

std::vector<TensorSpec> deepseek_ocr2_tensors(const ModelConfig& c) {
  std::vector<TensorSpec> t;
  // Default scale: 1/sqrt(fan_in) for matrices and convolutions, 0.02 for vectors (biases).
  auto add = [&t](std::string name, std::vector<int64_t> shape, double std = 0.0) {
    if (std == 0.0) {
      int64_t fan_in = 1;
      for (size_t d = 1; d < shape.size(); ++d) fan_in *= shape[d];
      std = shape.size() >= 2 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.02;
    }
    t.push_back({std::move(name), std::move(shape), 0.0, std});
  };
  auto norm = [&](const std::string& prefix, int64_t dim, bool bias) {
    t.push_back({prefix + ".weight", {dim}, 1.0, 0.1});
    if (bias) add(prefix + ".bias", {dim});
  };

  // SAM ViT-B with neck and the two downsampling convolutions.
  const auto& s = c.sam;
  const std::string sam = "model.sam_model.";
  const int64_t grid = s.grid(), head_dim = s.width / s.heads;
  add(sam + "pos_embed", {1, grid, grid, s.width}, 0.1);
  add(sam + "patch_embed.proj.weight", {s.width, 3, s.patch_size, s.patch_size});
  add(sam + "patch_embed.proj.bias", {s.width});
  for (int64_t i = 0; i < s.layers; ++i) {
    const std::string b = sam + "blocks." + std::to_string(i) + ".";
    const int64_t rel = s.is_global(i) ? 2 * grid - 1 : 2 * s.window_size - 1;
    norm(b + "norm1", s.width, true);
    add(b + "attn.qkv.weight", {3 * s.width, s.width});
    add(b + "attn.qkv.bias", {3 * s.width});
    add(b + "attn.proj.weight", {s.width, s.width});
    add(b + "attn.proj.bias", {s.width});
    add(b + "attn.rel_pos_h", {rel, head_dim}, 0.1);
    add(b + "attn.rel_pos_w", {rel, head_dim}, 0.1);
    norm(b + "norm2", s.width, true);
    add(b + "mlp.lin1.weight", {s.mlp_dim, s.width});
    add(b + "mlp.lin1.bias", {s.mlp_dim});
    add(b + "mlp.lin2.weight", {s.width, s.mlp_dim});
    add(b + "mlp.lin2.bias", {s.width});
  }
  add(sam + "neck.0.weight", {s.out_chans, s.width, 1, 1});
  norm(sam + "neck.1", s.out_chans, true);
  add(sam + "neck.2.weight", {s.out_chans, s.out_chans, 3, 3});
  norm(sam + "neck.3", s.out_chans, true);
  add(sam + "net_2.weight", {s.downsample_channels[0], s.out_chans, 3, 3});
  add(sam + "net_3.weight", {s.downsample_channels[1], s.downsample_channels[0], 3, 3});

  // The Qwen2 decoder used as encoder, its learned queries, the projector and the separator.
  const auto& e = c.encoder;
  const std::string enc = "model.qwen2_model.model.model.";
  const int64_t kv_dim = e.kv_heads * e.head_dim();
  for (int64_t i = 0; i < e.layers; ++i) {
    const std::string b = enc + "layers." + std::to_string(i) + ".";
    norm(b + "input_layernorm", e.hidden_size, false);
    add(b + "self_attn.q_proj.weight", {e.hidden_size, e.hidden_size});
    add(b + "self_attn.q_proj.bias", {e.hidden_size});
    add(b + "self_attn.k_proj.weight", {kv_dim, e.hidden_size});
    add(b + "self_attn.k_proj.bias", {kv_dim});
    add(b + "self_attn.v_proj.weight", {kv_dim, e.hidden_size});
    add(b + "self_attn.v_proj.bias", {kv_dim});
    add(b + "self_attn.o_proj.weight", {e.hidden_size, e.hidden_size});
    norm(b + "post_attention_layernorm", e.hidden_size, false);
    add(b + "mlp.gate_proj.weight", {e.intermediate_size, e.hidden_size});
    add(b + "mlp.up_proj.weight", {e.intermediate_size, e.hidden_size});
    add(b + "mlp.down_proj.weight", {e.hidden_size, e.intermediate_size});
  }
  norm(enc + "norm", e.hidden_size, false);
  add("model.qwen2_model.query_768.weight", {ModelConfig::kQueries768, e.hidden_size}, 1.0);
  add("model.qwen2_model.query_1024.weight", {ModelConfig::kQueries1024, e.hidden_size}, 1.0);
  add("model.projector.layers.weight", {c.projector_output_dim, c.projector_input_dim});
  add("model.projector.layers.bias", {c.projector_output_dim});
  add("model.view_seperator", {c.projector_output_dim}, 1.0);

  // The DeepSeek MoE language model.
  const auto& l = c.language;
  const int64_t h = l.hidden_size, lkv = l.num_key_value_heads * l.head_dim();
  add("model.embed_tokens.weight", {l.vocab_size, h}, 1.0);
  for (int64_t i = 0; i < l.num_hidden_layers; ++i) {
    const std::string b = "model.layers." + std::to_string(i) + ".";
    norm(b + "input_layernorm", h, false);
    add(b + "self_attn.q_proj.weight", {h, h});
    add(b + "self_attn.k_proj.weight", {lkv, h});
    add(b + "self_attn.v_proj.weight", {lkv, h});
    add(b + "self_attn.o_proj.weight", {h, h});
    norm(b + "post_attention_layernorm", h, false);
    if (i < l.first_k_dense_replace) {
      add(b + "mlp.gate_proj.weight", {l.intermediate_size, h});
      add(b + "mlp.up_proj.weight", {l.intermediate_size, h});
      add(b + "mlp.down_proj.weight", {h, l.intermediate_size});
      continue;
    }
    add(b + "mlp.gate.weight", {l.n_routed_experts, h});
    for (int64_t x = 0; x < l.n_routed_experts; ++x) {
      const std::string ex = b + "mlp.experts." + std::to_string(x) + ".";
      add(ex + "gate_proj.weight", {l.moe_intermediate_size, h});
      add(ex + "up_proj.weight", {l.moe_intermediate_size, h});
      add(ex + "down_proj.weight", {h, l.moe_intermediate_size});
    }
    if (l.n_shared_experts > 0) {
      const int64_t shared = l.moe_intermediate_size * l.n_shared_experts;
      add(b + "mlp.shared_experts.gate_proj.weight", {shared, h});
      add(b + "mlp.shared_experts.up_proj.weight", {shared, h});
      add(b + "mlp.shared_experts.down_proj.weight", {h, shared});
    }
  }
  norm("model.norm", h, false);
  if (!l.tie_word_embeddings) add("lm_head.weight", {l.vocab_size, h});
  return t;
}

int64_t total_parameters(const std::vector<TensorSpec>& tensors) {
  int64_t n = 0;
  for (const auto& t : tensors) {
    int64_t p = 1;
    for (int64_t d : t.shape) p *= d;
    n += p;
  }
  return n;
}

}  // namespace dsocr::weights

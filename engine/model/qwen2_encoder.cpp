#include "engine/model/qwen2_encoder.h"

#include "common/check.h"
#include "engine/model/layers.h"
#include "engine/model/widened_scope.h"

namespace dsocr::model {

Qwen2EncoderLayerImpl::Qwen2EncoderLayerImpl(const weights::EncoderConfig& config)
    : config_(config) {
  const int64_t d = config.hidden_size, hd = config.head_dim();
  auto self_attn = register_module("self_attn", std::make_shared<torch::nn::Module>());
  q_proj_ = self_attn->register_module("q_proj", torch::nn::Linear(d, config.heads * hd));
  k_proj_ = self_attn->register_module("k_proj", torch::nn::Linear(d, config.kv_heads * hd));
  v_proj_ = self_attn->register_module("v_proj", torch::nn::Linear(d, config.kv_heads * hd));
  o_proj_ = self_attn->register_module(
      "o_proj", torch::nn::Linear(torch::nn::LinearOptions(config.heads * hd, d).bias(false)));
  auto mlp = register_module("mlp", std::make_shared<torch::nn::Module>());
  auto no_bias = [](int64_t in, int64_t out) {
    return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
  };
  gate_proj_ = mlp->register_module("gate_proj", no_bias(d, config.intermediate_size));
  up_proj_ = mlp->register_module("up_proj", no_bias(d, config.intermediate_size));
  down_proj_ = mlp->register_module("down_proj", no_bias(config.intermediate_size, d));
  auto norm = [&](const char* name) {
    auto holder = register_module(name, std::make_shared<torch::nn::Module>());
    return holder->register_parameter("weight", at::ones({d}));
  };
  input_layernorm_ = norm("input_layernorm");
  post_attention_layernorm_ = norm("post_attention_layernorm");
}

at::Tensor Qwen2EncoderLayerImpl::forward(const at::Tensor& x, const at::Tensor& mask,
                                          const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t b = x.size(0), l = x.size(1), hd = config_.head_dim();
  at::Tensor y = rms_norm(x, input_layernorm_, config_.rms_norm_eps);
  at::Tensor q = q_proj_->forward(y).view({b, l, config_.heads, hd}).transpose(1, 2);
  at::Tensor k = k_proj_->forward(y).view({b, l, config_.kv_heads, hd}).transpose(1, 2);
  at::Tensor v = v_proj_->forward(y).view({b, l, config_.kv_heads, hd}).transpose(1, 2);
  q = apply_rope(q, cos, sin);
  k = apply_rope(k, cos, sin);
  const int64_t groups = config_.heads / config_.kv_heads;  // head h reads kv head h / groups
  if (groups > 1) {
    k = k.repeat_interleave(groups, 1);
    v = v.repeat_interleave(groups, 1);
  }
  at::Tensor attn = at::scaled_dot_product_attention(q, k, v, mask);
  at::Tensor h = x + o_proj_->forward(attn.transpose(1, 2).reshape({b, l, config_.heads * hd}));
  at::Tensor u = rms_norm(h, post_attention_layernorm_, config_.rms_norm_eps);
  return h + down_proj_->forward(at::silu(gate_proj_->forward(u)) * up_proj_->forward(u));
}

Qwen2EncoderImpl::Qwen2EncoderImpl(const weights::EncoderConfig& config) : config_(config) {
  // The checkpoint nests the stack as model.model.{layers, norm} (wrapper -> decoder ->
  // Qwen2Model).
  auto outer = register_module("model", std::make_shared<torch::nn::Module>());
  auto stack = outer->register_module("model", std::make_shared<torch::nn::Module>());
  auto layers = stack->register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.layers; ++i) {
    Qwen2EncoderLayer layer(config);
    layers->push_back(layer);
    layers_.push_back(layer);
  }
  auto norm = stack->register_module("norm", std::make_shared<torch::nn::Module>());
  norm_ = norm->register_parameter("weight", at::ones({config.hidden_size}));
  query_768_ = register_module("query_768", torch::nn::Embedding(144, config.hidden_size));
  query_1024_ = register_module("query_1024", torch::nn::Embedding(256, config.hidden_size));
}

at::Tensor prefix_lm_mask(int64_t n, at::Device device) {
  auto opts = at::TensorOptions().device(device);
  at::Tensor row = at::arange(2 * n, opts.dtype(at::kLong)).unsqueeze(1);
  at::Tensor col = at::arange(2 * n, opts.dtype(at::kLong)).unsqueeze(0);
  // Visual rows see the visual block; query rows see it plus earlier queries and themselves.
  return (col < n) | ((row >= n) & (col <= row));
}

at::Tensor Qwen2EncoderImpl::forward(const at::Tensor& sam_features) {
  const int64_t b = sam_features.size(0);
  at::Tensor x = sam_features.flatten(2).transpose(1, 2);  // [B, n, D], raster order
  const int64_t n = x.size(1);
  DSOCR_CHECK(n == 144 || n == 256) << "no query bank for " << n << " visual tokens";
  at::Tensor queries = (n == 144 ? query_768_ : query_1024_)->weight;
  x = at::cat({x, queries.unsqueeze(0).expand({b, n, queries.size(1)})}, 1);
  at::Tensor positions = at::arange(2 * n, at::TensorOptions().dtype(at::kLong).device(x.device()));
  auto [cos, sin] =
      rope_cos_sin(positions, config_.head_dim(), config_.rope_theta, x.scalar_type());
  at::Tensor mask = prefix_lm_mask(n, x.device());
  for (auto& layer : layers_) {
    const WidenedScope wide(*layer, x.scalar_type());  // narrow-kept weights (vision_model.h)
    x = layer->forward(x, mask, cos, sin);
  }
  x = rms_norm(x, norm_, config_.rms_norm_eps);
  return x.slice(1, n).contiguous();
}

}  // namespace dsocr::model

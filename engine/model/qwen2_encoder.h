// DeepEncoder V2 (spec §6): a Qwen2 decoder stack used as an encoder over
// [visual tokens | learned queries] with a prefix-LM mask; only the query half comes out.
// [B, C, h, w] SAM features (h*w = 144 or 256) -> [B, h*w, hidden].
//
// Parameter names follow the checkpoint under "model.qwen2_model.": model.model.layers.{i}.*,
// model.model.norm.weight, query_768.weight, query_1024.weight.
//
// Thread-safety: forward() may run concurrently.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include "weights/model_config.h"

namespace dsocr::model {

class Qwen2EncoderLayerImpl : public torch::nn::Module {
 public:
  explicit Qwen2EncoderLayerImpl(const weights::EncoderConfig& config);
  // x: [B, L, D]; mask: [L, L] bool (true = may attend); cos/sin: [L, head_dim].
  at::Tensor forward(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& cos,
                     const at::Tensor& sin);

 private:
  weights::EncoderConfig config_;
  at::Tensor input_layernorm_, post_attention_layernorm_;
  torch::nn::Linear q_proj_{nullptr}, k_proj_{nullptr}, v_proj_{nullptr}, o_proj_{nullptr};
  torch::nn::Linear gate_proj_{nullptr}, up_proj_{nullptr}, down_proj_{nullptr};
};
TORCH_MODULE(Qwen2EncoderLayer);

class Qwen2EncoderImpl : public torch::nn::Module {
 public:
  explicit Qwen2EncoderImpl(const weights::EncoderConfig& config);
  at::Tensor forward(const at::Tensor& sam_features);

 private:
  weights::EncoderConfig config_;
  std::vector<Qwen2EncoderLayer> layers_;
  at::Tensor norm_;
  torch::nn::Embedding query_768_{nullptr}, query_1024_{nullptr};
};
TORCH_MODULE(Qwen2Encoder);

// The prefix-LM mask of spec §6.5 for n visual tokens and n queries: [2n, 2n], true = attend.
at::Tensor prefix_lm_mask(int64_t n, at::Device device);

}  // namespace dsocr::model

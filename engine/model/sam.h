// SAM ViT-B image encoder with DeepSeek-OCR-2's neck and two stride-2 convolutions (spec §5):
// [B, 3, S, S] pixels (S = 1024 or 768) -> [B, C_out, S/64, S/64] features (896 channels in the
// real model). Submodules and parameters carry the checkpoint's names under "model.sam_model.",
// so weights::load_module() loads them strictly.
//
// Input-independent tensors (the absolute position embedding resized to the 768-pixel grid, the
// relative-position tables gathered per grid size) are derived from the weights once, by
// prepare() after loading, in float32 as the spec requires, and cast to the model dtype.
//
// Thread-safety: forward() is const in effect and may run concurrently after prepare().
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <map>

#include "weights/model_config.h"

namespace dsocr::model {

// LayerNorm over the channel axis of an NCHW tensor (SAM's LayerNorm2d).
class LayerNorm2dImpl : public torch::nn::Module {
 public:
  LayerNorm2dImpl(int64_t channels, double eps);
  at::Tensor forward(const at::Tensor& x);

 private:
  at::Tensor weight_, bias_;
  double eps_;
};
TORCH_MODULE(LayerNorm2d);

class SamAttentionImpl : public torch::nn::Module {
 public:
  // `grid` is the side of the token grid the attention sees at 1024 input: the window size for
  // windowed blocks, the full grid for global ones; it sizes the rel-pos tables.
  SamAttentionImpl(const weights::SamConfig& config, int64_t grid);
  // x: [B, h, w, C] -> [B, h, w, C].
  at::Tensor forward(const at::Tensor& x);
  // Gathers the decomposed rel-pos tables for a square grid of side `side` (float32 resize of the
  // stored tables when their length differs, spec §5.4), in `dtype`.
  void prepare(int64_t side, at::ScalarType dtype);
  // Views (and bands of query rows of one view) attended per SDPA call are capped so that their
  // relative-position bias stays under this many bytes (one grid row at least); a setting for
  // tests.
  void set_max_bias_bytes(int64_t bytes) { max_bias_bytes_ = bytes; }
  // How the relative-position bias reaches attention: kAuto folds it into the dot products on
  // CUDA (no [views, heads, hw, hw] bias, so SDPA may take its flash kernel) and materialises it
  // on the CPU; tests force either.
  enum class BiasMode { kAuto, kMaterialised, kInDotProduct };
  void set_bias_mode(BiasMode mode) { bias_mode_ = mode; }

 private:
  // The bias folded into the dot products: each query carries its rel_h and rel_w rows, each key
  // one-hot marks of its grid row and column, so q'.k' = scale * q.k + rel_h[q, row(k)] +
  // rel_w[q, col(k)] exactly (the marks are 0 or 1).
  at::Tensor attend_bias_in_dot_product(const at::Tensor& q, const at::Tensor& k,
                                        const at::Tensor& v, const at::Tensor& rel_h,
                                        const at::Tensor& rel_w, int64_t h, int64_t w) const;

  int64_t heads_;
  BiasMode bias_mode_ = BiasMode::kAuto;
  int64_t max_bias_bytes_ = int64_t{256} << 20;  // measured: 2.9-3.9 -> 2.7 s per small page
  torch::nn::Linear qkv_{nullptr}, proj_{nullptr};
  at::Tensor rel_pos_h_, rel_pos_w_;
  std::map<int64_t, std::pair<at::Tensor, at::Tensor>> rel_tables_;  // side -> (R_h, R_w)
};
TORCH_MODULE(SamAttention);

class SamMlpImpl : public torch::nn::Module {
 public:
  SamMlpImpl(int64_t width, int64_t hidden);
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::Linear lin1_{nullptr}, lin2_{nullptr};
};
TORCH_MODULE(SamMlp);

class SamBlockImpl : public torch::nn::Module {
 public:
  SamBlockImpl(const weights::SamConfig& config, int64_t window_size);
  at::Tensor forward(const at::Tensor& x);  // [B, G, G, C]
  void prepare(int64_t grid, at::ScalarType dtype);

 private:
  int64_t window_size_;  // 0 = global attention
  torch::nn::LayerNorm norm1_{nullptr}, norm2_{nullptr};
  SamAttention attn_{nullptr};
  SamMlp mlp_{nullptr};
};
TORCH_MODULE(SamBlock);

class SamEncoderImpl : public torch::nn::Module {
 public:
  explicit SamEncoderImpl(const weights::SamConfig& config);
  // pixels: [B, 3, S, S], S a multiple of 16*4 -> [B, C_out, S/64, S/64].
  at::Tensor forward(const at::Tensor& pixels);
  // Derives the per-input-size tensors for the 1024 and 768 views. Call after loading weights.
  void prepare();

 private:
  weights::SamConfig config_;
  torch::nn::Conv2d patch_proj_{nullptr};
  at::Tensor pos_embed_;
  std::map<int64_t, at::Tensor> pos_embed_by_grid_;
  torch::nn::ModuleList blocks_;
  std::vector<SamBlock> block_list_;
  torch::nn::Conv2d neck_conv1_{nullptr}, neck_conv2_{nullptr};
  LayerNorm2d neck_norm1_{nullptr}, neck_norm2_{nullptr};
  torch::nn::Conv2d net_2_{nullptr}, net_3_{nullptr};
};
TORCH_MODULE(SamEncoder);

}  // namespace dsocr::model

#include "engine/model/sam.h"

#include <torch/nn/functional/padding.h>
#include <torch/nn/functional/upsampling.h>
#include <torch/nn/modules/container/sequential.h>

#include <algorithm>
#include <cmath>

#include "common/check.h"
#include "engine/model/widened_scope.h"

namespace dsocr::model {

namespace F = torch::nn::functional;

LayerNorm2dImpl::LayerNorm2dImpl(int64_t channels, double eps) : eps_(eps) {
  weight_ = register_parameter("weight", at::ones({channels}));
  bias_ = register_parameter("bias", at::zeros({channels}));
}

at::Tensor LayerNorm2dImpl::forward(const at::Tensor& x) {
  return at::layer_norm(x.permute({0, 2, 3, 1}), {weight_.size(0)}, weight_, bias_, eps_)
      .permute({0, 3, 1, 2});
}

SamAttentionImpl::SamAttentionImpl(const weights::SamConfig& config, int64_t grid)
    : heads_(config.heads) {
  const int64_t head_dim = config.width / config.heads;
  qkv_ = register_module("qkv", torch::nn::Linear(config.width, 3 * config.width));
  proj_ = register_module("proj", torch::nn::Linear(config.width, config.width));
  rel_pos_h_ = register_parameter("rel_pos_h", at::zeros({2 * grid - 1, head_dim}));
  rel_pos_w_ = register_parameter("rel_pos_w", at::zeros({2 * grid - 1, head_dim}));
}

namespace {

// R[q, k] = table[q - k + side - 1] after resizing the table to 2 * side - 1 rows.
at::Tensor gather_rel_table(const at::Tensor& table, int64_t side, at::ScalarType dtype) {
  const int64_t length = 2 * side - 1;
  at::Tensor resized = table;
  if (table.size(0) != length) {
    resized = F::interpolate(table.to(at::kFloat).t().unsqueeze(0),
                             F::InterpolateFuncOptions()
                                 .size(std::vector<int64_t>{length})
                                 .mode(torch::kLinear)
                                 .align_corners(false))
                  .squeeze(0)
                  .t();  // float32 until the final cast (a table kept bfloat16 under float32
                         // compute must give what its float32 widening gives)
  }
  at::Tensor coords = at::arange(side).unsqueeze(1) - at::arange(side).unsqueeze(0) + (side - 1);
  return resized.index_select(0, coords.reshape(-1).to(resized.device()))
      .reshape({side, side, -1})
      .to(dtype)
      .contiguous();
}

}  // namespace

void SamAttentionImpl::prepare(int64_t side, at::ScalarType dtype) {
  rel_tables_[side] = {gather_rel_table(rel_pos_h_, side, dtype),
                       gather_rel_table(rel_pos_w_, side, dtype)};
}

at::Tensor SamAttentionImpl::attend_bias_in_dot_product(const at::Tensor& q, const at::Tensor& k,
                                                        const at::Tensor& v,
                                                        const at::Tensor& rel_h,
                                                        const at::Tensor& rel_w, int64_t h,
                                                        int64_t w) const {
  // q, k, v: [B, heads, hw, hd]; rel_h: [B * heads, h, w, h], rel_w: [B * heads, h, w, w].
  const int64_t b = q.size(0), hw = h * w, head_dim = q.size(3);
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  // Widths padded to a multiple of 8 (the fused kernels' granularity); padding is zeros.
  const int64_t width = head_dim + h + w;
  const int64_t padded = (width + 7) / 8 * 8;
  const auto opts = q.options();
  at::Tensor q_aug = at::zeros({b, heads_, hw, padded}, opts);
  q_aug.slice(3, 0, head_dim).copy_(q * scale);
  q_aug.slice(3, head_dim, head_dim + h).copy_(rel_h.reshape({b, heads_, hw, h}));
  q_aug.slice(3, head_dim + h, width).copy_(rel_w.reshape({b, heads_, hw, w}));
  // Key j of the grid sits at row j / w and column j % w.
  const at::Tensor index = at::arange(hw, opts.dtype(at::kLong));
  at::Tensor marks = at::zeros({hw, padded - head_dim}, opts);
  marks.scatter_(1, index.div(w, "floor").unsqueeze(1), 1.0);
  marks.scatter_(1, index.remainder(w).unsqueeze(1) + h, 1.0);
  at::Tensor k_aug = at::empty({b, heads_, hw, padded}, opts);
  k_aug.slice(3, 0, head_dim).copy_(k);
  k_aug.slice(3, head_dim, padded).copy_(marks.expand({b, heads_, hw, padded - head_dim}));
  at::Tensor v_aug = at::zeros({b, heads_, hw, padded}, opts);
  v_aug.slice(3, 0, head_dim).copy_(v);
  return at::scaled_dot_product_attention(q_aug, k_aug, v_aug, {}, 0.0, false, 1.0)
      .slice(3, 0, head_dim);
}

at::Tensor SamAttentionImpl::forward(const at::Tensor& x) {
  const int64_t b = x.size(0), h = x.size(1), w = x.size(2), c = x.size(3);
  const bool in_dot_product =
      bias_mode_ == BiasMode::kInDotProduct || (bias_mode_ == BiasMode::kAuto && x.is_cuda());
  // The relative-position bias goes to SDPA materialised, [views, heads, hw, hw]: for the global
  // blocks over six 768 tiles that is ~1.5 GB at full size. A few views at a time (and bands of
  // query rows of one view, below) keep it under max_bias_bytes_, so the buffers stay small enough
  // to be reused from the allocator's cache instead of being mapped (and page-faulted) anew each
  // block, and a page's activations stay bounded (issue #21). Views are independent.
  if (!in_dot_product) {
    const int64_t bias_bytes =
        std::max<int64_t>(1, heads_ * (h * w) * (h * w) * x.element_size());
    const int64_t views_per_call = std::max<int64_t>(1, max_bias_bytes_ / bias_bytes);
    if (b > views_per_call) {
      std::vector<at::Tensor> parts;
      for (int64_t v = 0; v < b; v += views_per_call)
        parts.push_back(forward(x.slice(0, v, std::min(b, v + views_per_call))));
      return at::cat(parts, 0);
    }
  }
  const int64_t head_dim = c / heads_;
  auto it = rel_tables_.find(h);
  DSOCR_CHECK(it != rel_tables_.end() && h == w) << "SAM attention not prepared for grid " << h;
  // [B, hw, 3, heads, hd] -> 3 x [B, heads, hw, hd]
  at::Tensor qkv =
      qkv_->forward(x).reshape({b, h * w, 3, heads_, head_dim}).permute({2, 0, 3, 1, 4});
  at::Tensor q = qkv[0], k = qkv[1], v = qkv[2];
  // Decomposed relative position bias from the unscaled queries (spec §5.4), for query grid rows
  // [r0, r1).
  at::Tensor q_grid = q.reshape({b * heads_, h, w, head_dim});
  auto rel_rows = [&](int64_t r0, int64_t r1) {
    const at::Tensor q_band = q_grid.slice(1, r0, r1);
    return std::make_pair(
        at::einsum("bhwc,hkc->bhwk", {q_band, it->second.first.slice(0, r0, r1)}),
        at::einsum("bhwc,wkc->bhwk", {q_band, it->second.second}));
  };
  at::Tensor out;
  if (in_dot_product) {
    const auto [rel_h, rel_w] = rel_rows(0, h);
    out = attend_bias_in_dot_product(q, k, v, rel_h, rel_w, h, w);
  } else {
    // Rows of queries are independent, so one view too large for max_bias_bytes_ (the global
    // view at 1024: 4,096 tokens, an 805 MB bias) is attended a band of rows at a time.
    auto attend_rows = [&](int64_t r0, int64_t r1) {
      const auto [rel_h, rel_w] = rel_rows(r0, r1);
      at::Tensor bias =
          (rel_h.unsqueeze(-1) + rel_w.unsqueeze(-2)).reshape({b, heads_, (r1 - r0) * w, h * w});
      return at::scaled_dot_product_attention(q.slice(2, r0 * w, r1 * w), k, v, bias);
    };
    const int64_t band_bytes = b * heads_ * w * (h * w) * x.element_size();  // one grid row
    const int64_t rows_per_call = std::clamp<int64_t>(max_bias_bytes_ / band_bytes, 1, h);
    if (rows_per_call >= h) {
      out = attend_rows(0, h);
    } else {
      std::vector<at::Tensor> bands;
      for (int64_t r0 = 0; r0 < h; r0 += rows_per_call)
        bands.push_back(attend_rows(r0, std::min(h, r0 + rows_per_call)));
      out = at::cat(bands, 2);
    }
  }
  out = out.reshape({b, heads_, h, w, head_dim}).permute({0, 2, 3, 1, 4}).reshape({b, h, w, c});
  return proj_->forward(out);
}

SamMlpImpl::SamMlpImpl(int64_t width, int64_t hidden) {
  lin1_ = register_module("lin1", torch::nn::Linear(width, hidden));
  lin2_ = register_module("lin2", torch::nn::Linear(hidden, width));
}

at::Tensor SamMlpImpl::forward(const at::Tensor& x) {
  return lin2_->forward(at::gelu(lin1_->forward(x)));
}

SamBlockImpl::SamBlockImpl(const weights::SamConfig& config, int64_t window_size)
    : window_size_(window_size) {
  auto norm = [&] {
    return torch::nn::LayerNorm(
        torch::nn::LayerNormOptions({config.width}).eps(config.layer_norm_eps));
  };
  norm1_ = register_module("norm1", norm());
  attn_ =
      register_module("attn", SamAttention(config, window_size > 0 ? window_size : config.grid()));
  norm2_ = register_module("norm2", norm());
  mlp_ = register_module("mlp", SamMlp(config.width, config.mlp_dim));
}

void SamBlockImpl::prepare(int64_t grid, at::ScalarType dtype) {
  attn_->prepare(window_size_ > 0 ? window_size_ : grid, dtype);
}

at::Tensor SamBlockImpl::forward(const at::Tensor& x) {
  at::Tensor y = norm1_->forward(x);
  if (window_size_ > 0) {
    const int64_t b = y.size(0), h = y.size(1), w = y.size(2), c = y.size(3), ws = window_size_;
    const int64_t pad_h = (ws - h % ws) % ws, pad_w = (ws - w % ws) % ws;
    // Zero padding after the norm: padded tokens join the windows as keys (spec §5.3).
    if (pad_h > 0 || pad_w > 0) y = F::pad(y, F::PadFuncOptions({0, 0, 0, pad_w, 0, pad_h}));
    const int64_t hp = h + pad_h, wp = w + pad_w;
    y = y.view({b, hp / ws, ws, wp / ws, ws, c})
            .permute({0, 1, 3, 2, 4, 5})
            .reshape({-1, ws, ws, c});
    y = attn_->forward(y);
    y = y.view({b, hp / ws, wp / ws, ws, ws, c})
            .permute({0, 1, 3, 2, 4, 5})
            .reshape({b, hp, wp, c});
    if (pad_h > 0 || pad_w > 0) y = y.slice(1, 0, h).slice(2, 0, w);
  } else {
    y = attn_->forward(y);
  }
  at::Tensor out = x + y;
  return out + mlp_->forward(norm2_->forward(out));
}

SamEncoderImpl::SamEncoderImpl(const weights::SamConfig& config) : config_(config) {
  auto patch_embed = register_module("patch_embed", std::make_shared<torch::nn::Module>());
  patch_proj_ = patch_embed->register_module(
      "proj",
      torch::nn::Conv2d(
          torch::nn::Conv2dOptions(3, config.width, config.patch_size).stride(config.patch_size)));
  pos_embed_ =
      register_parameter("pos_embed", at::zeros({1, config.grid(), config.grid(), config.width}));
  blocks_ = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.layers; ++i) {
    SamBlock block(config, config.is_global(i) ? 0 : config.window_size);
    blocks_->push_back(block);
    block_list_.push_back(block);
  }
  auto neck = register_module("neck", torch::nn::Sequential());
  neck_conv1_ =
      torch::nn::Conv2d(torch::nn::Conv2dOptions(config.width, config.out_chans, 1).bias(false));
  neck_norm1_ = LayerNorm2d(config.out_chans, 1e-6);
  neck_conv2_ = torch::nn::Conv2d(
      torch::nn::Conv2dOptions(config.out_chans, config.out_chans, 3).padding(1).bias(false));
  neck_norm2_ = LayerNorm2d(config.out_chans, 1e-6);
  neck->push_back(neck_conv1_);
  neck->push_back(neck_norm1_);
  neck->push_back(neck_conv2_);
  neck->push_back(neck_norm2_);
  const int64_t c2 = config.downsample_channels.at(0), c3 = config.downsample_channels.at(1);
  net_2_ = register_module(
      "net_2",
      torch::nn::Conv2d(
          torch::nn::Conv2dOptions(config.out_chans, c2, 3).stride(2).padding(1).bias(false)));
  net_3_ = register_module(
      "net_3",
      torch::nn::Conv2d(torch::nn::Conv2dOptions(c2, c3, 3).stride(2).padding(1).bias(false)));
}

void SamEncoderImpl::prepare() {
  const at::ScalarType dtype = pos_embed_.scalar_type();
  pos_embed_by_grid_.clear();
  for (int64_t view : {int64_t{1024}, int64_t{768}}) {
    const int64_t grid = view / config_.patch_size;
    at::Tensor pos = pos_embed_;
    if (grid != pos_embed_.size(1)) {
      // Bicubic, antialiased, in float32 (spec §5.2); input-independent, so computed once.
      pos = F::interpolate(pos_embed_.permute({0, 3, 1, 2}).to(at::kFloat),
                           F::InterpolateFuncOptions()
                               .size(std::vector<int64_t>{grid, grid})
                               .mode(torch::kBicubic)
                               .align_corners(false)
                               .antialias(true))
                .to(dtype)
                .permute({0, 2, 3, 1})
                .contiguous();
    }
    pos_embed_by_grid_[grid] = pos;
    for (auto& block : block_list_) block->prepare(grid, dtype);
  }
}

at::Tensor SamEncoderImpl::forward(const at::Tensor& pixels) {
  at::Tensor x = patch_proj_->forward(pixels).permute({0, 2, 3, 1});
  auto it = pos_embed_by_grid_.find(x.size(1));
  DSOCR_CHECK(it != pos_embed_by_grid_.end()) << "SAM not prepared for a " << x.size(1) << " grid";
  x = x + it->second;
  for (auto& block : block_list_) {
    const WidenedScope wide(*block, x.scalar_type());  // narrow-kept weights (vision_model.h)
    x = block->forward(x);
  }
  x = x.permute({0, 3, 1, 2});
  x = neck_norm2_->forward(neck_conv2_->forward(neck_norm1_->forward(neck_conv1_->forward(x))));
  return net_3_->forward(net_2_->forward(x));
}

}  // namespace dsocr::model

#include "engine/model/vision_model.h"

#include <torch/nn/modules/container/any.h>

#include "common/check.h"
#include "weights/loader.h"

namespace dsocr::model {

VisionModelImpl::VisionModelImpl(const weights::ModelConfig& config) : config_(config) {
  sam_model_ = register_module("sam_model", SamEncoder(config.sam));
  qwen2_model_ = register_module("qwen2_model", Qwen2Encoder(config.encoder));
  auto projector = register_module("projector", std::make_shared<torch::nn::Module>());
  projector_ = projector->register_module(
      "layers", torch::nn::Linear(config.projector_input_dim, config.projector_output_dim));
  view_seperator_ = register_parameter("view_seperator", at::zeros({config.projector_output_dim}));
}

bool VisionModelImpl::is_block_tensor(std::string_view name) {
  return name.rfind("model.sam_model.blocks.", 0) == 0 ||
         name.rfind("model.qwen2_model.model.model.layers.", 0) == 0;
}

Status VisionModelImpl::load(const weights::StateDict& weights, at::ScalarType dtype,
                             at::Device device, bool keep_blocks_narrow) {
  weights::LoadOptions options;
  options.prefix = "model.";
  options.dtype = dtype;
  options.device = device;
  options.allow_unexpected = true;  // the language model's tensors share the "model." prefix
  options.discard_initial_values = true;
  if (keep_blocks_narrow) {
    // Only tensors narrower than the compute dtype stay as stored (a float32 checkpoint's are
    // the compute dtype already).
    options.keep_checkpoint_dtype = [&weights, dtype](const std::string& name) {
      const weights::TensorInfo* info = weights.info(name);
      return is_block_tensor(name) && info != nullptr && info->dtype == weights::DType::kBF16 &&
             dtype == at::kFloat;
    };
  }
  DSOCR_RETURN_IF_ERROR(weights::load_module(*this, weights, options));
  narrow_blocks_ = keep_blocks_narrow && dtype == at::kFloat;
  eval();
  sam_model_->prepare();
  return Status();
}

std::vector<at::Tensor> VisionModelImpl::encode(const PixelBatch& batch, VisionTaps* taps) {
  at::NoGradGuard no_grad;
  std::unique_lock<std::mutex> turn(encode_mu_, std::defer_lock);
  if (narrow_blocks_) turn.lock();
  const int64_t n = batch.global_views.size(0);
  DSOCR_CHECK_EQ(static_cast<int64_t>(batch.tiles_per_image.size()), n);

  auto run = [&](const at::Tensor& pixels, at::Tensor* sam_tap, at::Tensor* enc_tap,
                 at::Tensor* proj_tap) {
    at::Tensor sam = sam_model_->forward(pixels);
    at::Tensor enc = qwen2_model_->forward(sam);
    at::Tensor proj = projector_->forward(enc);
    if (taps) {
      *sam_tap = sam;
      *enc_tap = enc;
      *proj_tap = proj;
    }
    return proj;
  };
  VisionTaps unused;
  VisionTaps& t = taps ? *taps : unused;
  at::Tensor global =
      run(batch.global_views, &t.sam_global, &t.encoder_global, &t.projector_global);
  at::Tensor tiles;
  if (batch.tiles.defined() && batch.tiles.size(0) > 0)
    tiles = run(batch.tiles, &t.sam_tiles, &t.encoder_tiles, &t.projector_tiles);

  std::vector<at::Tensor> blocks;
  blocks.reserve(n);
  at::Tensor separator = view_seperator_.unsqueeze(0);
  int64_t tile_begin = 0;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<at::Tensor> parts;
    const int64_t count = batch.tiles_per_image[i];
    if (count > 0) {
      parts.push_back(tiles.slice(0, tile_begin, tile_begin + count).reshape({-1, tiles.size(-1)}));
      tile_begin += count;
    }
    parts.push_back(global[i]);
    parts.push_back(separator);
    blocks.push_back(at::cat(parts, 0));
  }
  return blocks;
}

}  // namespace dsocr::model

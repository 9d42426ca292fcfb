// VisionModel: SAM -> Qwen2 encoder -> linear projector, and the per-image embedding block
// [tile_0 .. tile_{P-1} (144 rows each), global (256 rows), view_seperator (1 row)] (spec §7)
// that replaces an image's <image> placeholder rows in the language model's input.
//
// One encode() call runs every tile of every image as one batch and every global view as another
// (each view is independent, so a batch of N gives exactly N single runs' rows).
//
// Parameters are named as in the checkpoint under "model." (sam_model.*, qwen2_model.*,
// projector.layers.*, view_seperator); load() checks every one of them is present with its shape.
//
// With `keep_blocks_narrow` (the CPU's narrow --weights), the SAM blocks' and Qwen2 layers'
// tensors stay as a bfloat16 checkpoint stores them (views of the file) and each block is widened
// to the compute dtype while it runs (widened_scope.h): half the memory, the same results.
//
// Thread-safety: encode() may run concurrently after load(); with narrow blocks the calls take
// turns (widening swaps the blocks' parameters).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

#include <mutex>
#include <optional>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "engine/model/pixel_values.h"
#include "engine/model/qwen2_encoder.h"
#include "engine/model/sam.h"
#include "weights/model_config.h"
#include "weights/safetensors.h"

namespace dsocr::model {

// Intermediate results, filled when asked for (parity tests, `dsocr encode`).
struct VisionTaps {
  at::Tensor sam_global, sam_tiles;              // [N, C, 16, 16], [T, C, 12, 12]
  at::Tensor encoder_global, encoder_tiles;      // [N, 256, D], [T, 144, D]
  at::Tensor projector_global, projector_tiles;  // [N, 256, H], [T, 144, H]
};

class VisionModelImpl : public torch::nn::Module {
 public:
  explicit VisionModelImpl(const weights::ModelConfig& config);

  // Strict load of the vision tensors (prefix "model."), converted to dtype/device, then the
  // input-independent tables are derived. Language-model tensors in the same file are ignored.
  Status load(const weights::StateDict& weights, at::ScalarType dtype, at::Device device,
              bool keep_blocks_narrow = false);
  // Whether checkpoint tensor `name` belongs to a block kept narrow by load().
  static bool is_block_tensor(std::string_view name);

  // One embedding block per image, [image_tokens, hidden] each, in the model dtype.
  std::vector<at::Tensor> encode(const PixelBatch& batch, VisionTaps* taps = nullptr);

  at::ScalarType dtype() const { return view_seperator_.scalar_type(); }
  at::Device device() const { return view_seperator_.device(); }

 private:
  weights::ModelConfig config_;
  SamEncoder sam_model_{nullptr};
  Qwen2Encoder qwen2_model_{nullptr};
  torch::nn::Linear projector_{nullptr};
  at::Tensor view_seperator_;
  bool narrow_blocks_ = false;
  std::mutex encode_mu_;  // taken by encode() when narrow_blocks_
};
TORCH_MODULE(VisionModel);

}  // namespace dsocr::model

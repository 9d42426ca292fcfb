// PixelBatch: the model input for one vision step: every image's global view stacked into one
// [N, 3, 1024, 1024] tensor and every image's tiles into one [T, 3, 768, 768] tensor, so that
// the encoder runs two batched passes whatever the number of images.
//
// Normalisation is torchvision's ToTensor + Normalize(0.5, 0.5) in float32, bit for bit
// ((p / 255 - 0.5) / 0.5, spec §4.5), then a cast to the model dtype.
//
// Thread-safety: pure functions.
#pragma once

#include <ATen/ATen.h>

#include <span>
#include <vector>

#include "vision/preprocess.h"

namespace dsocr::model {

struct PixelBatch {
  at::Tensor global_views;           // [N, 3, 1024, 1024]
  at::Tensor tiles;                  // [T, 3, 768, 768]; undefined when T == 0
  std::vector<int> tiles_per_image;  // N entries, summing to T
};

// One [3, H, W] float32 tensor of a uint8 RGB image, normalised.
at::Tensor normalize_to_tensor(const vision::RgbImage& image);

PixelBatch make_pixel_batch(std::span<const vision::PreprocessedImage* const> images, at::ScalarType dtype,
                            at::Device device);

}  // namespace dsocr::model

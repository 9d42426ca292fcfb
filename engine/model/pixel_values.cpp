#include "engine/model/pixel_values.h"

#include "common/check.h"
#include "common/cpu_clones.h"

namespace dsocr::model {
namespace {

// ToTensor + Normalize(0.5, 0.5) with torchvision's float32 operations in its order (divide by
// 255, subtract 0.5, divide by 0.5), so every value is bit-identical to the reference; written
// as arithmetic (not a table lookup) so that the loop vectorises, three planes at once.
DSOCR_CPU_CLONES void fill_chw(const vision::RgbImage& image, float* out) {
  const size_t plane = static_cast<size_t>(image.width) * image.height;
  const uint8_t* px = image.pixels.data();
  float* red = out;
  float* green = out + plane;
  float* blue = out + 2 * plane;
  for (size_t i = 0; i < plane; ++i) {
    red[i] = (static_cast<float>(px[3 * i + 0]) / 255.0f - 0.5f) / 0.5f;
    green[i] = (static_cast<float>(px[3 * i + 1]) / 255.0f - 0.5f) / 0.5f;
    blue[i] = (static_cast<float>(px[3 * i + 2]) / 255.0f - 0.5f) / 0.5f;
  }
}

}  // namespace

at::Tensor normalize_to_tensor(const vision::RgbImage& image) {
  at::Tensor t = at::empty({3, image.height, image.width}, at::kFloat);
  fill_chw(image, t.data_ptr<float>());
  return t;
}

PixelBatch make_pixel_batch(std::span<const vision::PreprocessedImage* const> images, at::ScalarType dtype,
                            at::Device device) {
  PixelBatch batch;
  const int64_t n = static_cast<int64_t>(images.size());
  int64_t total_tiles = 0;
  for (const vision::PreprocessedImage* image : images) {
    batch.tiles_per_image.push_back(static_cast<int>(image->tiles.size()));
    total_tiles += static_cast<int64_t>(image->tiles.size());
  }
  at::Tensor globals = at::empty({n, 3, vision::kGlobalViewSize, vision::kGlobalViewSize}, at::kFloat);
  at::Tensor tiles = at::empty({total_tiles, 3, vision::kTileSize, vision::kTileSize}, at::kFloat);
  int64_t tile_index = 0;
  for (int64_t i = 0; i < n; ++i) {
    const vision::PreprocessedImage& image = *images[i];
    DSOCR_CHECK_EQ(image.global_view.width, vision::kGlobalViewSize);
    fill_chw(image.global_view, globals[i].data_ptr<float>());
    for (const vision::RgbImage& tile : image.tiles) fill_chw(tile, tiles[tile_index++].data_ptr<float>());
  }
  batch.global_views = globals.to(device, dtype);
  if (total_tiles > 0) batch.tiles = tiles.to(device, dtype);
  return batch;
}

}  // namespace dsocr::model

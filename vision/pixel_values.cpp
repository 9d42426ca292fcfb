#include "vision/pixel_values.h"

#include <array>

#include "common/check.h"

namespace dsocr::vision {
namespace {

// The 256 possible outputs of ToTensor + Normalize, computed with the same float32 operations
// (divide by 255, subtract 0.5, divide by 0.5), so a table lookup is bit-identical.
const std::array<float, 256>& normalization_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int p = 0; p < 256; ++p) {
      float v = static_cast<float>(p) / 255.0f;
      v = v - 0.5f;
      t[p] = v / 0.5f;
    }
    return t;
  }();
  return table;
}

void fill_chw(const RgbImage& image, float* out) {
  const auto& table = normalization_table();
  const size_t plane = static_cast<size_t>(image.width) * image.height;
  const uint8_t* px = image.pixels.data();
  for (size_t i = 0; i < plane; ++i) {
    out[i] = table[px[3 * i + 0]];
    out[plane + i] = table[px[3 * i + 1]];
    out[2 * plane + i] = table[px[3 * i + 2]];
  }
}

}  // namespace

at::Tensor normalize_to_tensor(const RgbImage& image) {
  at::Tensor t = at::empty({3, image.height, image.width}, at::kFloat);
  fill_chw(image, t.data_ptr<float>());
  return t;
}

PixelBatch make_pixel_batch(std::span<const PreprocessedImage* const> images, at::ScalarType dtype,
                            at::Device device) {
  PixelBatch batch;
  const int64_t n = static_cast<int64_t>(images.size());
  int64_t total_tiles = 0;
  for (const PreprocessedImage* image : images) {
    batch.tiles_per_image.push_back(static_cast<int>(image->tiles.size()));
    total_tiles += static_cast<int64_t>(image->tiles.size());
  }
  at::Tensor globals = at::empty({n, 3, kGlobalViewSize, kGlobalViewSize}, at::kFloat);
  at::Tensor tiles = at::empty({total_tiles, 3, kTileSize, kTileSize}, at::kFloat);
  int64_t tile_index = 0;
  for (int64_t i = 0; i < n; ++i) {
    const PreprocessedImage& image = *images[i];
    DSOCR_CHECK_EQ(image.global_view.width, kGlobalViewSize);
    fill_chw(image.global_view, globals[i].data_ptr<float>());
    for (const RgbImage& tile : image.tiles) fill_chw(tile, tiles[tile_index++].data_ptr<float>());
  }
  batch.global_views = globals.to(device, dtype);
  if (total_tiles > 0) batch.tiles = tiles.to(device, dtype);
  return batch;
}

}  // namespace dsocr::vision

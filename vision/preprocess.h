// The official DeepSeek-OCR-2 image preprocessing (spec §4): tiling decision, 768-pixel local
// tiles, the padded 1024-pixel global view, and the image-token count, all on 8-bit RGB.
//
// plan_image() is pure arithmetic on the size (the token count is known before any pixel is
// touched); preprocess() produces the exact uint8 views Pillow would (tests compare bytes), and
// normalisation to (p/255 - 0.5)/0.5 happens when the views become model input (pixel_values.h).
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <vector>

#include "vision/image.h"

namespace dsocr::vision {

inline constexpr int kGlobalViewSize = 1024;  // BASE_SIZE
inline constexpr int kTileSize = 768;         // IMAGE_SIZE
inline constexpr int kMinTiles = 2;
inline constexpr int kMaxTiles = 6;
inline constexpr int kTokensPerTile = 144;    // (768/16/4)^2
inline constexpr int kTokensPerGlobal = 256;  // (1024/16/4)^2
inline constexpr uint8_t kPadGrey = 127;      // int(0.5 * 255)

struct TilePlan {
  int width = 0, height = 0;                // the (post-EXIF) source size
  int grid_cols = 1, grid_rows = 1;         // (i, j): tiles across, tiles down
  int tiles = 0;                            // 0 when the grid is (1,1), else cols * rows
  int global_width = 0, global_height = 0;  // contained size inside the 1024 square
  int paste_x = 0, paste_y = 0;
  int image_tokens = 0;  // tiles * 144 + 256 + 1 (the view separator)
};

// Spec §4.2 (closest grid with the exact double-precision tie rule) and §4.4 (ImageOps.contain
// and pad with round-half-even). Requires width, height >= 1.
TilePlan plan_image(int width, int height);

struct PreprocessedImage {
  TilePlan plan;
  RgbImage global_view;         // 1024 x 1024
  std::vector<RgbImage> tiles;  // plan.tiles of 768 x 768, row-major
  uint64_t content_hash = 0;    // of the decoded pixels and size: the image cache key
};

PreprocessedImage preprocess(const RgbImage& image);

// A 64-bit hash of an image's size and pixels (not cryptographic; a cache key).
uint64_t content_hash(const RgbImage& image);

}  // namespace dsocr::vision

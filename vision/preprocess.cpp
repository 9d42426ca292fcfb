#include "vision/preprocess.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "common/check.h"
#include "vision/resize.h"

namespace dsocr::vision {
namespace {

// Python's round() of a double: half to even (the default FE_TONEAREST mode of nearbyint).
int round_half_even(double v) { return static_cast<int>(std::nearbyint(v)); }

// The candidate grids in the official order: products 2..6 ascending, stable within a product.
const std::vector<std::pair<int, int>>& candidate_grids() {
  static const std::vector<std::pair<int, int>> grids = [] {
    std::vector<std::pair<int, int>> all;
    for (int product = kMinTiles; product <= kMaxTiles; ++product)
      for (int i = 1; i <= product; ++i)
        if (product % i == 0) all.emplace_back(i, product / i);
    return all;
  }();
  return grids;
}

std::pair<int, int> closest_grid(int width, int height) {
  const double aspect = static_cast<double>(width) / static_cast<double>(height);
  const double area = static_cast<double>(width) * static_cast<double>(height);
  double best_diff = std::numeric_limits<double>::infinity();
  std::pair<int, int> best{1, 1};
  for (const auto& [i, j] : candidate_grids()) {
    const double diff = std::fabs(aspect - static_cast<double>(i) / static_cast<double>(j));
    if (diff < best_diff) {
      best_diff = diff;
      best = {i, j};
    } else if (diff == best_diff) {
      if (area > 0.5 * kTileSize * kTileSize * i * j) best = {i, j};
    }
  }
  return best;
}

void paste(const RgbImage& src, RgbImage& dst, int x0, int y0) {
  for (int y = 0; y < src.height; ++y)
    std::memcpy(dst.row(y0 + y) + static_cast<size_t>(x0) * 3, src.row(y), src.row_bytes());
}

}  // namespace

TilePlan plan_image(int width, int height) {
  DSOCR_CHECK(width >= 1 && height >= 1);
  TilePlan p;
  p.width = width;
  p.height = height;
  if (width > kTileSize || height > kTileSize) {
    auto [cols, rows] = closest_grid(width, height);
    p.grid_cols = cols;
    p.grid_rows = rows;
    p.tiles = cols * rows;
  }
  // ImageOps.contain(image, (1024, 1024)), then pad's centring.
  const double ratio = static_cast<double>(width) / static_cast<double>(height);
  p.global_width = p.global_height = kGlobalViewSize;
  if (ratio > 1.0) {
    p.global_height = round_half_even(static_cast<double>(height) / width * kGlobalViewSize);
  } else if (ratio < 1.0) {
    p.global_width = round_half_even(static_cast<double>(width) / height * kGlobalViewSize);
  }
  if (p.global_width != kGlobalViewSize)
    p.paste_x = round_half_even((kGlobalViewSize - p.global_width) * 0.5);
  else if (p.global_height != kGlobalViewSize)
    p.paste_y = round_half_even((kGlobalViewSize - p.global_height) * 0.5);
  p.image_tokens = p.tiles * kTokensPerTile + kTokensPerGlobal + 1;
  return p;
}

uint64_t content_hash(const RgbImage& image) {
  // Four independent multiply-rotate lanes over 8-byte words, then a splitmix64 finish.
  constexpr uint64_t kPrime = 0x9E3779B185EBCA87ull;
  uint64_t lanes[4] = {0x243F6A8885A308D3ull ^ static_cast<uint64_t>(image.width),
                       0x13198A2E03707344ull ^ static_cast<uint64_t>(image.height),
                       0xA4093822299F31D0ull, 0x082EFA98EC4E6C89ull};
  const uint8_t* p = image.pixels.data();
  size_t n = image.pixels.size();
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    for (int l = 0; l < 4; ++l) {
      uint64_t w;
      std::memcpy(&w, p + i + l * 8, 8);
      lanes[l] = ((lanes[l] ^ w) * kPrime);
      lanes[l] = (lanes[l] << 31) | (lanes[l] >> 33);
    }
  }
  uint64_t h = n;
  for (uint64_t lane : lanes) h = (h ^ lane) * kPrime + 0x632BE59BD9B4E019ull;
  for (; i < n; ++i) h = (h ^ p[i]) * kPrime;
  h ^= h >> 30;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 27;
  h *= 0x94D049BB133111EBull;
  h ^= h >> 31;
  return h;
}

PreprocessedImage preprocess(const RgbImage& image) {
  PreprocessedImage out;
  out.plan = plan_image(image.width, image.height);
  out.content_hash = content_hash(image);
  const TilePlan& p = out.plan;

  out.global_view = RgbImage(kGlobalViewSize, kGlobalViewSize, kPadGrey);
  if (p.global_width > 0 && p.global_height > 0)
    paste(resize_bicubic(image, p.global_width, p.global_height), out.global_view, p.paste_x,
          p.paste_y);

  if (p.tiles > 0) {
    RgbImage grid = resize_bicubic(image, kTileSize * p.grid_cols, kTileSize * p.grid_rows);
    out.tiles.reserve(p.tiles);
    for (int k = 0; k < p.tiles; ++k) {
      const int col = k % p.grid_cols, row = k / p.grid_cols;
      RgbImage tile(kTileSize, kTileSize);
      for (int y = 0; y < kTileSize; ++y)
        std::memcpy(tile.row(y),
                    grid.row(row * kTileSize + y) + static_cast<size_t>(col) * kTileSize * 3,
                    tile.row_bytes());
      out.tiles.push_back(std::move(tile));
    }
  }
  return out;
}

}  // namespace dsocr::vision

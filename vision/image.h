// RgbImage: a decoded picture as 8-bit RGB, row-major, 3 bytes per pixel, no row padding.
//
// The one pixel format between the decoders and the preprocessing, matching what Pillow's
// `convert("RGB")` hands the official preprocessing (spec §4.1).
//
// Thread-safety: a plain value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace dsocr::vision {

struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;  // width * height * 3 bytes

  RgbImage() = default;
  RgbImage(int w, int h) : width(w), height(h), pixels(static_cast<size_t>(w) * h * 3) {}
  RgbImage(int w, int h, uint8_t fill)
      : width(w), height(h), pixels(static_cast<size_t>(w) * h * 3, fill) {}

  size_t row_bytes() const { return static_cast<size_t>(width) * 3; }
  uint8_t* row(int y) { return pixels.data() + static_cast<size_t>(y) * row_bytes(); }
  const uint8_t* row(int y) const { return pixels.data() + static_cast<size_t>(y) * row_bytes(); }
  bool empty() const { return width == 0 || height == 0; }
};

}  // namespace dsocr::vision

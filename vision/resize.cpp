#include "vision/resize.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/check.h"
#include "common/cpu_clones.h"

namespace dsocr::vision {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;

double bicubic(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// For each output index: the first input index, the tap count and the fixed-point weights.
struct Taps {
  int ksize = 0;
  std::vector<int> first;
  std::vector<int> count;
  std::vector<int32_t> weights;  // out_size * ksize
};

Taps compute_taps(int in_size, int out_size) {
  Taps t;
  const double scale = static_cast<double>(in_size) / out_size;
  const double filter_scale = std::max(scale, 1.0);
  const double support = 2.0 * filter_scale;
  t.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.first.resize(out_size);
  t.count.resize(out_size);
  t.weights.assign(static_cast<size_t>(out_size) * t.ksize, 0);
  std::vector<double> k(t.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    // Operation order and int truncation as in Pillow's precompute_coeffs: bit-exact weights.
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filter_scale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      k[x] = bicubic((x + xmin - center + 0.5) * ss);
      ww += k[x];
    }
    int32_t* w = &t.weights[static_cast<size_t>(xx) * t.ksize];
    for (int x = 0; x < xmax; ++x) {
      double v = ww != 0.0 ? k[x] / ww : k[x];
      w[x] = v < 0 ? static_cast<int32_t>(-0.5 + v * (1 << kPrecisionBits))
                   : static_cast<int32_t>(0.5 + v * (1 << kPrecisionBits));
    }
    t.first[xx] = xmin;
    t.count[xx] = xmax;
  }
  return t;
}

inline uint8_t clip8(int32_t acc) {
  int32_t v = acc >> kPrecisionBits;  // arithmetic shift: floor, as Pillow's lookup table
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Rows [row_begin, row_begin + out.height) of `src`, resampled horizontally into `out`.
// Rows go kRowBlock at a time: their pixels are first interleaved column by column as int32
// (columns[x][row][channel]), so each tap of an output pixel is one multiply-add over
// kRowBlock * 3 contiguous lanes, which the compiler vectorises; within one row there are only
// 3 lanes. Integer arithmetic: the order of the sums cannot change a result.
DSOCR_CPU_CLONES void horizontal_pass(const RgbImage& src, int row_begin, const Taps& taps,
                                      RgbImage& out) {
  constexpr int kRowBlock = 8;
  constexpr int kLanes = kRowBlock * 3;
  std::vector<int32_t> columns(static_cast<size_t>(src.width) * kLanes, 0);
  for (int y0 = 0; y0 < out.height; y0 += kRowBlock) {
    const int rows = std::min(kRowBlock, out.height - y0);
    for (int r = 0; r < rows; ++r) {
      const uint8_t* in = src.row(row_begin + y0 + r);
      int32_t* c = columns.data() + r * 3;
      for (int x = 0; x < src.width; ++x, c += kLanes, in += 3) {
        c[0] = in[0];
        c[1] = in[1];
        c[2] = in[2];
      }
    }
    for (int xx = 0; xx < out.width; ++xx) {
      const int32_t* w = &taps.weights[static_cast<size_t>(xx) * taps.ksize];
      const int32_t* c = columns.data() + static_cast<size_t>(taps.first[xx]) * kLanes;
      int32_t acc[kLanes];
      for (int j = 0; j < kLanes; ++j) acc[j] = 1 << (kPrecisionBits - 1);
      for (int x = 0; x < taps.count[xx]; ++x, c += kLanes) {
        const int32_t weight = w[x];
        for (int j = 0; j < kLanes; ++j) acc[j] += c[j] * weight;
      }
      uint8_t clipped[kLanes];
      for (int j = 0; j < kLanes; ++j) clipped[j] = clip8(acc[j]);  // vectorised, unlike per row
      for (int r = 0; r < rows; ++r)
        std::memcpy(out.row(y0 + r) + static_cast<size_t>(xx) * 3, clipped + r * 3, 3);
    }
  }
}

// Vertical pass; taps.first is relative to `src`'s first row. Whole rows are the vector lanes.
DSOCR_CPU_CLONES void vertical_pass(const RgbImage& src, const Taps& taps, int first_offset,
                                    RgbImage& out) {
  const size_t row_len = src.row_bytes();
  std::vector<int32_t> acc(row_len);
  for (int yy = 0; yy < out.height; ++yy) {
    const int32_t* w = &taps.weights[static_cast<size_t>(yy) * taps.ksize];
    std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
    const int first = taps.first[yy] - first_offset;
    for (int y = 0; y < taps.count[yy]; ++y) {
      const uint8_t* in = src.row(first + y);
      const int32_t weight = w[y];
      for (size_t i = 0; i < row_len; ++i) acc[i] += in[i] * weight;  // vectorises
    }
    uint8_t* o = out.row(yy);
    for (size_t i = 0; i < row_len; ++i) o[i] = clip8(acc[i]);
  }
}

}  // namespace

RgbImage resize_bicubic(const RgbImage& src, int width, int height) {
  DSOCR_CHECK(width > 0 && height > 0);
  DSOCR_CHECK(!src.empty());
  const bool need_horizontal = width != src.width;
  const bool need_vertical = height != src.height;
  if (!need_horizontal && !need_vertical) return src;

  Taps vertical = compute_taps(src.height, height);
  const int row_first = vertical.first.front();
  const int row_last = vertical.first.back() + vertical.count.back();

  if (!need_horizontal) {
    RgbImage out(width, height);
    vertical_pass(src, vertical, 0, out);
    return out;
  }
  Taps horizontal = compute_taps(src.width, width);
  if (!need_vertical) {
    RgbImage out(width, height);
    horizontal_pass(src, 0, horizontal, out);
    return out;
  }
  const bool vertical_first =
      height < src.height && (src.height - height) > 2 * (src.width - width);
  if (vertical_first) {
    RgbImage temp(src.width, height);
    vertical_pass(src, vertical, 0, temp);
    RgbImage out(width, height);
    horizontal_pass(temp, 0, horizontal, out);
    return out;
  }
  RgbImage temp(width, row_last - row_first);
  horizontal_pass(src, row_first, horizontal, temp);
  RgbImage out(width, height);
  vertical_pass(temp, vertical, row_first, out);
  return out;
}

}  // namespace dsocr::vision

// Pillow-identical bicubic resize of 8-bit RGB images (spec §4.6): what `Image.resize(size)`
// computes for an RGB image with the default BICUBIC filter, byte for byte.
//
// Separable: two passes, each rounded to uint8. Normally horizontal first (over only the source
// rows the vertical pass reads), then vertical; but like Pillow 13 (its PR #9549) vertical first
// when the height shrinks by more than twice as many pixels as the width does — the order changes
// the rounding, so it is part of being byte-exact (rule fitted to and tested against Pillow 13).
// Cubic kernel a = -0.5, support 2 scaled by the down-scaling factor (antialiasing), coefficients
// normalised in double and rounded to 22-bit fixed point. A pass whose dimension does not change is
// skipped; same size in and out is a copy.
//
// Thread-safety: pure function.
#pragma once

#include "vision/image.h"

namespace dsocr::vision {

RgbImage resize_bicubic(const RgbImage& src, int width, int height);

}  // namespace dsocr::vision

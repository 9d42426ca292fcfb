// The pictures `dsocr ocr` writes for a page: the page as PNG (what is sent to the model), the
// page with its grounding boxes drawn, and the image regions its markdown references.
//
// Boxes are drawn the way the official scripts draw them (spec §11.2): per tag one colour
// (r, g in 0..200, b in 0..255), the outline inside the box 4 px wide for "title" and 2 px for
// every other label, a fill of that colour at alpha 20/255 laid over everything at the end, and
// the label written at (x1, max(0, y1 - 15)) on a white box. Unlike the scripts, whose colours are
// random, the k-th tag of a page always gets the same colour, so reruns write identical files.
// The label font is OpenCV's Hershey simplex, not PIL's default bitmap font.
//
// Thread-safety: pure functions.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "server/grounding.h"
#include "vision/image.h"

namespace dsocr::cli {

// Lossless PNG bytes of `image` (the pixels a decoder gets back are exactly `image`'s).
StatusOr<std::string> encode_png(const vision::RgbImage& image);

// The colour of the k-th tag of a page.
std::array<uint8_t, 3> box_colour(size_t k);

// `image` with every block that has boxes drawn on it (blocks from server::parse_grounding on
// this image's size), as PNG bytes.
StatusOr<std::string> draw_boxes_png(const vision::RgbImage& image,
                                     const std::vector<server::GroundingBlock>& blocks);

// The pixels x1 <= x < x2, y1 <= y < y2 of `image` (clipped to it) as JPEG bytes, quality 75
// (Pillow's default, which the scripts' save() uses); nullopt when the clipped box is empty.
StatusOr<std::optional<std::string>> crop_jpeg(const vision::RgbImage& image,
                                               const std::array<int, 4>& box);

}  // namespace dsocr::cli

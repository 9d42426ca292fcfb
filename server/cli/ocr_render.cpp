#include "server/cli/ocr_render.h"

#include <algorithm>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

namespace dsocr::cli {
namespace {

// A BGR copy of `image` (OpenCV's encoders take BGR).
cv::Mat to_bgr(const vision::RgbImage& image) {
  cv::Mat rgb(image.height, image.width, CV_8UC3, const_cast<uint8_t*>(image.pixels.data()));
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  return bgr;
}

StatusOr<std::string> encode(const cv::Mat& bgr, const char* extension,
                             const std::vector<int>& params) {
  std::vector<uchar> bytes;
  try {
    if (!cv::imencode(extension, bgr, bytes, params)) {
      return internal_error(std::string("cannot encode ") + extension);
    }
  } catch (const cv::Exception& e) {
    return internal_error(std::string("cannot encode ") + extension + ": " + e.what());
  }
  return std::string(bytes.begin(), bytes.end());
}

// Level 1: these PNGs are written once and read once; the pixels are the same at every level.
const std::vector<int> kPngParams = {cv::IMWRITE_PNG_COMPRESSION, 1};

}  // namespace

StatusOr<std::string> encode_png(const vision::RgbImage& image) {
  return encode(to_bgr(image), ".png", kPngParams);
}

std::array<uint8_t, 3> box_colour(size_t k) {
  // A fixed walk through the scripts' colour ranges; neighbouring tags get distinct colours.
  return {static_cast<uint8_t>((37 + k * 71) % 201), static_cast<uint8_t>((113 + k * 53) % 201),
          static_cast<uint8_t>((211 + k * 97) % 256)};
}

StatusOr<std::string> draw_boxes_png(const vision::RgbImage& image,
                                     const std::vector<server::GroundingBlock>& blocks) {
  cv::Mat canvas = to_bgr(image);
  // The scripts' RGBA overlay: each box's interior at alpha 20, its 1-px edge transparent, later
  // boxes replacing earlier ones where they overlap; laid over the drawn page at the end.
  cv::Mat overlay(canvas.size(), CV_8UC3, cv::Scalar(0, 0, 0));
  cv::Mat overlay_alpha(canvas.size(), CV_8UC1, cv::Scalar(0));
  constexpr int kFillAlpha = 20;
  constexpr double kFontScale = 0.4;
  constexpr int kFont = cv::FONT_HERSHEY_SIMPLEX;
  size_t tag = 0;
  for (const server::GroundingBlock& block : blocks) {
    if (block.boxes.empty()) continue;
    const auto rgb = box_colour(tag++);
    const cv::Scalar colour(rgb[2], rgb[1], rgb[0]);
    const int outline = block.label == "title" ? 4 : 2;
    for (const server::GroundingBox& box : block.boxes) {
      const int x1 = box.pixels[0], y1 = box.pixels[1], x2 = box.pixels[2], y2 = box.pixels[3];
      // Pillow draws a rectangle's outline inside [x1, x2] x [y1, y2], edges included.
      for (int i = 0; i < outline && x1 + i <= x2 - i && y1 + i <= y2 - i; ++i) {
        cv::rectangle(canvas, cv::Point(x1 + i, y1 + i), cv::Point(x2 - i, y2 - i), colour, 1);
      }
      cv::rectangle(overlay_alpha, cv::Point(x1, y1), cv::Point(x2, y2), cv::Scalar(0), 1);
      if (x1 + 1 <= x2 - 1 && y1 + 1 <= y2 - 1) {
        cv::rectangle(overlay, cv::Point(x1 + 1, y1 + 1), cv::Point(x2 - 1, y2 - 1), colour,
                      cv::FILLED);
        cv::rectangle(overlay_alpha, cv::Point(x1 + 1, y1 + 1), cv::Point(x2 - 1, y2 - 1),
                      cv::Scalar(kFillAlpha), cv::FILLED);
      }
      int baseline = 0;
      const cv::Size text = cv::getTextSize(block.label, kFont, kFontScale, 1, &baseline);
      const int tx = x1, ty = std::max(0, y1 - 15);
      cv::rectangle(canvas, cv::Point(tx, ty),
                    cv::Point(tx + text.width, ty + text.height + baseline),
                    cv::Scalar(255, 255, 255), cv::FILLED);
      cv::putText(canvas, block.label, cv::Point(tx, ty + text.height), kFont, kFontScale, colour,
                  1, cv::LINE_AA);
    }
  }
  for (int y = 0; y < canvas.rows; ++y) {
    const uint8_t* a = overlay_alpha.ptr<uint8_t>(y);
    const uint8_t* o = overlay.ptr<uint8_t>(y);
    uint8_t* c = canvas.ptr<uint8_t>(y);
    for (int x = 0; x < canvas.cols; ++x) {
      if (!a[x]) continue;
      for (int ch = 0; ch < 3; ++ch) {
        const int v = c[3 * x + ch] * (255 - a[x]) + o[3 * x + ch] * a[x];
        c[3 * x + ch] = static_cast<uint8_t>((v + 127) / 255);
      }
    }
  }
  return encode(canvas, ".png", kPngParams);
}

StatusOr<std::optional<std::string>> crop_jpeg(const vision::RgbImage& image,
                                               const std::array<int, 4>& box) {
  const int x1 = std::clamp(box[0], 0, image.width), y1 = std::clamp(box[1], 0, image.height);
  const int x2 = std::clamp(box[2], 0, image.width), y2 = std::clamp(box[3], 0, image.height);
  if (x2 <= x1 || y2 <= y1) return std::optional<std::string>();
  cv::Mat rgb(image.height, image.width, CV_8UC3, const_cast<uint8_t*>(image.pixels.data()));
  cv::Mat bgr;
  cv::cvtColor(rgb(cv::Rect(x1, y1, x2 - x1, y2 - y1)), bgr, cv::COLOR_RGB2BGR);
  DSOCR_ASSIGN_OR_RETURN(std::string jpeg, encode(bgr, ".jpg", {cv::IMWRITE_JPEG_QUALITY, 75}));
  return std::optional<std::string>(std::move(jpeg));
}

}  // namespace dsocr::cli

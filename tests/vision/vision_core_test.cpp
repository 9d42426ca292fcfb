// Torch-free vision: tiling plan (spec §4.2/§4.7), decoding limits and errors, orientation,
// resize invariants, content hash, and the worker pool's backpressure. Byte-exactness against
// Pillow is in tests/python/test_preprocess_parity.py.
#include <catch2/catch.hpp>

#include <chrono>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <string>
#include <vector>

#include "vision/image_decoder.h"
#include "vision/preprocess.h"
#include "vision/resize.h"
#include "vision/vision_workers.h"

using namespace dsocr;
using namespace dsocr::vision;

namespace {

RgbImage gradient(int w, int h) {
  RgbImage img(w, h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = img.row(y) + x * 3;
      p[0] = static_cast<uint8_t>(x * 7 + y);
      p[1] = static_cast<uint8_t>(y * 5);
      p[2] = static_cast<uint8_t>((x ^ y) & 0xff);
    }
  return img;
}

std::string encode(const RgbImage& img, const std::string& ext) {
  cv::Mat rgb(img.height, img.width, CV_8UC3, const_cast<uint8_t*>(img.pixels.data()));
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  std::vector<uint8_t> out;
  REQUIRE(cv::imencode(ext, bgr, out));
  return std::string(out.begin(), out.end());
}

std::string png_header_only(uint32_t w, uint32_t h) {
  std::string s("\x89PNG\r\n\x1a\n", 8);
  auto be32 = [&](uint32_t v) {
    for (int i = 3; i >= 0; --i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  be32(13);
  s += "IHDR";
  be32(w);
  be32(h);
  s += std::string("\x08\x02\x00\x00\x00", 5);
  be32(0);  // CRC (not checked by the probe)
  return s;
}

}  // namespace

TEST_CASE("plan_image follows the spec's worked examples", "[vision]") {
  struct Row {
    int w, h, cols, rows, tiles, gw, gh, px, py, tokens;
  };
  const Row table[] = {
      {768, 768, 1, 1, 0, 1024, 1024, 0, 0, 257},
      {500, 300, 1, 1, 0, 1024, 614, 0, 205, 257},
      {769, 500, 3, 2, 6, 1024, 666, 0, 179, 1121},
      {1000, 1000, 2, 2, 4, 1024, 1024, 0, 0, 833},
      {2000, 1000, 2, 1, 2, 1024, 512, 0, 256, 545},
      {1920, 1080, 2, 1, 2, 1024, 576, 0, 224, 545},
      {1190, 1684, 2, 3, 6, 724, 1024, 150, 0, 1121},
      {1224, 1584, 2, 3, 6, 791, 1024, 116, 0, 1121},
      {3000, 500, 6, 1, 6, 1024, 171, 0, 426, 1121},
      {1600, 1280, 3, 2, 6, 1024, 819, 0, 102, 1121},
  };
  for (const Row& r : table) {
    INFO(r.w << "x" << r.h);
    TilePlan p = plan_image(r.w, r.h);
    CHECK(p.grid_cols == r.cols);
    CHECK(p.grid_rows == r.rows);
    CHECK(p.tiles == r.tiles);
    CHECK(p.global_width == r.gw);
    CHECK(p.global_height == r.gh);
    CHECK(p.paste_x == r.px);
    CHECK(p.paste_y == r.py);
    CHECK(p.image_tokens == r.tokens);
  }
}

TEST_CASE("plan_image resolves exact aspect-ratio ties by area", "[vision]") {
  // ar 1.25 ties (2,2) and (3,2): the larger grid wins only above 294,912 * 6 pixels.
  CHECK(plan_image(1000, 800).tiles == 4);
  CHECK(plan_image(2000, 1600).grid_cols == 3);
  CHECK(plan_image(2500, 1000).grid_cols == 3);  // ar 2.5 between (2,1) and (3,1)
  CHECK(plan_image(1000, 1200).tiles == 4);      // 5/6 does not tie in double
  // Degenerate: the contained global view of a 1x3000 strip has zero width.
  TilePlan strip = plan_image(1, 3000);
  CHECK(strip.global_width == 0);
  CHECK(strip.paste_x == 512);
  CHECK(strip.grid_rows == 6);
}

TEST_CASE("probe_image reads sizes from headers without decoding", "[vision]") {
  RgbImage img = gradient(37, 23);
  for (const char* ext : {".png", ".jpg", ".bmp", ".webp", ".tiff"}) {
    INFO(ext);
    auto header = probe_image(encode(img, ext));
    REQUIRE(header.ok());
    CHECK(header->width == 37);
    CHECK(header->height == 23);
  }
}

TEST_CASE("probe_image refuses every truncated header instead of reading past it", "[vision]") {
  RgbImage img = gradient(37, 23);
  cv::Mat rgb(img.height, img.width, CV_8UC3, img.pixels.data());
  std::vector<uint8_t> lossy;
  REQUIRE(cv::imencode(".webp", rgb, lossy, {cv::IMWRITE_WEBP_QUALITY, 80}));
  const std::string webp(lossy.begin(), lossy.end());
  REQUIRE(webp.substr(12, 4) == "VP8 ");
  for (size_t n = 0; n < 30; ++n) CHECK_FALSE(probe_image(webp.substr(0, n)).ok());
  CHECK(probe_image(webp).ok());
  for (const char* ext : {".png", ".jpg", ".bmp", ".tiff"}) {
    const std::string full = encode(img, ext);
    for (size_t n = 0; n < 16; ++n) CHECK_FALSE(probe_image(full.substr(0, n)).ok());
  }
}

TEST_CASE("decode_image enforces limits before decoding", "[vision]") {
  // A decompression bomb: a header claiming 100000 x 100000 and no pixel data.
  auto bomb = decode_image(png_header_only(100000, 100000));
  REQUIRE_FALSE(bomb.ok());
  CHECK(bomb.status().code() == StatusCode::kPayloadTooLarge);
  CHECK(bomb.status().message().find("100000x100000") != std::string::npos);

  DecodeLimits small;
  small.max_encoded_bytes = 10;
  auto big = decode_image(encode(gradient(8, 8), ".png"), small);
  REQUIRE_FALSE(big.ok());
  CHECK(big.status().code() == StatusCode::kPayloadTooLarge);

  DecodeLimits min_side;
  min_side.min_side = 16;
  auto tiny = decode_image(encode(gradient(8, 20), ".png"), min_side);
  REQUIRE_FALSE(tiny.ok());
  CHECK(tiny.status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("decode_image rejects unsupported, corrupt and truncated data", "[vision]") {
  CHECK(decode_image("").status().code() == StatusCode::kInvalidArgument);
  CHECK(decode_image("hello world").status().message().find("unsupported") != std::string::npos);
  std::string jpeg = encode(gradient(64, 64), ".jpg");
  auto truncated = decode_image(jpeg.substr(0, jpeg.size() / 2));
  REQUIRE_FALSE(truncated.ok());
  CHECK(truncated.status().code() == StatusCode::kInvalidArgument);
  std::string png = encode(gradient(64, 64), ".png");
  CHECK_FALSE(decode_image(png.substr(0, png.size() - 40)).ok());
  std::string garbage = png;
  for (size_t i = 60; i < garbage.size() - 20; ++i) garbage[i] = static_cast<char>(i * 31);
  CHECK_FALSE(decode_image(garbage).ok());
}

TEST_CASE("decode_image round-trips lossless formats exactly", "[vision]") {
  RgbImage img = gradient(31, 17);
  for (const char* ext : {".png", ".bmp", ".tiff"}) {
    INFO(ext);
    auto decoded = decode_image(encode(img, ext));
    REQUIRE(decoded.ok());
    CHECK(decoded->pixels == img.pixels);
  }
}

TEST_CASE("apply_orientation matches Pillow's exif_transpose geometry", "[vision]") {
  RgbImage img = gradient(3, 2);
  auto px = [](const RgbImage& im, int x, int y) { return im.row(y)[x * 3]; };
  RgbImage r6 = apply_orientation(img, 6);  // rotate 90 degrees clockwise
  REQUIRE(r6.width == 2);
  REQUIRE(r6.height == 3);
  CHECK(px(r6, 1, 0) == px(img, 0, 0));
  RgbImage r8 = apply_orientation(img, 8);  // counter-clockwise
  CHECK(px(r8, 0, 2) == px(img, 0, 0));
  RgbImage r2 = apply_orientation(img, 2);  // mirror
  CHECK(px(r2, 2, 0) == px(img, 0, 0));
  RgbImage r5 = apply_orientation(img, 5);  // transpose
  CHECK(px(r5, 1, 2) == px(img, 2, 1));
  RgbImage r7 = apply_orientation(img, 7);  // transverse
  CHECK(px(r7, 0, 0) == px(img, 2, 1));
  CHECK(apply_orientation(img, 1).pixels == img.pixels);
}

TEST_CASE("resize_bicubic: identity copies, constant images stay constant", "[vision]") {
  RgbImage img = gradient(40, 30);
  CHECK(resize_bicubic(img, 40, 30).pixels == img.pixels);
  RgbImage flat(50, 20, 200);
  for (auto [w, h] : {std::pair{13, 7}, {120, 90}, {50, 91}, {7, 20}}) {
    RgbImage r = resize_bicubic(flat, w, h);
    REQUIRE(r.width == w);
    for (uint8_t v : r.pixels) REQUIRE(v == 200);
  }
}

TEST_CASE("preprocess produces the planned views and a content hash", "[vision]") {
  RgbImage img = gradient(1000, 1000);
  PreprocessedImage pre = preprocess(img);
  CHECK(pre.tiles.size() == 4);
  CHECK(pre.global_view.width == 1024);
  for (const auto& t : pre.tiles) CHECK(t.width == 768);
  RgbImage other = img;
  other.pixels[12345] ^= 1;
  CHECK(content_hash(other) != pre.content_hash);
  CHECK(content_hash(img) == pre.content_hash);
  RgbImage transposed = gradient(1000, 1000);
  transposed.width = 500;
  transposed.height = 2000;  // same bytes, other shape
  CHECK(content_hash(transposed) != pre.content_hash);
}

TEST_CASE("VisionWorkers decode off-thread and refuse work when the queue is full", "[vision]") {
  VisionWorkersOptions options;
  options.threads = 1;
  options.queue_capacity = 1;
  VisionWorkers workers(options);
  std::string page = encode(gradient(2000, 1500), ".png");
  std::vector<std::future<StatusOr<PreprocessedImage>>> futures;
  int refused = 0;
  for (int i = 0; i < 8; ++i) {
    auto f = workers.try_submit(page);
    if (f)
      futures.push_back(std::move(*f));
    else
      ++refused;
  }
  CHECK(refused > 0);
  for (auto& f : futures) {
    auto result = f.get();
    REQUIRE(result.ok());
    CHECK(result->plan.tiles == 6);
  }
  auto bad = workers.try_submit("garbage");
  REQUIRE(bad);
  CHECK_FALSE(bad->get().ok());
}

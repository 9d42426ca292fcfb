// Decoding hostile images (issue #16): sizes hidden from the first header (a TIFF's duplicated
// tags, oversized strips and tiles, a GIF frame larger than its logical screen) and a JPEG's
// repeated scans must be refused from what the decoder would really do, fast and before any
// large allocation; and what Pillow accepts (animated WebP, GIF canvases grown to their first
// frame, palette-less GIFs) must decode as Pillow shows it. Pixel parity with Pillow itself is in
// test_preprocess_parity.py.
#include <webp/encode.h>
#include <webp/mux.h>
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <string>
#include <vector>

#include "vision/image_decoder.h"

using namespace dsocr;
using namespace dsocr::vision;

namespace {

struct TiffEntry {
  uint16_t tag, type;
  uint32_t value;  // SHORT or LONG, count 1, stored inline
};

// A little-endian TIFF: one IFD with the entries as given (order and duplicates kept), then
// `pixel_bytes` zero bytes of strip or tile data that the StripOffsets/TileOffsets entry (value 0
// here) is patched to point at.
std::string tiff(std::vector<TiffEntry> entries, size_t pixel_bytes) {
  const uint32_t data_offset = 8 + 2 + 12 * static_cast<uint32_t>(entries.size()) + 4;
  std::string s("II*\0", 4);
  auto le16 = [&](uint32_t v) {
    s.push_back(static_cast<char>(v & 0xff));
    s.push_back(static_cast<char>(v >> 8 & 0xff));
  };
  auto le32 = [&](uint32_t v) {
    le16(v & 0xffff);
    le16(v >> 16);
  };
  le32(8);
  le16(static_cast<uint32_t>(entries.size()));
  for (const TiffEntry& e : entries) {
    le16(e.tag);
    le16(e.type);
    le32(1);
    uint32_t value = (e.tag == 273 || e.tag == 324) ? data_offset : e.value;
    if (e.type == 3) {
      le16(value);
      le16(0);
    } else {
      le32(value);
    }
  }
  le32(0);  // no next IFD
  s.append(pixel_bytes, '\0');
  return s;
}

constexpr uint16_t kShort = 3, kLong = 4;

// A greyscale, uncompressed, single-strip TIFF of the given header fields.
std::vector<TiffEntry> grey_tiff_entries(uint32_t width, uint32_t height, uint32_t rows_per_strip) {
  return {{256, kLong, width},
          {257, kLong, height},
          {258, kShort, 8},
          {259, kShort, 1},
          {262, kShort, 1},
          {273, kLong, 0},
          {277, kShort, 1},
          {278, kLong, rows_per_strip},
          {279, kLong, width * height}};
}

// GIF LZW data that only ever emits literal codes: a clear code every 100 pixels keeps the code
// width at 9 bits (min code size 8), so any indices can be written without an encoder.
std::string gif_literal_lzw(const std::vector<uint8_t>& indices) {
  std::string bytes;
  uint64_t acc = 0;
  int bits = 0;
  auto put = [&](uint32_t code) {
    acc |= static_cast<uint64_t>(code) << bits;
    bits += 9;
    while (bits >= 8) {
      bytes.push_back(static_cast<char>(acc & 0xff));
      acc >>= 8;
      bits -= 8;
    }
  };
  for (size_t i = 0; i < indices.size(); ++i) {
    if (i % 100 == 0) put(256);
    put(indices[i]);
  }
  put(257);
  if (bits > 0) bytes.push_back(static_cast<char>(acc & 0xff));
  std::string blocks(1, '\x08');  // min code size
  for (size_t p = 0; p < bytes.size(); p += 255) {
    std::string chunk = bytes.substr(p, 255);
    blocks.push_back(static_cast<char>(chunk.size()));
    blocks += chunk;
  }
  blocks.push_back('\0');
  return blocks;
}

void put_le16(std::string& s, uint32_t v) {
  s.push_back(static_cast<char>(v & 0xff));
  s.push_back(static_cast<char>(v >> 8 & 0xff));
}

// A GIF89a: a screen, an optional global palette (256 entries), one frame with `pixel_data`.
std::string gif(int screen_w, int screen_h, const std::vector<uint8_t>* palette_rgb, int left,
                int top, int frame_w, int frame_h, const std::string& pixel_data) {
  std::string s = "GIF89a";
  put_le16(s, screen_w);
  put_le16(s, screen_h);
  s.push_back(palette_rgb ? '\xF7' : '\x00');  // global table of 2^(7+1) entries, or none
  s += std::string("\0\0", 2);
  if (palette_rgb) s += std::string(palette_rgb->begin(), palette_rgb->end());
  s.push_back(',');
  put_le16(s, left);
  put_le16(s, top);
  put_le16(s, frame_w);
  put_le16(s, frame_h);
  s.push_back('\0');
  s += pixel_data;
  s.push_back(';');
  return s;
}

// Runs a decode and reports how long it took, so that bombs are shown to be refused up front.
StatusOr<RgbImage> timed_decode(const std::string& bytes, double* seconds,
                                const DecodeLimits& limits = {}) {
  auto start = std::chrono::steady_clock::now();
  auto result = decode_image(bytes, limits);
  *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

// An animated WebP (lossless frames) through libwebpmux's encoder, as Pillow's save_all makes them.
std::string animated_webp(int w, int h, const std::vector<std::vector<uint8_t>>& rgba_frames) {
  WebPAnimEncoderOptions options;
  REQUIRE(WebPAnimEncoderOptionsInit(&options));
  WebPAnimEncoder* encoder = WebPAnimEncoderNew(w, h, &options);
  REQUIRE(encoder);
  WebPConfig config;
  REQUIRE(WebPConfigInit(&config));
  config.lossless = 1;
  int timestamp = 0;
  for (const auto& rgba : rgba_frames) {
    WebPPicture picture;
    REQUIRE(WebPPictureInit(&picture));
    picture.use_argb = 1;
    picture.width = w;
    picture.height = h;
    REQUIRE(WebPPictureImportRGBA(&picture, rgba.data(), w * 4));
    REQUIRE(WebPAnimEncoderAdd(encoder, &picture, timestamp, &config));
    WebPPictureFree(&picture);
    timestamp += 100;
  }
  REQUIRE(WebPAnimEncoderAdd(encoder, nullptr, timestamp, nullptr));
  WebPData data;
  WebPDataInit(&data);
  REQUIRE(WebPAnimEncoderAssemble(encoder, &data));
  std::string out(reinterpret_cast<const char*>(data.bytes), data.size);
  WebPDataClear(&data);
  WebPAnimEncoderDelete(encoder);
  return out;
}

}  // namespace

TEST_CASE("a TIFF's duplicated size tags are read as libtiff reads them", "[vision][bomb]") {
  // The attack of issue #16: the first ImageWidth/ImageLength say 30000, later duplicates say 10.
  // A hand parser that keeps the last value let libtiff decode 30000x30000 (+2.5 GB, seconds).
  std::vector<TiffEntry> entries = grey_tiff_entries(30000, 30000, 30000);
  entries.insert(entries.begin() + 2, {{256, kLong, 10}, {257, kLong, 10}});
  entries.back().value = 100;  // StripByteCounts: the 10x10 image's
  std::string bomb = tiff(entries, 100);
  auto header = probe_image(bomb);
  REQUIRE(header.ok());
  CHECK(header->width == 30000);
  CHECK(header->height == 30000);
  double seconds = 0;
  auto decoded = timed_decode(bomb, &seconds);
  REQUIRE_FALSE(decoded.ok());
  CHECK(decoded.status().code() == StatusCode::kPayloadTooLarge);
  CHECK(decoded.status().message().find("30000x30000") != std::string::npos);
  CHECK(seconds < 1.0);
}

TEST_CASE("a small TIFF with huge strips or tiles is refused before OpenCV buffers one",
          "[vision][bomb]") {
  // OpenCV reads whole strips or tiles into one RGBA buffer sized from the tags, not the image.
  double seconds = 0;
  SECTION("tiles") {
    std::vector<TiffEntry> entries = {{256, kLong, 16},   {257, kLong, 16},   {258, kShort, 8},
                                      {259, kShort, 1},   {262, kShort, 1},   {277, kShort, 1},
                                      {322, kLong, 8192}, {323, kLong, 8192}, {324, kLong, 0},
                                      {325, kLong, 64}};
    std::string small_image = tiff(entries, 64);
    auto header = probe_image(small_image);
    REQUIRE(header.ok());
    CHECK(header->buffer_pixels == 8192 * 8192);
    auto decoded = timed_decode(small_image, &seconds);
    REQUIRE_FALSE(decoded.ok());
    CHECK(decoded.status().code() == StatusCode::kPayloadTooLarge);
    CHECK(decoded.status().message().find("strips or tiles") != std::string::npos);
  }
  SECTION("strips") {
    // Compressed (PackBits): libtiff chops a single uncompressed strip into small ones itself.
    std::vector<TiffEntry> entries = grey_tiff_entries(4000, 10, 20000);
    entries[3].value = 32773;
    std::string small_image = tiff(entries, 40000);
    auto header = probe_image(small_image);
    REQUIRE(header.ok());
    CHECK(header->buffer_pixels == 4000 * 20000);
    auto decoded = timed_decode(small_image, &seconds);
    REQUIRE_FALSE(decoded.ok());
    CHECK(decoded.status().code() == StatusCode::kPayloadTooLarge);
  }
  CHECK(seconds < 1.0);
  // The same image with sane strips decodes (all black).
  auto fine = decode_image(tiff(grey_tiff_entries(4000, 10, 10), 40000));
  REQUIRE(fine.ok());
  CHECK(fine->width == 4000);
  CHECK(fine->pixels == std::vector<uint8_t>(4000 * 10 * 3, 0));
}

TEST_CASE("a GIF frame larger than its logical screen counts against the limit", "[vision][bomb]") {
  // Issue #16: a 64x64 screen and a 65535x65535 frame decoded for 7.6 s on the vision thread.
  std::vector<uint8_t> palette(768, 0);
  std::string bomb = gif(64, 64, &palette, 0, 0, 65535, 65535, gif_literal_lzw({1, 2, 3}));
  auto header = probe_image(bomb);
  REQUIRE(header.ok());
  CHECK(header->width == 65535);
  CHECK(header->height == 65535);
  double seconds = 0;
  auto decoded = timed_decode(bomb, &seconds);
  REQUIRE_FALSE(decoded.ok());
  CHECK(decoded.status().code() == StatusCode::kPayloadTooLarge);
  CHECK(seconds < 1.0);
  // An offset counts too: a 16x16 frame at (65000, 65000).
  auto offset = decode_image(gif(64, 64, &palette, 65000, 65000, 16, 16, gif_literal_lzw({})));
  CHECK(offset.status().code() == StatusCode::kPayloadTooLarge);
}

TEST_CASE("a GIF's canvas grows to its first frame, as Pillow sizes it", "[vision]") {
  std::vector<uint8_t> palette(768, 0);
  for (int i = 0; i < 256; ++i) {
    palette[i * 3] = static_cast<uint8_t>(255 - i);
    palette[i * 3 + 1] = static_cast<uint8_t>(i / 2);
    palette[i * 3 + 2] = 9;
  }
  // A 4x4 screen, a 3x3 frame at (2, 3): the image is 5x6, index 0 where the frame is not.
  std::vector<uint8_t> indices = {10, 11, 12, 13, 14, 15, 16, 17, 18};
  auto decoded = decode_image(gif(4, 4, &palette, 2, 3, 3, 3, gif_literal_lzw(indices)));
  REQUIRE(decoded.ok());
  REQUIRE(decoded->width == 5);
  REQUIRE(decoded->height == 6);
  auto rgb = [&](int x, int y) {
    const uint8_t* p = decoded->row(y) + x * 3;
    return std::vector<int>{p[0], p[1], p[2]};
  };
  CHECK(rgb(0, 0) == std::vector<int>{255, 0, 9});
  CHECK(rgb(2, 3) == std::vector<int>{245, 5, 9});
  CHECK(rgb(4, 5) == std::vector<int>{237, 9, 9});
  CHECK(rgb(1, 5) == std::vector<int>{255, 0, 9});
}

TEST_CASE("a GIF without a palette is greyscale, as Pillow reads it", "[vision]") {
  std::vector<uint8_t> indices = {0, 7, 200, 255};
  auto decoded = decode_image(gif(2, 2, nullptr, 0, 0, 2, 2, gif_literal_lzw(indices)));
  REQUIRE(decoded.ok());
  CHECK(decoded->pixels == std::vector<uint8_t>{0, 0, 0, 7, 7, 7, 200, 200, 200, 255, 255, 255});
}

TEST_CASE("an animated WebP decodes to its first frame", "[vision]") {
  const int w = 7, h = 5;
  std::vector<uint8_t> first(w * h * 4), second(w * h * 4, 200);
  for (int i = 0; i < w * h; ++i) {
    first[i * 4] = static_cast<uint8_t>(i * 7);
    first[i * 4 + 1] = static_cast<uint8_t>(255 - i);
    first[i * 4 + 2] = static_cast<uint8_t>(i * 3 + 1);
    first[i * 4 + 3] = 255;
  }
  std::string webp = animated_webp(w, h, {first, second});
  auto header = probe_image(webp);
  REQUIRE(header.ok());
  CHECK(header->animated);
  auto decoded = decode_image(webp);
  REQUIRE(decoded.ok());
  REQUIRE(decoded->width == w);
  REQUIRE(decoded->height == h);
  std::vector<uint8_t> expected;
  for (int i = 0; i < w * h; ++i) expected.insert(expected.end(), &first[i * 4], &first[i * 4 + 3]);
  CHECK(decoded->pixels == expected);

  DecodeLimits small;
  small.max_pixels = w * h - 1;
  CHECK(decode_image(webp, small).status().code() == StatusCode::kPayloadTooLarge);
  // Truncated anywhere, it is refused as corrupt, never read past its end.
  for (size_t n = 0; n < webp.size(); n += 7) {
    auto cut = decode_image(webp.substr(0, n));
    REQUIRE_FALSE(cut.ok());
    CHECK(cut.status().code() == StatusCode::kInvalidArgument);
  }
}

TEST_CASE("a JPEG's repeated scans are bounded before libjpeg decodes them", "[vision][bomb]") {
  // Each scan of a progressive JPEG is a pass over the whole image and libjpeg only warns about
  // repeated ones: 271 KB with 1000 copies of a 6000x6000 page's last scan decoded for minutes.
  cv::Mat page(2000, 2000, CV_8UC3, cv::Scalar(120, 130, 140));
  std::vector<uint8_t> encoded;
  REQUIRE(cv::imencode(".jpg", page, encoded, {cv::IMWRITE_JPEG_PROGRESSIVE, 1}));
  const std::string jpeg(encoded.begin(), encoded.end());
  const size_t last_scan = jpeg.rfind("\xFF\xDA"), end = jpeg.rfind("\xFF\xD9");
  REQUIRE(last_scan < end);
  auto with_copies = [&](int copies) {
    std::string out = jpeg.substr(0, end);
    for (int i = 0; i < copies; ++i) out += jpeg.substr(last_scan, end - last_scan);
    return out + jpeg.substr(end);
  };
  auto header = probe_image(jpeg);
  REQUIRE(header.ok());
  const int scans = header->scans;
  CHECK(scans >= 2);
  CHECK(decode_image(jpeg).ok());

  std::string bomb = with_copies(1000);
  header = probe_image(bomb);
  REQUIRE(header.ok());
  CHECK(header->scans == scans + 1000);
  double seconds = 0;
  auto decoded = timed_decode(bomb, &seconds);
  REQUIRE_FALSE(decoded.ok());
  CHECK(decoded.status().code() == StatusCode::kPayloadTooLarge);
  CHECK(decoded.status().message().find("scans") != std::string::npos);
  CHECK(seconds < 1.0);

  // The budget is scans times pixels: a few extra scans of this 4 Mpx image still decode.
  DecodeLimits limits;
  limits.max_jpeg_scan_pixels = int64_t{2000} * 2000 * (scans + 3);
  CHECK(decode_image(with_copies(3), limits).ok());
  CHECK(decode_image(with_copies(4), limits).status().code() == StatusCode::kPayloadTooLarge);
}

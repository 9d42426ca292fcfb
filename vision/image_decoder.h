// Image decoding: encoded bytes (JPEG, PNG, WebP, BMP, TIFF, GIF) -> RgbImage, as the official
// pipeline sees them after `PIL.Image.open` -> `ImageOps.exif_transpose` -> `convert("RGB")`.
//
// * The container is sniffed from its magic bytes and its pixel size read from the header before
//   any pixel is decoded, so decompression bombs are refused for the price of a header read.
// * The size checked is the size the decoder will really allocate: libtiff itself reads a TIFF's
//   first IFD (and its strip or tile size, which OpenCV buffers whole), a GIF's canvas grows to
//   its first frame as in Pillow, a WebP's canvas bounds every frame. Nothing is allocated for
//   pixels before those sizes pass DecodeLimits, and decode time is bounded through them.
// * EXIF orientation (JPEG APP1, PNG eXIf, WebP EXIF, TIFF's own IFD) is applied exactly like
//   Pillow's exif_transpose (tags 2..8); the decoders' own orientation handling is disabled so
//   that every format goes through the same code.
// * Alpha is dropped (not composited), palettes and grey are expanded, CMYK is converted, 16-bit
//   samples keep their high byte. GIF: the first frame, through giflib. Animated WebP: the first
//   frame on its canvas (transparent black where it does not reach), as Pillow's WebPAnimDecoder
//   gives it.
//
// Known, deliberate deviation: Pillow clips 16-bit *greyscale* PNG samples to 255 when converting
// to RGB (a page comes out white); we keep the high byte like every other decoder. Documented in
// docs/vision.md.
//
// Thread-safety: free functions, safe to call concurrently.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"
#include "vision/image.h"

namespace dsocr::vision {

struct DecodeLimits {
  int64_t max_encoded_bytes = 32ll << 20;  // 32 MiB
  int64_t max_pixels = 40'000'000;         // a 300-dpi A3 page is ~17.4 Mpx
  int min_side = 1;
  // Decoding work of a JPEG: its scans times its pixels. Every scan is a pass over the whole
  // image, and a progressive JPEG can repeat scans at will (libjpeg only warns). Encoders write
  // at most ~10-20 scans; this allows 20 at the pixel limit and more for smaller images.
  int64_t max_jpeg_scan_pixels = 20 * max_pixels;
};

enum class ImageFormat { kJpeg, kPng, kGif, kBmp, kWebp, kTiff };
std::string_view image_format_name(ImageFormat format);

struct ImageHeader {
  ImageFormat format;
  int width = 0;  // as decoded, before EXIF orientation (a GIF: its canvas grown to frame 0)
  int height = 0;
  int orientation = 1;  // EXIF orientation tag, 1..8 (1 = as stored)
  // Pixels of the largest intermediate buffer the decoder allocates besides the image: a TIFF's
  // strip or tile, which can be declared far larger than the image. 0 where there is none.
  int64_t buffer_pixels = 0;
  int scans = 0;  // JPEG: the scans (SOS segments) in the file, which bound its decoding work
  bool animated = false;  // WebP with the animation flag: decoded frame by frame, first only
};

// Reads only the container headers (a TIFF's first IFD through libtiff, a GIF's blocks up to its
// first image descriptor). kInvalidArgument for unknown or malformed containers.
StatusOr<ImageHeader> probe_image(std::string_view bytes);

// Full decode with limits. Errors: kPayloadTooLarge (bytes, pixels or a decoder buffer over the
// limits, checked before any pixel is allocated), kInvalidArgument (unsupported, corrupt or
// truncated data, below the minimum size).
StatusOr<RgbImage> decode_image(std::string_view bytes, const DecodeLimits& limits = {});

// Applies an EXIF orientation (1..8) the way Pillow's exif_transpose does.
RgbImage apply_orientation(RgbImage image, int orientation);

}  // namespace dsocr::vision

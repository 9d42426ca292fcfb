#include "vision/image_decoder.h"

#include <gif_lib.h>
// libtiff's legacy int64/uint64 typedefs are deprecated and collide with OpenCV's own.
#define TIFF_DISABLE_DEPRECATED
#include <tiffio.h>
#include <webp/decode.h>
#include <webp/demux.h>
#include <webp/mux_types.h>

#include <algorithm>
#include <climits>
#include <cstdarg>
#include <cstring>
#include <memory>
#include <opencv2/core.hpp>
#include <opencv2/core/utils/logger.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <optional>

namespace dsocr::vision {
namespace {

// Bounds-checked reads from an untrusted buffer: out-of-range reads yield nullopt.
class ByteView {
 public:
  explicit ByteView(std::string_view bytes) : b_(bytes) {}
  size_t size() const { return b_.size(); }
  bool has(size_t offset, size_t n) const { return offset <= b_.size() && n <= b_.size() - offset; }
  std::optional<uint32_t> u8(size_t o) const {
    if (!has(o, 1)) return std::nullopt;
    return static_cast<uint8_t>(b_[o]);
  }
  std::optional<uint32_t> u16(size_t o, bool big_endian) const {
    if (!has(o, 2)) return std::nullopt;
    uint32_t a = static_cast<uint8_t>(b_[o]), b = static_cast<uint8_t>(b_[o + 1]);
    return big_endian ? (a << 8 | b) : (b << 8 | a);
  }
  std::optional<uint32_t> u24le(size_t o) const {
    if (!has(o, 3)) return std::nullopt;
    return static_cast<uint32_t>(static_cast<uint8_t>(b_[o])) |
           static_cast<uint32_t>(static_cast<uint8_t>(b_[o + 1])) << 8 |
           static_cast<uint32_t>(static_cast<uint8_t>(b_[o + 2])) << 16;
  }
  std::optional<uint32_t> u32(size_t o, bool big_endian) const {
    auto hi = u16(o, big_endian), lo = u16(o + 2, big_endian);
    if (!hi || !lo) return std::nullopt;
    return big_endian ? (*hi << 16 | *lo) : (*lo << 16 | *hi);
  }
  bool starts_with(size_t o, std::string_view magic) const {
    return has(o, magic.size()) && b_.substr(o, magic.size()) == magic;
  }
  std::string_view sub(size_t o, size_t n) const {
    if (o > b_.size()) return {};
    return b_.substr(o, n);
  }

 private:
  std::string_view b_;
};

Status corrupt(ImageFormat f, std::string_view what) {
  return invalid_argument(std::string("corrupt or truncated ") + std::string(image_format_name(f)) +
                          " image: " + std::string(what));
}

// The Orientation tag (0x0112) of IFD0 in a TIFF-structured block (a TIFF file or an EXIF
// payload after its "Exif\0\0" prefix). 1 when absent or unreadable: a broken EXIF block never
// fails a decode, as in Pillow.
int tiff_orientation(std::string_view tiff) {
  ByteView v(tiff);
  bool big;
  if (v.starts_with(0, "MM\0*")) {
    big = true;
  } else if (v.starts_with(0, std::string_view("II*\0", 4))) {
    big = false;
  } else {
    return 1;
  }
  auto ifd = v.u32(4, big);
  if (!ifd) return 1;
  auto count = v.u16(*ifd, big);
  if (!count) return 1;
  for (uint32_t i = 0; i < *count; ++i) {
    size_t entry = *ifd + 2 + static_cast<size_t>(i) * 12;
    auto tag = v.u16(entry, big), type = v.u16(entry + 2, big);
    if (!tag || !type) return 1;
    if (*tag != 0x0112) continue;
    std::optional<uint32_t> value;
    if (*type == 3)
      value = v.u16(entry + 8, big);  // SHORT
    else if (*type == 4)
      value = v.u32(entry + 8, big);  // LONG
    if (value && *value >= 1 && *value <= 8) return static_cast<int>(*value);
    return 1;
  }
  return 1;
}

int exif_orientation(std::string_view payload) {
  if (payload.substr(0, 6) == std::string_view("Exif\0\0", 6)) payload.remove_prefix(6);
  return tiff_orientation(payload);
}

// The scans (SOS segments) from the one at `sos` to the end of the image. Each scan of a
// progressive JPEG is a pass over every block of its components, so a few hundred kilobytes of
// repeated scans cost minutes of decoding; the count lets decode_image bound that work. Entropy-
// coded data is skipped the way libjpeg finds the next marker: 0xFF followed by anything but a
// stuffed zero, a restart marker or more fill bytes. Stops at EOI or where the data ends.
int count_jpeg_scans(const ByteView& v, size_t sos) {
  int scans = 0;
  size_t p = sos;  // at a marker's 0xFF
  while (p + 1 < v.size()) {
    uint32_t m = *v.u8(p + 1);
    if (m == 0xD9) break;
    auto len = v.u16(p + 2, true);
    if (!len || *len < 2) break;
    p += 2 + *len;
    if (m == 0xDA) ++scans;
    // Find the next marker: after a scan this skips its entropy-coded data; between segments,
    // libjpeg likewise skips stray bytes.
    for (;;) {
      auto ff = v.sub(p, std::string_view::npos).find('\xFF');
      if (ff == std::string_view::npos) return scans;
      p += ff;
      auto next = v.u8(p + 1);
      if (!next) return scans;
      if (*next == 0x00 || *next == 0xFF || (*next >= 0xD0 && *next <= 0xD7)) {
        p += *next == 0xFF ? 1 : 2;
        continue;
      }
      break;
    }
  }
  return scans;
}

StatusOr<ImageHeader> probe_jpeg(const ByteView& v) {
  ImageHeader h{ImageFormat::kJpeg};
  bool have_size = false, have_exif = false;
  size_t p = 2;
  while (p < v.size()) {
    if (*v.u8(p) != 0xFF) return corrupt(h.format, "bad marker");
    while (p < v.size() && *v.u8(p) == 0xFF) ++p;  // fill bytes
    auto marker = v.u8(p++);
    if (!marker) break;
    uint32_t m = *marker;
    if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;
    if (m == 0xDA && have_size) {  // the frame header and EXIF precede the first scan
      h.scans = count_jpeg_scans(v, p - 2);
      break;
    }
    if (m == 0xD9 || m == 0xDA) break;
    auto len = v.u16(p, true);
    if (!len || *len < 2 || !v.has(p, *len)) return corrupt(h.format, "segment past the end");
    bool sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
    if (sof && !have_size) {
      auto height = v.u16(p + 3, true), width = v.u16(p + 5, true);
      if (!height || !width) return corrupt(h.format, "short frame header");
      h.width = static_cast<int>(*width);
      h.height = static_cast<int>(*height);
      have_size = true;
    } else if (m == 0xE1 && !have_exif && v.starts_with(p + 2, std::string_view("Exif\0\0", 6))) {
      h.orientation = exif_orientation(v.sub(p + 2, *len - 2));
      have_exif = true;
    }
    p += *len;
  }
  if (!have_size) return corrupt(h.format, "no frame header");
  return h;
}

StatusOr<ImageHeader> probe_png(const ByteView& v) {
  ImageHeader h{ImageFormat::kPng};
  if (!v.starts_with(12, "IHDR")) return corrupt(h.format, "first chunk is not IHDR");
  auto w = v.u32(16, true), hh = v.u32(20, true);
  if (!w || !hh || *w > 0x7fffffff || *hh > 0x7fffffff) return corrupt(h.format, "bad IHDR");
  h.width = static_cast<int>(*w);
  h.height = static_cast<int>(*hh);
  for (size_t p = 8; v.has(p, 8);) {  // find an eXIf chunk anywhere
    auto len = v.u32(p, true);
    if (!len || !v.has(p + 8, *len)) break;
    if (v.starts_with(p + 4, "eXIf")) {
      h.orientation = exif_orientation(v.sub(p + 8, *len));
      break;
    }
    if (v.starts_with(p + 4, "IEND")) break;
    p += 12 + static_cast<size_t>(*len);
  }
  return h;
}

StatusOr<ImageHeader> probe_webp(const ByteView& v) {
  ImageHeader h{ImageFormat::kWebp};
  if (v.starts_with(12, "VP8 ")) {
    auto w = v.u16(26, false), hh = v.u16(28, false);
    if (!(v.u8(23) == 0x9d && v.u8(24) == 0x01 && v.u8(25) == 0x2a) || !w || !hh)
      return corrupt(h.format, "bad VP8 frame header");
    h.width = static_cast<int>(*w & 0x3fff);
    h.height = static_cast<int>(*hh & 0x3fff);
  } else if (v.starts_with(12, "VP8L")) {
    auto bits = v.u32(21, false);
    if (v.u8(20) != 0x2f || !bits) return corrupt(h.format, "bad VP8L header");
    h.width = static_cast<int>((*bits & 0x3fff) + 1);
    h.height = static_cast<int>(((*bits >> 14) & 0x3fff) + 1);
  } else if (v.starts_with(12, "VP8X")) {
    auto w = v.u24le(24), hh = v.u24le(27);
    if (!w || !hh) return corrupt(h.format, "short VP8X header");
    h.width = static_cast<int>(*w + 1);
    h.height = static_cast<int>(*hh + 1);
    h.animated = (*v.u8(20) & ANIMATION_FLAG) != 0;
    for (size_t p = 12; v.has(p, 8);) {
      auto len = v.u32(p + 4, false);
      if (!len || !v.has(p + 8, *len)) break;
      if (v.starts_with(p, "EXIF")) {
        h.orientation = exif_orientation(v.sub(p + 8, *len));
        break;
      }
      p += 8 + static_cast<size_t>(*len) + (*len & 1);
    }
  } else {
    return corrupt(h.format, "unknown chunk");
  }
  return h;
}

// The logical screen grown to cover the first frame, as Pillow sizes a GIF (so a tiny screen
// cannot hide a huge frame from the pixel limit): walks the blocks up to the first image
// descriptor, skipping extensions by their sub-block lengths.
StatusOr<ImageHeader> probe_gif(const ByteView& v) {
  ImageHeader h{ImageFormat::kGif};
  auto screen_w = v.u16(6, false), screen_h = v.u16(8, false), flags = v.u8(10);
  if (!screen_w || !screen_h || !flags || !v.has(0, 13)) return corrupt(h.format, "short header");
  size_t p = 13;
  if (*flags & 0x80) p += size_t{3} << ((*flags & 7) + 1);  // global colour table
  for (;;) {
    auto introducer = v.u8(p);
    if (!introducer) return corrupt(h.format, "no image frame");
    if (*introducer == ',') break;
    if (*introducer != '!') return corrupt(h.format, "bad block");
    p += 2;  // introducer, label
    for (;;) {
      auto len = v.u8(p);
      if (!len) return corrupt(h.format, "extension past the end");
      p += 1 + *len;
      if (*len == 0) break;
    }
  }
  auto left = v.u16(p + 1, false), top = v.u16(p + 3, false);
  auto frame_w = v.u16(p + 5, false), frame_h = v.u16(p + 7, false);
  if (!left || !top || !frame_w || !frame_h) return corrupt(h.format, "short image descriptor");
  h.width = static_cast<int>(std::max(*screen_w, *left + *frame_w));
  h.height = static_cast<int>(std::max(*screen_h, *top + *frame_h));
  return h;
}

// libtiff reads through this: a seekable cursor over the caller's buffer. Never mapped, as in
// OpenCV, so that both handles read the directory the same way.
struct TiffSource {
  std::string_view bytes;
  uint64_t offset = 0;
};

tmsize_t tiff_read(thandle_t handle, void* out, tmsize_t n) {
  auto* src = static_cast<TiffSource*>(handle);
  if (n <= 0 || src->offset >= src->bytes.size()) return 0;
  size_t take = std::min(static_cast<uint64_t>(n), src->bytes.size() - src->offset);
  std::memcpy(out, src->bytes.data() + src->offset, take);
  src->offset += take;
  return static_cast<tmsize_t>(take);
}

tmsize_t tiff_write(thandle_t, void*, tmsize_t) { return 0; }

toff_t tiff_seek(thandle_t handle, toff_t offset, int whence) {
  auto* src = static_cast<TiffSource*>(handle);
  uint64_t base = whence == SEEK_CUR ? src->offset : whence == SEEK_END ? src->bytes.size() : 0;
  // libtiff passes negative offsets as huge unsigned ones: wrap-around is the intended arithmetic.
  src->offset = base + offset;
  return src->offset;
}

int tiff_close(thandle_t) { return 0; }
toff_t tiff_size(thandle_t handle) { return static_cast<TiffSource*>(handle)->bytes.size(); }
int tiff_map(thandle_t, void**, toff_t*) { return 0; }
void tiff_unmap(thandle_t, void*, toff_t) {}

// Per-handle handlers (libtiff >= 4.5): returning 1 keeps messages away from the process-wide
// handlers, which would print them.
int tiff_quiet(TIFF*, void*, const char*, const char*, va_list) { return 1; }

// The first IFD as libtiff reads it, which is what OpenCV decodes: with duplicated tags, odd
// types or counts, libtiff's choice is the one that matters, so the size is read through it rather
// than by hand. OpenCV allocates one whole strip or tile (as RGBA) per read, and a tile can be
// declared far larger than the image; that area is reported as buffer_pixels.
StatusOr<ImageHeader> probe_tiff(std::string_view bytes) {
  ImageHeader h{ImageFormat::kTiff};
  TIFFOpenOptions* options = TIFFOpenOptionsAlloc();
  if (!options) return resource_exhausted("out of memory opening a TIFF image");
  TIFFOpenOptionsSetErrorHandlerExtR(options, tiff_quiet, nullptr);
  TIFFOpenOptionsSetWarningHandlerExtR(options, tiff_quiet, nullptr);
  // The directory's own arrays (strip offsets and counts, colour maps) never need this much for
  // an image under the pixel limit; anything bigger is a lie about the strip count.
  TIFFOpenOptionsSetMaxSingleMemAlloc(options, 64 << 20);
  TiffSource src{bytes};
  TIFF* tif = TIFFClientOpenExt("image", "r", &src, tiff_read, tiff_write, tiff_seek, tiff_close,
                                tiff_size, tiff_map, tiff_unmap, options);
  TIFFOpenOptionsFree(options);
  if (!tif) return corrupt(h.format, "libtiff cannot read the first directory");
  struct Closer {
    TIFF* t;
    ~Closer() { TIFFClose(t); }
  } closer{tif};
  uint32_t width = 0, height = 0;
  if (!TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, &width) ||
      !TIFFGetField(tif, TIFFTAG_IMAGELENGTH, &height) || width == 0 || height == 0 ||
      width > INT32_MAX || height > INT32_MAX)
    return corrupt(h.format, "no image size");
  h.width = static_cast<int>(width);
  h.height = static_cast<int>(height);
  // The strip or tile geometry exactly as OpenCV 4.6 derives it (grfmt_tiff.cpp, readData).
  uint32_t block_width = width, block_height = 0;
  if (TIFFIsTiled(tif)) {
    if (!TIFFGetField(tif, TIFFTAG_TILEWIDTH, &block_width) ||
        !TIFFGetField(tif, TIFFTAG_TILELENGTH, &block_height))
      return corrupt(h.format, "tiled without a tile size");
  } else {
    TIFFGetField(tif, TIFFTAG_ROWSPERSTRIP, &block_height);
  }
  if (block_width == 0) block_width = width;
  if (block_height == 0 || (!TIFFIsTiled(tif) && block_height == UINT32_MAX)) block_height = height;
  h.buffer_pixels = static_cast<int64_t>(block_width) * block_height;
  h.orientation = tiff_orientation(bytes);
  return h;
}

// giflib reads through this: a cursor over the caller's buffer.
struct GifSource {
  std::string_view bytes;
  size_t offset = 0;
};

int gif_read(GifFileType* gif, GifByteType* out, int n) {
  auto* src = static_cast<GifSource*>(gif->UserData);
  size_t take = std::min(static_cast<size_t>(std::max(n, 0)), src->bytes.size() - src->offset);
  std::memcpy(out, src->bytes.data() + src->offset, take);
  src->offset += take;
  return static_cast<int>(take);
}

// The first frame, as Pillow shows frame 0: the canvas (the logical screen grown to the frame),
// filled with the transparent index (or 0) where the frame does not cover it, mapped through the
// frame's (or the global) palette.
StatusOr<RgbImage> decode_gif_first_frame(std::string_view bytes, const ImageHeader& header) {
  GifSource src{bytes};
  int error = 0;
  GifFileType* gif = DGifOpen(&src, gif_read, &error);
  if (!gif) return corrupt(ImageFormat::kGif, GifErrorString(error) ? GifErrorString(error) : "");
  struct Closer {
    GifFileType* g;
    ~Closer() { DGifCloseFile(g, nullptr); }
  } closer{gif};
  auto fail = [&](std::string_view what) { return corrupt(ImageFormat::kGif, what); };

  int transparent = -1;
  GifRecordType record;
  do {
    if (DGifGetRecordType(gif, &record) == GIF_ERROR) return fail("bad record");
    if (record == EXTENSION_RECORD_TYPE) {
      int code;
      GifByteType* ext;
      if (DGifGetExtension(gif, &code, &ext) == GIF_ERROR) return fail("bad extension");
      if (code == GRAPHICS_EXT_FUNC_CODE && ext && ext[0] >= 4 && (ext[1] & 1))
        transparent = ext[4];
      while (ext) {
        if (DGifGetExtensionNext(gif, &ext) == GIF_ERROR) return fail("bad extension");
      }
    } else if (record == TERMINATE_RECORD_TYPE) {
      return fail("no image frame");
    }
  } while (record != IMAGE_DESC_RECORD_TYPE);
  if (DGifGetImageDesc(gif) == GIF_ERROR) return fail("bad image descriptor");

  const GifImageDesc& d = gif->Image;
  // The probe sized the canvas from the same descriptor; a disagreement means the two parsers
  // read different blocks, and nothing may be written past the canvas.
  if (d.Left < 0 || d.Top < 0 || d.Width < 0 || d.Height < 0 || d.Left + d.Width > header.width ||
      d.Top + d.Height > header.height)
    return fail("frame outside its canvas");
  const ColorMapObject* map = d.ColorMap ? d.ColorMap : gif->SColorMap;
  // Pillow reads a GIF without a palette, or whose palette is the identity grey ramp, as
  // greyscale: the index is the grey level, past the palette's entries too.
  bool grey = !map;
  if (map) {
    grey = true;
    for (int i = 0; i < map->ColorCount && grey; ++i) {
      const GifColorType& c = map->Colors[i];
      grey = c.Red == i && c.Green == i && c.Blue == i;
    }
  }
  std::vector<uint8_t> indices(static_cast<size_t>(header.width) * header.height,
                               static_cast<uint8_t>(transparent >= 0 ? transparent : 0));
  std::vector<GifPixelType> line(std::max(d.Width, 0));
  auto read_row = [&](int y) -> bool {
    if (DGifGetLine(gif, line.data(), d.Width) == GIF_ERROR) return false;
    std::copy(line.begin(), line.end(),
              indices.begin() + static_cast<size_t>(d.Top + y) * header.width + d.Left);
    return true;
  };
  if (d.Width == 0) {
    // An empty frame has no pixel data to read; the canvas keeps its fill.
  } else if (d.Interlace) {
    static constexpr int kStart[4] = {0, 4, 2, 1}, kStep[4] = {8, 8, 4, 2};
    for (int pass = 0; pass < 4; ++pass)
      for (int y = kStart[pass]; y < d.Height; y += kStep[pass])
        if (!read_row(y)) return fail("truncated pixel data");
  } else {
    for (int y = 0; y < d.Height; ++y)
      if (!read_row(y)) return fail("truncated pixel data");
  }
  RgbImage out(header.width, header.height);
  for (size_t i = 0; i < indices.size(); ++i) {
    int idx = indices[i];
    uint8_t* px = &out.pixels[i * 3];
    if (grey) {
      px[0] = px[1] = px[2] = static_cast<uint8_t>(idx);
    } else if (idx < map->ColorCount) {
      px[0] = map->Colors[idx].Red;
      px[1] = map->Colors[idx].Green;
      px[2] = map->Colors[idx].Blue;
    } else {
      px[0] = px[1] = px[2] = 0;  // Pillow's palette is zero past the file's entries
    }
  }
  return out;
}

// An animated WebP's first frame, as Pillow's WebPAnimDecoder composes it: the frame decoded as
// RGBA onto a transparent black canvas, and alpha then dropped by convert("RGB"). The first frame
// is always a key frame, so no blending or disposal applies. The demuxer has checked that every
// frame lies inside the canvas, whose size the caller has checked against the limits.
StatusOr<RgbImage> decode_webp_first_frame(std::string_view bytes, const ImageHeader& header) {
  auto fail = [&](std::string_view what) { return corrupt(ImageFormat::kWebp, what); };
  WebPData data{reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()};
  std::unique_ptr<WebPDemuxer, decltype(&WebPDemuxDelete)> demux(WebPDemux(&data), WebPDemuxDelete);
  if (!demux) return fail("bad animation container");
  if (static_cast<int64_t>(WebPDemuxGetI(demux.get(), WEBP_FF_CANVAS_WIDTH)) != header.width ||
      static_cast<int64_t>(WebPDemuxGetI(demux.get(), WEBP_FF_CANVAS_HEIGHT)) != header.height)
    return fail("canvas size differs from the header");
  WebPIterator frame;
  if (!WebPDemuxGetFrame(demux.get(), 1, &frame)) return fail("no frame");
  struct IteratorReleaser {
    WebPIterator* it;
    ~IteratorReleaser() { WebPDemuxReleaseIterator(it); }
  } releaser{&frame};
  if (frame.x_offset < 0 || frame.y_offset < 0 || frame.width <= 0 || frame.height <= 0 ||
      frame.x_offset + frame.width > header.width || frame.y_offset + frame.height > header.height)
    return fail("frame outside its canvas");

  WebPDecoderConfig config;
  if (!WebPInitDecoderConfig(&config)) return internal_error("libwebp version mismatch");
  config.output.colorspace = MODE_RGBA;
  if (WebPDecode(frame.fragment.bytes, frame.fragment.size, &config) != VP8_STATUS_OK)
    return fail("bad frame bitstream");
  struct BufferReleaser {
    WebPDecBuffer* b;
    ~BufferReleaser() { WebPFreeDecBuffer(b); }
  } buffer_releaser{&config.output};
  const WebPRGBABuffer& rgba = config.output.u.RGBA;
  if (config.output.width != frame.width || config.output.height != frame.height)
    return fail("frame size differs from its header");

  RgbImage out(header.width, header.height, 0);
  for (int y = 0; y < frame.height; ++y) {
    const uint8_t* src = rgba.rgba + static_cast<size_t>(y) * rgba.stride;
    uint8_t* dst = out.row(frame.y_offset + y) + static_cast<size_t>(frame.x_offset) * 3;
    for (int x = 0; x < frame.width; ++x, src += 4, dst += 3) {
      dst[0] = src[0];
      dst[1] = src[1];
      dst[2] = src[2];
    }
  }
  return out;
}

// A JPEG without an end-of-image marker after its first scan is truncated: libjpeg would pad it
// with grey and report success, Pillow refuses it.
bool jpeg_has_end_marker(std::string_view bytes) {
  size_t sos = bytes.find("\xFF\xDA");
  if (sos == std::string_view::npos) return false;
  size_t eoi = bytes.rfind("\xFF\xD9");
  return eoi != std::string_view::npos && eoi > sos;
}

StatusOr<RgbImage> decode_with_opencv(std::string_view bytes, const ImageHeader& header) {
  if (header.format == ImageFormat::kJpeg && !jpeg_has_end_marker(bytes))
    return corrupt(header.format, "no end-of-image marker");
  cv::Mat buffer(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<char*>(bytes.data()));
  cv::Mat bgr;
  try {
    bgr = cv::imdecode(buffer, cv::IMREAD_COLOR | cv::IMREAD_IGNORE_ORIENTATION);
  } catch (const cv::Exception& e) {
    return corrupt(header.format, e.what());
  }
  if (bgr.empty()) return corrupt(header.format, "the decoder rejected it");
  if (bgr.cols != header.width || bgr.rows != header.height)
    return corrupt(header.format, "decoded size differs from the header");
  if (bgr.depth() != CV_8U) bgr.convertTo(bgr, CV_8U, 1.0 / 256.0);
  RgbImage out(bgr.cols, bgr.rows);
  cv::Mat rgb(bgr.rows, bgr.cols, CV_8UC3, out.pixels.data());
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return out;
}

void silence_opencv_logging() {
  static const bool once = [] {
    cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_SILENT);
    return true;
  }();
  (void)once;
}

}  // namespace

std::string_view image_format_name(ImageFormat format) {
  switch (format) {
    case ImageFormat::kJpeg:
      return "JPEG";
    case ImageFormat::kPng:
      return "PNG";
    case ImageFormat::kGif:
      return "GIF";
    case ImageFormat::kBmp:
      return "BMP";
    case ImageFormat::kWebp:
      return "WebP";
    case ImageFormat::kTiff:
      return "TIFF";
  }
  return "unknown";
}

StatusOr<ImageHeader> probe_image(std::string_view bytes) {
  ByteView v(bytes);
  if (v.starts_with(0, "\xFF\xD8\xFF")) return probe_jpeg(v);
  if (v.starts_with(0, "\x89PNG\r\n\x1a\n")) return probe_png(v);
  if (v.starts_with(0, "GIF87a") || v.starts_with(0, "GIF89a")) return probe_gif(v);
  if (v.starts_with(0, "BM")) {
    auto dib = v.u32(14, false);
    if (!dib) return corrupt(ImageFormat::kBmp, "short header");
    if (*dib == 12) {
      auto w = v.u16(18, false), h = v.u16(20, false);
      if (!w || !h) return corrupt(ImageFormat::kBmp, "short header");
      return ImageHeader{ImageFormat::kBmp, static_cast<int>(*w), static_cast<int>(*h)};
    }
    auto w = v.u32(18, false), h = v.u32(22, false);
    if (!w || !h) return corrupt(ImageFormat::kBmp, "short header");
    int64_t width = static_cast<int32_t>(*w), height = static_cast<int32_t>(*h);
    if (height < 0) height = -height;
    if (width <= 0 || width > INT32_MAX || height > INT32_MAX)
      return corrupt(ImageFormat::kBmp, "bad size");
    return ImageHeader{ImageFormat::kBmp, static_cast<int>(width), static_cast<int>(height)};
  }
  if (v.starts_with(0, "RIFF") && v.starts_with(8, "WEBP")) return probe_webp(v);
  if (v.starts_with(0, std::string_view("II*\0", 4)) || v.starts_with(0, "MM\0*"))
    return probe_tiff(bytes);
  return invalid_argument("unsupported image format (expected JPEG, PNG, WebP, BMP, TIFF or GIF)");
}

RgbImage apply_orientation(RgbImage image, int orientation) {
  if (orientation <= 1 || orientation > 8 || image.empty()) return image;
  cv::Mat src(image.height, image.width, CV_8UC3, image.pixels.data());
  cv::Mat dst;
  switch (orientation) {
    case 2:
      cv::flip(src, dst, 1);
      break;  // FLIP_LEFT_RIGHT
    case 3:
      cv::rotate(src, dst, cv::ROTATE_180);
      break;  // ROTATE_180
    case 4:
      cv::flip(src, dst, 0);
      break;  // FLIP_TOP_BOTTOM
    case 5:
      cv::transpose(src, dst);
      break;  // TRANSPOSE
    case 6:
      cv::rotate(src, dst, cv::ROTATE_90_CLOCKWISE);
      break;  // ROTATE_270
    case 7:
      cv::transpose(src, dst);
      cv::flip(dst, dst, -1);
      break;  // TRANSVERSE
    case 8:
      cv::rotate(src, dst, cv::ROTATE_90_COUNTERCLOCKWISE);
      break;  // ROTATE_90
  }
  RgbImage out(dst.cols, dst.rows);
  cv::Mat wrapped(dst.rows, dst.cols, CV_8UC3, out.pixels.data());
  dst.copyTo(wrapped);  // same size and type: writes into `out`
  return out;
}

StatusOr<RgbImage> decode_image(std::string_view bytes, const DecodeLimits& limits) {
  silence_opencv_logging();
  if (bytes.empty()) return invalid_argument("empty image data");
  if (static_cast<int64_t>(bytes.size()) > limits.max_encoded_bytes)
    return payload_too_large("image is " + std::to_string(bytes.size()) +
                             " bytes, over the limit of " +
                             std::to_string(limits.max_encoded_bytes));
  DSOCR_ASSIGN_OR_RETURN(ImageHeader header, probe_image(bytes));
  int64_t pixels = static_cast<int64_t>(header.width) * header.height;
  if (pixels > limits.max_pixels)
    return payload_too_large(std::string(image_format_name(header.format)) + " image is " +
                             std::to_string(header.width) + "x" + std::to_string(header.height) +
                             " pixels, over the limit of " + std::to_string(limits.max_pixels) +
                             " pixels");
  if (header.width < limits.min_side || header.height < limits.min_side)
    return invalid_argument("image is " + std::to_string(header.width) + "x" +
                            std::to_string(header.height) + " pixels; the minimum side is " +
                            std::to_string(limits.min_side));
  if (header.scans > 1 && header.scans * pixels > limits.max_jpeg_scan_pixels)
    return payload_too_large("JPEG image has " + std::to_string(header.scans) + " scans of " +
                             std::to_string(pixels) + " pixels, over the decoding budget of " +
                             std::to_string(limits.max_jpeg_scan_pixels) + " scan-pixels");
  if (header.buffer_pixels > limits.max_pixels)
    return payload_too_large(std::string(image_format_name(header.format)) + " image declares " +
                             std::to_string(header.buffer_pixels) +
                             "-pixel strips or tiles, over the limit of " +
                             std::to_string(limits.max_pixels) + " pixels");
  StatusOr<RgbImage> decoded = header.format == ImageFormat::kGif
                                   ? decode_gif_first_frame(bytes, header)
                               : header.animated ? decode_webp_first_frame(bytes, header)
                                                 : decode_with_opencv(bytes, header);
  if (!decoded.ok()) return decoded.status();
  return apply_orientation(std::move(decoded).value(), header.orientation);
}

}  // namespace dsocr::vision

// libFuzzer target: a full decode under small limits must answer any bytes with a Status and
// never crash, leak, hang or allocate past what the limits allow (scripts/fuzz.sh runs it with
// AddressSanitizer, UBSan, -rss_limit_mb and -malloc_limit_mb). What it accepts must be an image
// within the limits.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "vision/image_decoder.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dsocr::vision::DecodeLimits limits;
  limits.max_pixels = 4'000'000;
  limits.max_encoded_bytes = 1 << 20;
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto image = dsocr::vision::decode_image(bytes, limits);
  if (image.ok()) {
    const int64_t pixels = static_cast<int64_t>(image->width) * image->height;
    if (image->width <= 0 || image->height <= 0 || pixels > limits.max_pixels ||
        image->pixels.size() != static_cast<size_t>(pixels) * 3)
      __builtin_trap();
  }
  return 0;
}

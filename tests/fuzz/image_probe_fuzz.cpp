// libFuzzer target: the container probe must answer any bytes with a Status, never crash or read
// out of bounds, and whatever it accepts must be a plausible header (scripts/fuzz.sh builds it
// with AddressSanitizer and UBSan).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "vision/image_decoder.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto header = dsocr::vision::probe_image(bytes);
  if (header.ok()) {
    if (header->width < 0 || header->height < 0 || header->buffer_pixels < 0 ||
        header->orientation < 1 || header->orientation > 8)
      __builtin_trap();
  }
  return 0;
}

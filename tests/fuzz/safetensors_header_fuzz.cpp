// libFuzzer target: the safetensors header parser must answer any bytes with a Status, never
// crash, hang or read out of bounds (built with AddressSanitizer by scripts/fuzz.sh).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "weights/safetensors_format.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view file(reinterpret_cast<const char*>(data), size);
  auto header = dsocr::weights::parse_safetensors_header(file, "fuzz.safetensors");
  if (header.ok()) {
    // Whatever it accepts must be self-consistent: every tensor inside the data buffer.
    for (const auto& t : header->tensors) {
      if (t.end > header->data_size || t.begin > t.end) __builtin_trap();
    }
  }
  return 0;
}

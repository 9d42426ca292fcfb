// The safetensors file format, torch-free: header parsing and validation, and header writing.
//
// A file is: 8 bytes little-endian N, N bytes of JSON header, then the data buffer. The header maps
// tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the
// buffer) plus an optional "__metadata__" string map. parse_safetensors_header() checks
// everything a reader relies on, as the reference `safetensors` library does: the header fits the
// file, dtypes are known, sizes match shapes, offsets are in range and tile the buffer exactly (no
// overlap, no hole). Any violation is a DATA_LOSS or INVALID_ARGUMENT Status naming the file and,
// where there is one, the tensor — never a crash (a libFuzzer target checks this).
//
// Thread-safety: pure functions over immutable inputs.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace dsocr::weights {

enum class DType {
  kBool,
  kU8,
  kI8,
  kU16,
  kI16,
  kU32,
  kI32,
  kU64,
  kI64,
  kF16,
  kBF16,
  kF32,
  kF64,
  kF8E4M3,
  kF8E5M2
};

std::string_view dtype_name(DType dtype);  // "BF16"
std::optional<DType> parse_dtype(std::string_view name);
int64_t dtype_size(DType dtype);  // bytes per element

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data buffer
  uint64_t end = 0;
  int64_t numel() const;
};

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // in data-offset order
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // file offset of the data buffer (8 + header length)
  uint64_t data_size = 0;
  const TensorInfo* find(std::string_view name) const;
};

// Limit of the reference implementation: larger headers are refused.
inline constexpr uint64_t kMaxHeaderBytes = 100u << 20;

// `file` is the whole file (typically a memory mapping); `file_name` is used in messages.
StatusOr<SafetensorsHeader> parse_safetensors_header(std::string_view file,
                                                     std::string_view file_name);

// The first 8 + N bytes of a file holding these tensors, laid out back to back in the given
// order (offsets are assigned here), the header padded with spaces to a multiple of 8 bytes so
// the data buffer starts aligned.
std::string make_safetensors_header(std::vector<TensorInfo>* tensors,
                                    const std::map<std::string, std::string>& metadata);

}  // namespace dsocr::weights

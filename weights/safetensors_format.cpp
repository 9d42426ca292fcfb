#include "weights/safetensors_format.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

namespace dsocr::weights {
namespace {

using json = nlohmann::json;

struct DTypeEntry {
  DType dtype;
  std::string_view name;
  int64_t size;
};

constexpr DTypeEntry kDTypes[] = {
    {DType::kBool, "BOOL", 1}, {DType::kU8, "U8", 1},          {DType::kI8, "I8", 1},
    {DType::kU16, "U16", 2},   {DType::kI16, "I16", 2},        {DType::kU32, "U32", 4},
    {DType::kI32, "I32", 4},   {DType::kU64, "U64", 8},        {DType::kI64, "I64", 8},
    {DType::kF16, "F16", 2},   {DType::kBF16, "BF16", 2},      {DType::kF32, "F32", 4},
    {DType::kF64, "F64", 8},   {DType::kF8E4M3, "F8_E4M3", 1}, {DType::kF8E5M2, "F8_E5M2", 1},
};

}  // namespace

std::string_view dtype_name(DType dtype) {
  for (const auto& e : kDTypes) {
    if (e.dtype == dtype) return e.name;
  }
  return "?";
}

std::optional<DType> parse_dtype(std::string_view name) {
  for (const auto& e : kDTypes) {
    if (e.name == name) return e.dtype;
  }
  return std::nullopt;
}

int64_t dtype_size(DType dtype) {
  for (const auto& e : kDTypes) {
    if (e.dtype == dtype) return e.size;
  }
  return 0;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const TensorInfo* SafetensorsHeader::find(std::string_view name) const {
  for (const auto& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

StatusOr<SafetensorsHeader> parse_safetensors_header(std::string_view file,
                                                     std::string_view file_name) {
  const std::string where(file_name);
  if (file.size() < 8) {
    return data_loss(where + ": " + std::to_string(file.size()) +
                     " bytes is too short for a safetensors file (truncated?)");
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(file[i]);
  if (header_len > kMaxHeaderBytes) {
    return data_loss(where + ": header length " + std::to_string(header_len) +
                     " exceeds the 100 MiB limit (not a safetensors file?)");
  }
  if (header_len > file.size() - 8) {
    return data_loss(where + ": header length " + std::to_string(header_len) +
                     " is larger than the file (" + std::to_string(file.size()) +
                     " bytes; truncated?)");
  }
  json header = json::parse(file.substr(8, header_len), nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return data_loss(where + ": the header is not a JSON object");
  }
  SafetensorsHeader out;
  out.data_start = 8 + header_len;
  out.data_size = file.size() - out.data_start;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) return data_loss(where + ": __metadata__ is not an object");
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string()) {
          return data_loss(where + ": __metadata__['" + m.key() + "'] is not a string");
        }
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string tensor = where + ": tensor '" + name + "'";
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets")) {
      return data_loss(tensor + ": needs dtype, shape and data_offsets");
    }
    TensorInfo info;
    info.name = name;
    if (!entry["dtype"].is_string()) return data_loss(tensor + ": dtype is not a string");
    auto dtype = parse_dtype(entry["dtype"].get<std::string>());
    if (!dtype) {
      return invalid_argument(tensor + ": unknown dtype '" + entry["dtype"].get<std::string>() +
                              "'");
    }
    info.dtype = *dtype;
    const json& shape = entry["shape"];
    if (!shape.is_array() || shape.size() > 16) return data_loss(tensor + ": bad shape");
    uint64_t numel = 1;
    for (const auto& d : shape) {
      if (!d.is_number_unsigned()) return data_loss(tensor + ": shape has a non-natural entry");
      uint64_t dim = d.get<uint64_t>();
      if (dim > (1ull << 40) || (dim != 0 && numel > (1ull << 50) / dim)) {
        return data_loss(tensor + ": shape is impossibly large");
      }
      numel *= dim;
      info.shape.push_back(static_cast<int64_t>(dim));
    }
    const json& offsets = entry["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned()) {
      return data_loss(tensor + ": data_offsets must be two natural numbers");
    }
    info.begin = offsets[0].get<uint64_t>();
    info.end = offsets[1].get<uint64_t>();
    if (info.begin > info.end || info.end > out.data_size) {
      return data_loss(tensor + ": data_offsets [" + std::to_string(info.begin) + ", " +
                       std::to_string(info.end) + "] outside the " + std::to_string(out.data_size) +
                       "-byte data buffer (truncated file?)");
    }
    if (info.end - info.begin != numel * static_cast<uint64_t>(dtype_size(info.dtype))) {
      return data_loss(tensor + ": " + std::to_string(info.end - info.begin) +
                       " bytes do not hold its shape and dtype");
    }
    out.tensors.push_back(std::move(info));
  }
  std::sort(out.tensors.begin(), out.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected = 0;
  for (const auto& t : out.tensors) {
    if (t.begin != expected) {
      return data_loss(
          where + ": tensor '" + t.name + "' " +
          (t.begin < expected ? "overlaps the previous tensor" : "leaves a gap before it") +
          " in the data buffer");
    }
    expected = t.end;
  }
  if (expected != out.data_size) {
    return data_loss(where + ": the data buffer has " + std::to_string(out.data_size - expected) +
                     " bytes no tensor uses");
  }
  return out;
}

std::string make_safetensors_header(std::vector<TensorInfo>* tensors,
                                    const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (auto& t : *tensors) {
    t.begin = offset;
    t.end = offset + static_cast<uint64_t>(t.numel() * dtype_size(t.dtype));
    offset = t.end;
    header[t.name] = {
        {"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {t.begin, t.end}}};
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');
  std::string out(8, '\0');
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out + text;
}

}  // namespace dsocr::weights

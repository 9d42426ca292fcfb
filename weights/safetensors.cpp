#include "weights/safetensors.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

namespace dsocr::weights {
namespace fs = std::filesystem;

at::ScalarType to_scalar_type(DType dtype) {
  switch (dtype) {
    case DType::kBool:
      return at::kBool;
    case DType::kU8:
      return at::kByte;
    case DType::kI8:
      return at::kChar;
    case DType::kU16:
      return at::kUInt16;
    case DType::kI16:
      return at::kShort;
    case DType::kU32:
      return at::kUInt32;
    case DType::kI32:
      return at::kInt;
    case DType::kU64:
      return at::kUInt64;
    case DType::kI64:
      return at::kLong;
    case DType::kF16:
      return at::kHalf;
    case DType::kBF16:
      return at::kBFloat16;
    case DType::kF32:
      return at::kFloat;
    case DType::kF64:
      return at::kDouble;
    case DType::kF8E4M3:
      return at::kFloat8_e4m3fn;
    case DType::kF8E5M2:
      return at::kFloat8_e5m2;
  }
  return at::kFloat;
}

StatusOr<DType> from_scalar_type(at::ScalarType type) {
  for (DType d : {DType::kBool, DType::kU8, DType::kI8, DType::kU16, DType::kI16, DType::kU32,
                  DType::kI32, DType::kU64, DType::kI64, DType::kF16, DType::kBF16, DType::kF32,
                  DType::kF64, DType::kF8E4M3, DType::kF8E5M2}) {
    if (to_scalar_type(d) == type) return d;
  }
  return invalid_argument(std::string("dtype ") + c10::toString(type) + " has no safetensors name");
}

// ---- SafetensorsFile ----

struct SafetensorsFile::Mapping {
  void* addr = MAP_FAILED;
  size_t size = 0;
  ~Mapping() {
    if (addr != MAP_FAILED && size > 0) munmap(addr, size);
  }
};

SafetensorsFile::~SafetensorsFile() = default;

StatusOr<std::shared_ptr<const SafetensorsFile>> SafetensorsFile::open(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return errno == ENOENT
               ? not_found("checkpoint file " + path.string() + " does not exist")
               : data_loss("cannot open " + path.string() + ": " + std::strerror(errno));
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return invalid_argument(path.string() + " is not a regular file");
  }
  auto mapping = std::make_shared<Mapping>();
  mapping->size = static_cast<size_t>(st.st_size);
  if (mapping->size > 0) {
    // Private and writable: code that writes into a zero-copy tensor gets its own copy of the
    // page instead of a crash, and the file is never modified.
    mapping->addr = mmap(nullptr, mapping->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  }
  int saved_errno = errno;
  ::close(fd);
  if (mapping->size > 0 && mapping->addr == MAP_FAILED) {
    return data_loss("cannot map " + path.string() + ": " + std::strerror(saved_errno));
  }
  const char* base = mapping->size ? static_cast<const char*>(mapping->addr) : "";
  DSOCR_ASSIGN_OR_RETURN(
      SafetensorsHeader header,
      parse_safetensors_header(std::string_view(base, mapping->size), path.string()));
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->header_ = std::move(header);
  file->mapping_ = std::move(mapping);
  file->data_ = base;
  return std::shared_ptr<const SafetensorsFile>(std::move(file));
}

StatusOr<at::Tensor> SafetensorsFile::tensor(std::string_view name) const {
  const TensorInfo* info = header_.find(name);
  if (info == nullptr) {
    return not_found("tensor '" + std::string(name) + "' is not in " + path_.string());
  }
  return tensor(*info);
}

StatusOr<at::Tensor> SafetensorsFile::tensor(const TensorInfo& info) const {
  const char* ptr = data_ + header_.data_start + info.begin;
  const auto options = at::TensorOptions().dtype(to_scalar_type(info.dtype)).device(at::kCPU);
  if (info.numel() == 0) return at::empty(info.shape, options);
  if (reinterpret_cast<uintptr_t>(ptr) % static_cast<uintptr_t>(dtype_size(info.dtype)) != 0) {
    // Misaligned for its element type: one copy into aligned memory.
    at::Tensor copy = at::empty(info.shape, options);
    std::memcpy(copy.data_ptr(), ptr, info.end - info.begin);
    return copy;
  }
  auto owner = new std::shared_ptr<Mapping>(mapping_);  // released by the tensor's deleter
  return at::from_blob(
      const_cast<char*>(ptr), info.shape, [owner](void*) { delete owner; }, options);
}

bool SafetensorsFile::release_pages(const void* data, size_t bytes) const {
  const auto base = reinterpret_cast<uintptr_t>(data_);
  const auto begin = reinterpret_cast<uintptr_t>(data), end = begin + bytes;
  if (mapping_->size == 0 || begin < base || end > base + mapping_->size) return false;
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t first = (begin + page - 1) / page * page, last = end / page * page;
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
  return true;
}

// ---- StateDict ----

StatusOr<StateDict> StateDict::open(const fs::path& path) {
  std::error_code ec;
  fs::path target = path;
  if (fs::is_directory(path, ec)) {
    if (fs::exists(path / "model.safetensors.index.json", ec)) {
      target = path / "model.safetensors.index.json";
    } else if (fs::exists(path / "model.safetensors", ec)) {
      target = path / "model.safetensors";
    } else {
      std::vector<fs::path> found;
      for (const auto& e : fs::directory_iterator(path, ec)) {
        if (e.path().extension() == ".safetensors") found.push_back(e.path());
      }
      if (found.size() != 1) {
        return not_found(path.string() + " has no model.safetensors.index.json and " +
                         std::to_string(found.size()) + " .safetensors files (need exactly one)");
      }
      target = found.front();
    }
  }
  StateDict dict;
  if (target.extension() == ".json") {
    std::ifstream in(target);
    if (!in) return not_found("cannot open " + target.string());
    auto index = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (index.is_discarded() || !index.is_object() || !index.contains("weight_map") ||
        !index["weight_map"].is_object()) {
      return data_loss(target.string() + ": not a safetensors index (no weight_map object)");
    }
    std::map<std::string, std::shared_ptr<const SafetensorsFile>> shards;
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
      if (!it.value().is_string())
        return data_loss(target.string() + ": bad weight_map entry '" + it.key() + "'");
      const std::string shard = it.value().get<std::string>();
      if (shard.find('/') != std::string::npos || shard == "..") {
        return data_loss(target.string() + ": shard name '" + shard + "' leaves the directory");
      }
      if (!shards.count(shard)) {
        DSOCR_ASSIGN_OR_RETURN(shards[shard], SafetensorsFile::open(target.parent_path() / shard));
      }
      const auto& file = shards[shard];
      const TensorInfo* info = file->header().find(it.key());
      if (info == nullptr) {
        return data_loss("tensor '" + it.key() + "' is listed in " + target.filename().string() +
                         " but missing from shard " + shard);
      }
      dict.entries_.emplace(it.key(), Entry{file, info});
    }
    for (const auto& [name, file] : shards) dict.files_.push_back(file);
    if (index.contains("metadata") && index["metadata"].is_object()) {
      for (auto m = index["metadata"].begin(); m != index["metadata"].end(); ++m) {
        dict.metadata_[m.key()] =
            m.value().is_string() ? m.value().get<std::string>() : m.value().dump();
      }
    }
    return dict;
  }
  DSOCR_ASSIGN_OR_RETURN(auto file, SafetensorsFile::open(target));
  for (const auto& info : file->header().tensors)
    dict.entries_.emplace(info.name, Entry{file, &info});
  dict.files_.push_back(file);
  dict.metadata_ = file->header().metadata;
  return dict;
}

std::vector<std::string> StateDict::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& [name, entry] : entries_) out.push_back(name);
  return out;
}

const TensorInfo* StateDict::info(std::string_view name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : it->second.info;
}

StatusOr<at::Tensor> StateDict::get(std::string_view name) const {
  auto it = entries_.find(name);
  if (it == entries_.end())
    return not_found("the checkpoint has no tensor '" + std::string(name) + "'");
  return it->second.file->tensor(*it->second.info);
}

void StateDict::release_pages(const at::Tensor& view) const {
  if (!view.defined() || !view.is_cpu() || !view.is_contiguous()) return;
  for (const auto& file : files_) {
    if (file->release_pages(view.data_ptr(), view.nbytes())) return;
  }
}

// ---- SafetensorsWriter ----

StatusOr<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::create(
    const fs::path& path, std::vector<TensorInfo> tensors,
    const std::map<std::string, std::string>& metadata) {
  std::set<std::string> seen;
  for (const auto& t : tensors) {
    if (!seen.insert(t.name).second) return invalid_argument("tensor '" + t.name + "' given twice");
    for (int64_t d : t.shape) {
      if (d < 0) return invalid_argument("tensor '" + t.name + "' has a negative dimension");
    }
  }
  std::unique_ptr<SafetensorsWriter> w(new SafetensorsWriter());
  w->path_ = path;
  std::string header = make_safetensors_header(&tensors, metadata);
  w->tensors_ = std::move(tensors);
  w->file_ = std::fopen(path.c_str(), "wb");
  if (w->file_ == nullptr) {
    return unavailable("cannot create " + path.string() + ": " + std::strerror(errno));
  }
  if (std::fwrite(header.data(), 1, header.size(), w->file_) != header.size()) {
    return unavailable("cannot write " + path.string() + ": " + std::strerror(errno));
  }
  return w;
}

SafetensorsWriter::~SafetensorsWriter() {
  if (file_) std::fclose(file_);
}

Status SafetensorsWriter::write(const at::Tensor& tensor) {
  if (next_ >= tensors_.size())
    return failed_precondition(path_.string() + ": more tensors than declared");
  const TensorInfo& spec = tensors_[next_];
  if (tensor.sizes().vec() != spec.shape || tensor.scalar_type() != to_scalar_type(spec.dtype)) {
    return invalid_argument("tensor '" + spec.name +
                            "': shape or dtype differs from its declaration");
  }
  at::Tensor data = tensor.to(at::kCPU).contiguous();
  size_t bytes = static_cast<size_t>(data.numel()) * data.element_size();
  if (bytes > 0 && std::fwrite(data.data_ptr(), 1, bytes, file_) != bytes) {
    return unavailable("cannot write " + path_.string() + ": " + std::strerror(errno));
  }
  ++next_;
  return Status();
}

Status SafetensorsWriter::finish() {
  if (next_ != tensors_.size()) {
    return failed_precondition(path_.string() + ": " + std::to_string(tensors_.size() - next_) +
                               " declared tensors were not written");
  }
  int rc = std::fclose(file_);
  file_ = nullptr;
  if (rc != 0) return unavailable("cannot close " + path_.string() + ": " + std::strerror(errno));
  return Status();
}

Status write_safetensors(const fs::path& path, const std::map<std::string, at::Tensor>& tensors,
                         const std::map<std::string, std::string>& metadata) {
  std::vector<TensorInfo> specs;
  for (const auto& [name, t] : tensors) {
    DSOCR_ASSIGN_OR_RETURN(DType dtype, from_scalar_type(t.scalar_type()));
    specs.push_back({name, dtype, t.sizes().vec()});
  }
  DSOCR_ASSIGN_OR_RETURN(auto writer, SafetensorsWriter::create(path, specs, metadata));
  for (const auto& [name, t] : tensors) DSOCR_RETURN_IF_ERROR(writer->write(t));
  return writer->finish();
}

}  // namespace dsocr::weights

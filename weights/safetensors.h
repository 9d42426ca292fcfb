// Reading and writing safetensors checkpoints with libtorch tensors.
//
// SafetensorsFile maps a file read-only (copy-on-write) and hands out zero-copy tensors over the
// mapping: each tensor holds a reference to the mapping, which stays alive as long as any tensor
// does. StateDict is the union of a checkpoint's files: one .safetensors file, or the shards
// listed by model.safetensors.index.json (every listed shard must exist and hold the tensors the
// index assigns to it). Conversion to the compute dtype and device happens once, when a module
// loads its parameters (weights/loader.h).
//
// SafetensorsWriter streams tensors into a file one at a time (a checkpoint never has to fit in
// memory), in the order of the specs given to create().
//
// Thread-safety: SafetensorsFile and StateDict are immutable after open(); tensor() may run
// concurrently. A SafetensorsWriter is used by one thread.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "weights/safetensors_format.h"

namespace dsocr::weights {

at::ScalarType to_scalar_type(DType dtype);
StatusOr<DType> from_scalar_type(at::ScalarType type);

class SafetensorsFile {
 public:
  static StatusOr<std::shared_ptr<const SafetensorsFile>> open(const std::filesystem::path& path);
  ~SafetensorsFile();

  const SafetensorsHeader& header() const { return header_; }
  const std::filesystem::path& path() const { return path_; }
  // A CPU tensor viewing the mapped bytes (copied only if its offset is misaligned for its dtype).
  StatusOr<at::Tensor> tensor(std::string_view name) const;
  StatusOr<at::Tensor> tensor(const TensorInfo& info) const;
  // Drops the mapped pages that lie wholly inside [data, data + bytes) from the process (madvise
  // DONTNEED); a view that reads them later reads them from the file again. For after a tensor
  // was copied (converted, quantized): its mapped pages would otherwise stay resident, and be
  // counted in the process's memory, for as long as the mapping lives, so loading peaked at the
  // file's size plus the converted weights. A page a view has written to loses that write: call
  // it only for a tensor whose views are no longer used. False (nothing done) when the range is
  // not inside this file's mapping.
  bool release_pages(const void* data, size_t bytes) const;

 private:
  struct Mapping;  // an mmap of the whole file, unmapped when the last owner goes
  SafetensorsFile() = default;
  std::filesystem::path path_;
  SafetensorsHeader header_;
  std::shared_ptr<Mapping> mapping_;  // shared with every tensor view
  const char* data_ = nullptr;        // start of the mapping
};

class StateDict {
 public:
  // `path`: a .safetensors file, a model.safetensors.index.json, or a directory holding either.
  static StatusOr<StateDict> open(const std::filesystem::path& path);

  std::vector<std::string> names() const;  // sorted
  size_t size() const { return entries_.size(); }
  const TensorInfo* info(std::string_view name) const;
  StatusOr<at::Tensor> get(std::string_view name) const;
  // SafetensorsFile::release_pages for a tensor viewing one of this checkpoint's files; nothing
  // for any other tensor (a copy, a misaligned tensor's aligned copy).
  void release_pages(const at::Tensor& view) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  struct Entry {
    std::shared_ptr<const SafetensorsFile> file;
    const TensorInfo* info;
  };
  std::map<std::string, Entry, std::less<>> entries_;
  std::vector<std::shared_ptr<const SafetensorsFile>> files_;
  std::map<std::string, std::string> metadata_;
};

class SafetensorsWriter {
 public:
  // Writes the header for `tensors` (name, dtype, shape) and prepares to receive their data.
  static StatusOr<std::unique_ptr<SafetensorsWriter>> create(
      const std::filesystem::path& path, std::vector<TensorInfo> tensors,
      const std::map<std::string, std::string>& metadata);
  ~SafetensorsWriter();

  // The next tensor, in create() order; its dtype and shape must match the spec (converted to
  // contiguous CPU first if needed).
  Status write(const at::Tensor& tensor);
  // Checks every tensor was written and closes the file.
  Status finish();
  const std::vector<TensorInfo>& tensors() const { return tensors_; }

 private:
  SafetensorsWriter() = default;
  std::filesystem::path path_;
  std::vector<TensorInfo> tensors_;
  size_t next_ = 0;
  std::FILE* file_ = nullptr;
};

// Writes `tensors` (name -> tensor) as one file; names sorted.
Status write_safetensors(const std::filesystem::path& path,
                         const std::map<std::string, at::Tensor>& tensors,
                         const std::map<std::string, std::string>& metadata = {});

}  // namespace dsocr::weights

#include "engine/device.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>

#include <torch/version.h>
#include <fstream>

#include <sstream>

#include "common/flags.h"

#ifdef DSOCR_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace dsocr::engine {

DeviceInfo probe_devices() {
  DeviceInfo info;
  info.torch_version = TORCH_VERSION;
  info.torch_has_cuda = at::hasCUDA() || torch::cuda::device_count() > 0;
#ifdef DSOCR_WITH_CUDA
  info.dsocr_cuda_kernels = true;
  int count = static_cast<int>(torch::cuda::device_count());
  for (int i = 0; i < count; ++i) {
    const cudaDeviceProp* prop = at::cuda::getDeviceProperties(i);
    info.cuda_devices.push_back({.index = i,
                                 .name = prop->name,
                                 .compute_major = prop->major,
                                 .compute_minor = prop->minor,
                                 .total_memory_bytes = static_cast<int64_t>(prop->totalGlobalMem)});
  }
#endif
  info.intra_op_threads = at::get_num_threads();
  return info;
}

std::string DeviceInfo::summary() const {
  std::ostringstream out;
  out << "torch " << torch_version << ", " << intra_op_threads << " CPU threads, ";
  if (cuda_devices.empty()) {
    out << "no CUDA device";
    if (!dsocr_cuda_kernels) out << " (dsocr built without CUDA kernels)";
  } else {
    for (size_t i = 0; i < cuda_devices.size(); ++i) {
      const auto& d = cuda_devices[i];
      out << (i ? "; " : "") << "cuda:" << d.index << " " << d.name << " (sm_" << d.compute_major
          << d.compute_minor << ", " << d.total_memory_bytes / (1 << 20) << " MiB)";
    }
  }
  return out.str();
}

StatusOr<std::string> resolve_device(std::string_view requested, const DeviceInfo& info) {
  if (requested == "auto") return std::string(info.cuda_devices.empty() ? "cpu" : "cuda:0");
  if (requested == "cpu") return std::string("cpu");
  int64_t index = 0;
  if (requested.starts_with("cuda:")) {
    DSOCR_ASSIGN_OR_RETURN(index, parse_int64(requested.substr(5)));
  } else if (requested != "cuda") {
    return invalid_argument("unknown device '" + std::string(requested) +
                            "' (expected auto, cpu, cuda or cuda:N)");
  }
  if (index < 0 || index >= static_cast<int64_t>(info.cuda_devices.size())) {
    return failed_precondition("device " + std::string(requested) + " is not available here (" +
                               std::to_string(info.cuda_devices.size()) + " CUDA devices" +
                               (info.dsocr_cuda_kernels ? "" : "; built without CUDA") + ")");
  }
  return "cuda:" + std::to_string(index);
}

int64_t free_memory_bytes(const std::string& device) {
  if (device == "cpu") {
    std::ifstream meminfo("/proc/meminfo");
    std::string key;
    int64_t kib = 0;
    std::string unit;
    while (meminfo >> key >> kib >> unit)
      if (key == "MemAvailable:") return kib * 1024;
    return 0;
  }
#ifdef DSOCR_WITH_CUDA
  if (device.rfind("cuda", 0) == 0) {
    int index = device.size() > 5 ? std::stoi(device.substr(5)) : 0;
    int previous = 0;
    cudaGetDevice(&previous);
    cudaSetDevice(index);
    size_t free_bytes = 0, total = 0;
    const bool ok = cudaMemGetInfo(&free_bytes, &total) == cudaSuccess;
    cudaSetDevice(previous);
    return ok ? static_cast<int64_t>(free_bytes) : 0;
  }
#endif
  return 0;
}

}  // namespace dsocr::engine

// What compute this process can use: the libtorch it runs on, CUDA devices, CPU threads.
// Printed by `dsocr info`, logged by dsocr-server at start-up, and used to validate `--device`.
//
// Torch-free header (the server includes it); torch lives in device.cpp.
// Thread-safety: probe_devices() may be called from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace dsocr::engine {

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  int compute_major = 0;
  int compute_minor = 0;
  int64_t total_memory_bytes = 0;
};

struct DeviceInfo {
  std::string torch_version;        // "2.11.0+cu130"
  bool torch_has_cuda = false;      // libtorch can use CUDA here (a CUDA build and a driver)
  bool dsocr_cuda_kernels = false;  // dsocr was built with DSOCR_CUDA (its own kernels)
  std::vector<CudaDeviceInfo> cuda_devices;  // empty without a GPU or driver
  int intra_op_threads = 0;
  std::string summary() const;  // one human line, for logs
};

DeviceInfo probe_devices();

// Validates a device request: "auto" (the first GPU if there is one, else the CPU), "cpu",
// "cuda" or "cuda:N". Returns the concrete device ("cpu" or "cuda:N"); kInvalidArgument for a
// malformed name, kFailedPrecondition when the device does not exist here.
StatusOr<std::string> resolve_device(std::string_view requested, const DeviceInfo& info);

// Bytes that can still be allocated on a resolved device: MemAvailable of /proc/meminfo for the
// CPU, the driver's free memory for a GPU. 0 when unknown.
int64_t free_memory_bytes(const std::string& device);

}  // namespace dsocr::engine

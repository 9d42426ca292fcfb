// Strict loading of checkpoint tensors into libtorch modules, by the modules' own names.
//
// Every parameter and buffer of the module, named "<prefix><name>" in the checkpoint, must be
// present with its exact shape and a compatible dtype; every checkpoint tensor under the prefix
// must be used. All problems are reported in one error (missing, unexpected, shape, dtype), and
// nothing is assigned unless everything checks out: a module is never half-loaded. Tensors are
// converted to the module's dtype and device (or LoadOptions') once, at load; the mapped pages of
// a tensor that was copied are then released (SafetensorsFile::release_pages), so loading never
// holds a tensor twice.
//
// Thread-safety: loads into one module from one thread; the StateDict may be shared.
#pragma once

#include <torch/nn/module.h>

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"
#include "weights/safetensors.h"

namespace dsocr::weights {

struct LoadOptions {
  std::string prefix;                   // e.g. "model.sam_model."
  std::optional<at::ScalarType> dtype;  // default: each parameter's current dtype
  std::optional<at::Device> device;     // default: each parameter's current device
  bool allow_unexpected = false;        // checkpoint tensors under prefix the module lacks
  // Free the module's initial values (random init) before converting, once names and shapes
  // have been checked: halves the peak memory of loading a large model. The module is unusable
  // if a later conversion fails.
  bool discard_initial_values = false;
  // Tensors that keep the checkpoint's dtype instead of `dtype` (on the CPU: the mapped bytes
  // themselves, no copy), for a module that converts them itself (engine/model/stored_weight.h).
  std::function<bool(const std::string& name)> keep_checkpoint_dtype;
};

Status load_module(torch::nn::Module& module, const StateDict& weights, const LoadOptions& options);

// The compute dtype a user names: "float32"/"f32" or "bfloat16"/"bf16"; kInvalidArgument otherwise.
StatusOr<at::ScalarType> parse_compute_dtype(std::string_view name);

}  // namespace dsocr::weights

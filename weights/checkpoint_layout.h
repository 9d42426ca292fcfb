// The tensors of a DeepSeek-OCR-2 checkpoint, by their official names (spec §3.2), for any
// ModelConfig: what `dsocr make-model` writes and what the model modules must load. With the
// official config this is exactly the 2,707 tensors and 3,389,119,360 parameters of
// model.safetensors.index.json.
//
// Thread-safety: pure function.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "weights/model_config.h"

namespace dsocr::weights {

// Random weights are drawn from N(mean, std^2): matrices with std 1/sqrt(fan_in) so every layer
// contributes at unit scale (a tiny std would let a missing term go unnoticed in parity tests),
// norm weights near one, biases and position tables small but non-zero (a dropped bias must show).
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  double mean = 0.0;
  double std = 0.02;
};

std::vector<TensorSpec> deepseek_ocr2_tensors(const ModelConfig& config);

int64_t total_parameters(const std::vector<TensorSpec>& tensors);

}  // namespace dsocr::weights

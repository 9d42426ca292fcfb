// StoredWeight: a language-model weight matrix kept narrow in CPU memory (bfloat16 as the
// checkpoint stores it, or int8 with a scale per group of 32 values) and applied to float32 activations, the
// arithmetic in float32 (issue #21: the real model's 13.6 GB of widened float32 weights did not
// fit a 16 GB machine; bfloat16 halves that and int8 quarters it).
//
// forward() takes two paths by the number of rows, both widening the weights to float32 on the
// way and neither ever holding a widened copy of the whole matrix:
//   - few rows (decode steps): cpu::linear reads each weight once, widening it in registers; the
//     step is bound by reading the weights, so narrower weights are faster;
//   - many rows (prefill): blocks of rows of W are widened into float32 scratch and multiplied by
//     libtorch's sgemm, which is compute-bound there and faster than any loop of ours.
//
// Invariants: data_ is [rows, cols] contiguous in format_ (kBFloat16: at::kBFloat16; kInt8:
// at::kChar with scales_ [rows, int8_groups(cols)] float32); a bfloat16 checkpoint tensor is kept as it is, a view
// of the mapped file, never copied.
//
// Thread-safety: immutable after make(); forward() may run concurrently.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "engine/kernels/cpu_kernels.h"

namespace dsocr::model {

class StoredWeight {
 public:
  StoredWeight() = default;

  // `weight`: [rows, cols] float32 or bfloat16 on the CPU, cols a multiple of 8. Kept as it is
  // when it already has `format` (no copy), converted otherwise.
  static StoredWeight make(const at::Tensor& weight, engine::cpu::WeightFormat format);
  // Several matrices of one shape stacked into one [n * rows, cols] (the experts of a MoE layer).
  static StoredWeight stack(const std::vector<at::Tensor>& weights,
                            engine::cpu::WeightFormat format);

  bool defined() const { return data_.defined(); }
  engine::cpu::WeightFormat format() const { return format_; }
  int64_t rows() const { return data_.size(0); }
  int64_t cols() const { return data_.size(1); }
  int64_t bytes() const;
  engine::cpu::WeightMatrix matrix() const;

  // x [T, cols] (any float dtype) -> [T, rows] in x's dtype; float32 arithmetic.
  at::Tensor forward(const at::Tensor& x) const;
  // The float32 matrix this stands for (dequantized): for tests and error measurements.
  at::Tensor widened() const;

 private:
  at::Tensor data_, scales_;
  engine::cpu::WeightFormat format_ = engine::cpu::WeightFormat::kFloat32;
};

}  // namespace dsocr::model

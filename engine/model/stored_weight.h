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
// at::kChar with scales_ [rows, int8_groups(cols)] float32). A contiguous bfloat16 checkpoint
// tensor stored as bfloat16 stays a view of the mapped file; stacked matrices are copied.
//
// Thread-safety: immutable after make(); forward() may run concurrently.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

#include "engine/kernels/cpu_kernels.h"

namespace dsocr::model {

class StoredWeight {
 public:
  StoredWeight() = default;

  // Called with each block of source rows once it has been converted (a view of the source), so
  // that the caller can release its pages while the rest converts.
  using RowsDone = std::function<void(const at::Tensor& rows)>;

  // `weight`: [rows, cols] float32 or bfloat16 on the CPU, cols a multiple of 8 (checked by
  // LanguageModel::load; a violation here is a bug). Kept as it is when it already has `format`
  // and is contiguous (no copy, `done` not called), converted otherwise.
  static StoredWeight make(const at::Tensor& weight, engine::cpu::WeightFormat format,
                           const RowsDone& done = {});
  // Several matrices of one shape stacked into one [n * rows, cols] (the experts of a MoE layer).
  static StoredWeight stack(const std::vector<at::Tensor>& weights,
                            engine::cpu::WeightFormat format, const RowsDone& done = {});
  // Weights that were not finite (NaN, inf) when converted to int8: int8 cannot hold them (they
  // became 0); LanguageModel::load refuses such a checkpoint.
  int64_t non_finite() const { return non_finite_; }

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
  int64_t non_finite_ = 0;
};

}  // namespace dsocr::model

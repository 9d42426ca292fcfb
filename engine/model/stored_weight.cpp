#include "engine/model/stored_weight.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "common/check.h"

namespace dsocr::model {

namespace cpu = engine::cpu;

namespace {

// Rows of x above which forward() widens blocks of W for sgemm. Measured on the `full` shapes
// (1280 x 1280 .. 6848): at 16 rows the two paths are close; above it sgemm pulls away.
constexpr int64_t kDirectMaxRows = 16;
// Rows of W widened at a time on the sgemm path: 256 x 6848 float32 = 7 MiB at most.
constexpr int64_t kWidenBlockRows = 256;

cpu::Dtype kernel_dtype(const at::Tensor& t) {
  DSOCR_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16)
      << "weights must be float32 or bfloat16, got " << t.scalar_type();
  return t.scalar_type() == at::kFloat ? cpu::Dtype::kFloat32 : cpu::Dtype::kBFloat16;
}

// Rows converted at a time, each block's source pages released (RowsDone) before the next:
// lm_head is 331 MB of bfloat16, which would otherwise sit beside its int8 copy.
constexpr int64_t kConvertBlockRows = 1024;

// `w` [rows, cols] into `data` rows [first, first + rows) (and `scales`) in `format`; returns
// the non-finite weights met (int8 only).
int64_t store_rows(const at::Tensor& w, cpu::WeightFormat format, at::Tensor& data,
                   at::Tensor& scales, int64_t first, const StoredWeight::RowsDone& done) {
  const int64_t rows = w.size(0), cols = w.size(1);
  int64_t non_finite = 0;
  for (int64_t r0 = 0; r0 < rows; r0 += kConvertBlockRows) {
    const int64_t n = std::min(kConvertBlockRows, rows - r0);
    const at::Tensor src = w.narrow(0, r0, n).contiguous();
    if (format == cpu::WeightFormat::kInt8) {
      non_finite += cpu::quantize_int8(src.data_ptr(), kernel_dtype(src), n, cols,
                                       data.data_ptr<int8_t>() + (first + r0) * cols,
                                       scales.data_ptr<float>() + (first + r0) * cpu::int8_groups(cols));
    } else {
      data.narrow(0, first + r0, n).copy_(src);
    }
    if (done) done(w.narrow(0, r0, n));
  }
  return non_finite;
}

at::ScalarType storage_type(cpu::WeightFormat format) {
  switch (format) {
    case cpu::WeightFormat::kFloat32:
      return at::kFloat;
    case cpu::WeightFormat::kBFloat16:
      return at::kBFloat16;
    case cpu::WeightFormat::kInt8:
      return at::kChar;
  }
  return at::kFloat;
}

}  // namespace

StoredWeight StoredWeight::make(const at::Tensor& weight, cpu::WeightFormat format,
                                const RowsDone& done) {
  DSOCR_CHECK(weight.dim() == 2 && weight.is_cpu() && cpu::linear_supported(weight.size(1)))
      << "a stored weight is a CPU matrix with a multiple of 8 columns, got " << weight.sizes();
  StoredWeight s;
  s.format_ = format;
  if (format != cpu::WeightFormat::kInt8 && weight.scalar_type() == storage_type(format) &&
      weight.is_contiguous()) {
    s.data_ = weight;  // as stored: a bfloat16 checkpoint's mapped bytes stay where they are
    return s;
  }
  return stack({weight}, format, done);
}

StoredWeight StoredWeight::stack(const std::vector<at::Tensor>& weights, cpu::WeightFormat format,
                                 const RowsDone& done) {
  DSOCR_CHECK(!weights.empty());
  const int64_t rows = weights[0].size(0), cols = weights[0].size(1);
  StoredWeight s;
  s.format_ = format;
  s.data_ = at::empty({rows * static_cast<int64_t>(weights.size()), cols},
                      at::TensorOptions().dtype(storage_type(format)));
  if (format == cpu::WeightFormat::kInt8)
    s.scales_ = at::empty({s.data_.size(0), cpu::int8_groups(cols)}, at::kFloat);
  for (size_t i = 0; i < weights.size(); ++i) {
    DSOCR_CHECK(weights[i].dim() == 2 && weights[i].size(0) == rows && weights[i].size(1) == cols &&
                weights[i].is_cpu() && cpu::linear_supported(cols))
        << "stacked weights differ in shape: " << weights[i].sizes() << " vs [" << rows << ", "
        << cols << "]";
    s.non_finite_ +=
        store_rows(weights[i], format, s.data_, s.scales_, static_cast<int64_t>(i) * rows, done);
  }
  return s;
}

int64_t StoredWeight::bytes() const {
  if (!defined()) return 0;
  return data_.numel() * static_cast<int64_t>(data_.element_size()) +
         (scales_.defined() ? scales_.numel() * 4 : 0);
}

cpu::WeightMatrix StoredWeight::matrix() const {
  cpu::WeightMatrix m;
  m.data = data_.data_ptr();
  m.scales = scales_.defined() ? scales_.data_ptr<float>() : nullptr;
  m.format = format_;
  m.rows = rows();
  m.cols = cols();
  return m;
}

at::Tensor StoredWeight::forward(const at::Tensor& x) const {
  DSOCR_CHECK(x.dim() == 2 && x.size(1) == cols()) << x.sizes() << " x [" << rows() << ", "
                                                   << cols() << "]ᵀ";
  const at::Tensor xf = x.to(at::kFloat).contiguous();
  const int64_t t = xf.size(0);
  at::Tensor out = at::empty({t, rows()}, xf.options());
  const cpu::WeightMatrix w = matrix();
  if (t <= kDirectMaxRows) {
    cpu::linear(xf.data_ptr<float>(), t, w, out.data_ptr<float>());
  } else {
    at::Tensor wide = at::empty({std::min(kWidenBlockRows, rows()), cols()}, xf.options());
    for (int64_t first = 0; first < rows(); first += kWidenBlockRows) {
      const int64_t count = std::min(kWidenBlockRows, rows() - first);
      at::Tensor block = wide.narrow(0, 0, count);
      cpu::widen(w, first, count, block.data_ptr<float>());
      out.narrow(1, first, count).copy_(at::mm(xf, block.t()));
    }
  }
  return out.scalar_type() == x.scalar_type() ? out : out.to(x.scalar_type());
}

at::Tensor StoredWeight::widened() const {
  at::Tensor out = at::empty({rows(), cols()}, at::kFloat);
  cpu::widen(matrix(), 0, rows(), out.data_ptr<float>());
  return out;
}

}  // namespace dsocr::model

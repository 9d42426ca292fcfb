// WidenedScope: a module whose parameters are kept narrower than the compute dtype (bfloat16 as
// the checkpoint stores them, under float32 compute on the CPU) computes with widened copies for
// the duration of a scope, then gets its narrow tensors back. The vision encoder wraps each SAM
// block and Qwen2 layer in one, so only one block's float32 copy exists at a time (issue #21:
// the encoder's 2.4 GB of float32 weights become 1.2 GB of bfloat16). Widening bfloat16 to
// float32 is exact: the results are those of weights loaded as float32.
//
// Thread-safety: mutates the module's parameters; one scope per module at a time (the vision
// model serialises encode() calls while any of its parameters are narrow).
#pragma once

#include <torch/nn/module.h>

#include <utility>
#include <vector>

namespace dsocr::model {

class WidenedScope {
 public:
  WidenedScope(torch::nn::Module& module, at::ScalarType compute) {
    for (at::Tensor& p : module.parameters()) {
      if (p.scalar_type() == compute || !p.is_floating_point()) continue;
      at::Tensor narrow = p.data();
      p.set_data(narrow.to(compute));
      restore_.emplace_back(p, std::move(narrow));
    }
  }
  ~WidenedScope() {
    for (auto& [param, narrow] : restore_) param.set_data(narrow);
  }
  WidenedScope(const WidenedScope&) = delete;
  WidenedScope& operator=(const WidenedScope&) = delete;

 private:
  std::vector<std::pair<at::Tensor, at::Tensor>> restore_;  // (parameter, its narrow data)
};

}  // namespace dsocr::model

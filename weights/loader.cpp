#include "weights/loader.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <set>
#include <sstream>

namespace dsocr::weights {

Status load_module(torch::nn::Module& module, const StateDict& weights,
                   const LoadOptions& options) {
  std::vector<std::pair<std::string, at::Tensor>> targets;
  for (const auto& p : module.named_parameters(/*recurse=*/true))
    targets.emplace_back(p.key(), p.value());
  for (const auto& b : module.named_buffers(/*recurse=*/true))
    targets.emplace_back(b.key(), b.value());

  std::vector<std::string> missing, mismatched;
  std::set<std::string> used;
  std::vector<at::Tensor> converted(targets.size());
  for (size_t i = 0; i < targets.size(); ++i) {
    const auto& [name, target] = targets[i];
    const std::string full = options.prefix + name;
    const TensorInfo* info = weights.info(full);
    if (info == nullptr) {
      missing.push_back(full);
      continue;
    }
    used.insert(full);
    if (info->shape != target.sizes().vec()) {
      std::ostringstream m;
      m << full << ": checkpoint shape " << at::IntArrayRef(info->shape) << ", module expects "
        << target.sizes();
      mismatched.push_back(m.str());
      continue;
    }
    const at::ScalarType source = to_scalar_type(info->dtype);
    const at::ScalarType dest = options.dtype.value_or(target.scalar_type());
    if (at::isFloatingType(source) != at::isFloatingType(dest)) {
      mismatched.push_back(full + ": checkpoint dtype " + std::string(dtype_name(info->dtype)) +
                           " cannot become " + c10::toString(dest));
    }
  }
  std::vector<std::string> unexpected;
  if (!options.allow_unexpected) {
    for (const auto& name : weights.names()) {
      if (name.rfind(options.prefix, 0) == 0 && !used.count(name)) unexpected.push_back(name);
    }
  }
  if (!missing.empty() || !unexpected.empty() || !mismatched.empty()) {
    std::ostringstream m;
    m << "cannot load '" << options.prefix << "*': " << missing.size() << " missing, "
      << unexpected.size() << " unexpected, " << mismatched.size() << " mismatched";
    auto list = [&m](const char* what, const std::vector<std::string>& names) {
      constexpr size_t kShown = 20;
      for (size_t i = 0; i < names.size() && i < kShown; ++i)
        m << "\n  " << what << ": " << names[i];
      if (names.size() > kShown) m << "\n  ... and " << names.size() - kShown << " more " << what;
    };
    list("missing", missing);
    list("unexpected", unexpected);
    list("mismatched", mismatched);
    return invalid_argument(m.str());
  }

  // Convert everything first; assign only when all conversions succeeded.
  if (options.discard_initial_values) {
    torch::NoGradGuard no_grad;
    for (auto& [name, target] : targets)
      target.set_data(at::empty({0}, target.options()));  // shapes were checked above
  }
  for (size_t i = 0; i < targets.size(); ++i) {
    const auto& [name, target] = targets[i];
    const std::string full = options.prefix + name;
    DSOCR_ASSIGN_OR_RETURN(at::Tensor view, weights.get(full));
    const at::ScalarType dtype =
        options.keep_checkpoint_dtype && options.keep_checkpoint_dtype(full)
            ? view.scalar_type()
            : options.dtype.value_or(target.scalar_type());
    converted[i] = view.to(options.device.value_or(target.device()), dtype);
    if (!converted[i].is_alias_of(view)) weights.release_pages(view);
  }
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < targets.size(); ++i) targets[i].second.set_data(converted[i]);
  return Status();
}

StatusOr<at::ScalarType> parse_compute_dtype(std::string_view name) {
  if (name == "float32" || name == "f32") return at::kFloat;
  if (name == "bfloat16" || name == "bf16") return at::kBFloat16;
  return invalid_argument("dtype must be float32 or bfloat16, got '" + std::string(name) + "'");
}

}  // namespace dsocr::weights

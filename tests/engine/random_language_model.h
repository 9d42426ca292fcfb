// A random-weight language-model checkpoint for tests (a bfloat16 safetensors file of every
// language-model tensor, fan-in scaled), so tests can load a LanguageModel of any shape through the
// real loader.
#pragma once

#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <map>
#include <string>

#include "engine/model/language_model.h"
#include "weights/safetensors.h"

namespace dsocr::model {

// A bfloat16 checkpoint of random weights (fan-in scaled). `outliers`: a few input channels of
// every matrix and of the embeddings ten times larger, as trained models have, the hard case for
// int8: the group holding an outlier gets a coarse step for all its other values.
inline std::filesystem::path write_checkpoint(const weights::LanguageConfig& config, bool outliers,
                                              const std::filesystem::path& dir) {
  at::NoGradGuard no_grad;
  at::manual_seed(outliers ? 21 : 20);
  LanguageModel lm(config);
  std::map<std::string, at::Tensor> tensors;
  for (const auto& p : lm->named_parameters()) {
    at::Tensor t;
    if (p.key().find("norm") != std::string::npos) {
      t = at::ones(p.value().sizes());
    } else if (p.value().dim() == 2) {
      t = at::randn(p.value().sizes()) / std::sqrt(static_cast<double>(p.value().size(1)));
      if (p.key().find("embed_tokens") != std::string::npos) t *= 16;
      if (outliers) t.narrow(1, 0, 4).mul_(10);
    } else {
      t = at::randn(p.value().sizes());
    }
    tensors[p.key()] = t.to(at::kBFloat16);
  }
  std::filesystem::create_directories(dir);
  const std::filesystem::path file =
      dir / (outliers ? "outliers.safetensors" : "random.safetensors");
  REQUIRE(weights::write_safetensors(file, tensors).ok());
  return file;
}

}  // namespace dsocr::model

// Random-weight DeepSeek-OCR-2 checkpoints with the official structure, for tests and benchmarks
// (the real 6.8 GB checkpoint cannot be downloaded everywhere).
//
// Presets keep every structural feature (windowed and global SAM blocks with rel-pos tables, both
// query banks, dense layer 0 and MoE layers with shared experts, GQA in the encoder), the image
// sizes (1024 global, 768 tiles, hence the token counts) and the 129,280-token vocabulary:
//   tiny   unit tests: a one-page forward pass in about a second on a CPU
//   small  CPU benchmarks
//   full   the official sizes: 2,707 tensors, 3,389,119,360 parameters
// Weights are deterministic for a seed: each tensor has its own generator seeded from the seed and
// its name, so the bytes do not depend on order or threads.
//
// Thread-safety: free functions.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

#include "common/status.h"
#include "weights/model_config.h"
#include "weights/safetensors_format.h"

namespace dsocr::weights {

StatusOr<ModelConfig> preset_config(std::string_view preset);

struct MakeModelOptions {
  std::string preset = "tiny";
  uint64_t seed = 0;
  DType dtype = DType::kBF16;  // BF16 or F32
  std::filesystem::path out;
  // Where tokenizer.json and friends are copied from (none copied if empty).
  std::filesystem::path tokenizer_dir;
};

// Called after each tensor: bytes written so far, bytes in all, the tensor's name.
using MakeModelProgress = std::function<void(uint64_t done, uint64_t total, const std::string&)>;

// Writes config.json, model-00001-of-000001.safetensors, model.safetensors.index.json and the
// tokenizer files into options.out (created if needed).
Status make_model(const MakeModelOptions& options, const MakeModelProgress& progress = {});

// The built-in "demo" model (the tiny preset, seed 0, float32) under `cache_dir`, made on first
// use; returns its directory. Safe against concurrent first uses, also by processes with the same
// PID in other containers sharing the cache: each makes it in its own randomly named scratch
// directory, and the first complete copy renamed into place wins.
StatusOr<std::filesystem::path> ensure_demo_model(const std::filesystem::path& cache_dir,
                                                  const std::filesystem::path& tokenizer_dir);

// The tokenizer files of DeepSeek-OCR-2 that make-model copies, in the order they are looked for.
inline constexpr const char* kTokenizerFiles[] = {
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "processor_config.json"};

}  // namespace dsocr::weights

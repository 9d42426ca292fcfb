// Model resolution: what `--model` names, turned into a directory, the same way for dsocr-server
// and every `dsocr` command.
//
//   demo                  the built-in demo checkpoint (the `tiny` preset of make-model, random
//                         weights), made under dsocr_cache_dir() on first use;
//   /a/local/dir          a model directory (config.json, weights, tokenizer files);
//   org/name[@revision]   a Hugging Face hub repository: the hub cache's snapshot, downloaded into
//                         the cache when it is missing (HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE).
//
// Downloads report progress on stderr (a bar on a terminal). The header is torch-free; callers
// above the engine (server/) need nothing from weights/ to resolve a model.
//
// Thread-safety: free functions; concurrent first uses of the demo model are safe (it is made in a
// temporary directory and renamed into place).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "common/status.h"

namespace dsocr::engine {

// What `--model` defaults to where a command has a default (dsocr-server).
inline constexpr std::string_view kDefaultModelSpec = "deepseek-ai/DeepSeek-OCR-2";

enum class ModelKind { kDemo, kLocalDir, kHub };

struct ResolvedModel {
  ModelKind kind = ModelKind::kDemo;
  std::string spec;           // what the user wrote
  std::string name;           // what /v1/models calls it by default: "demo", "org/name", dir name
  std::filesystem::path dir;  // config.json, tokenizer.json and (unless tokenizer_only) weights
};

struct ModelResolutionOptions {
  // Only the tokenizer is needed: a hub download fetches config.json and the tokenizer files, a
  // directory needs only tokenizer.json, and `demo` is the bundled DeepSeek-OCR-2 model files
  // (nothing is built).
  bool tokenizer_only = false;
};

// Resolves, downloading or building what is missing. kNotFound for a directory that does not
// exist or a hub id that is neither cached nor downloadable (offline); the message names the
// alternatives, `--model demo` among them.
StatusOr<ResolvedModel> resolve_model(std::string_view spec,
                                      const ModelResolutionOptions& options = {});

// Where `spec` resolves, without the network and without building anything: for `demo`, dir is
// empty (it is made on first use); a hub id must already be cached.
StatusOr<ResolvedModel> locate_model(std::string_view spec);

// Whether `spec` names the built-in demo model.
bool is_demo_model(std::string_view spec);

// The model's size, for start-up logs.
struct ModelShape {
  int64_t language_layers = 0;
  int64_t hidden_size = 0;
};
// Reads dir/config.json; its errors name the file.
StatusOr<ModelShape> read_model_shape(const std::filesystem::path& dir);

// Where dsocr keeps what it makes (the demo model): $DSOCR_CACHE_DIR, else $XDG_CACHE_HOME/dsocr,
// else ~/.cache/dsocr.
std::filesystem::path dsocr_cache_dir();

// DeepSeek-OCR-2's tokenizer and config files: $DSOCR_MODEL_FILES_DIR, else the copy the build
// made (built_model_files_dir(), common/version.h).
std::filesystem::path model_files_dir();

}  // namespace dsocr::engine

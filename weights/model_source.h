// Where a model's files are: resolving the `--model` argument to a local directory.
//
// `--model` accepts three forms:
//   demo                    the built-in tiny random-weight model, generated on the fly;
//   /a/local/dir            a directory holding config.json (and weights, tokenizer files);
//   org/name[@revision]     a Hugging Face hub repository, found in the hub cache.
// The hub cache is the one `huggingface_hub` uses ($HF_HUB_CACHE, else $HF_HOME/hub, else
// ~/.cache/huggingface/hub; models--org--name/{refs,snapshots,blobs}), so a model downloaded by
// either tool is found by both. Downloading into it is the hub client's job (weights/hub_client.h);
// this file only looks.
//
// Thread-safety: free functions without shared state.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace dsocr::weights {

inline constexpr std::string_view kDemoModel = "demo";
inline constexpr std::string_view kDefaultModel = "deepseek-ai/DeepSeek-OCR-2";

struct HubRepoId {
  std::string org;
  std::string name;
  std::string revision = "main";  // a branch, tag or 40-hex commit
  std::string repo() const { return org + "/" + name; }
};

// Parses "org/name" or "org/name@revision"; kInvalidArgument says what is wrong.
StatusOr<HubRepoId> parse_hub_repo_id(std::string_view spec);

// The hub cache root as huggingface_hub computes it from the environment.
std::filesystem::path hub_cache_dir();

// <cache>/models--org--name
std::filesystem::path hub_repo_dir(const std::filesystem::path& cache_dir, const HubRepoId& id);

// The snapshot directory for `id` if the cache holds it: revision resolved through refs/<rev>
// (or used directly when it is a commit hash). nullopt when absent.
std::optional<std::filesystem::path> find_cached_snapshot(const std::filesystem::path& cache_dir,
                                                          const HubRepoId& id);

struct ModelSource {
  enum class Kind { kDemo, kLocalDir, kHubCache };
  Kind kind = Kind::kDemo;
  std::string spec;           // what the user wrote
  std::filesystem::path dir;  // empty for kDemo
  std::string name;           // what /v1/models calls it by default: "demo", "org/name", dir name
};

// Resolves `spec` without touching the network. A hub id that is not cached is kNotFound with a
// message naming the cache path and the alternatives.
StatusOr<ModelSource> resolve_model_source(std::string_view spec,
                                           const std::filesystem::path& cache_dir);

}  // namespace dsocr::weights

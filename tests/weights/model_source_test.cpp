#include "weights/model_source.h"

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace dsocr::weights {
namespace {
namespace fs = std::filesystem;

const std::string kCommit = "0123456789abcdef0123456789abcdef01234567";

// A throwaway hub cache laid out as huggingface_hub writes it.
struct FakeHubCache {
  fs::path root = fs::temp_directory_path() /
                  ("dsocr-hub-" + std::to_string(::getpid()) + "-" + std::to_string(std::rand()));
  FakeHubCache() {
    fs::path repo = root / "models--deepseek-ai--DeepSeek-OCR-2";
    fs::create_directories(repo / "refs");
    fs::create_directories(repo / "snapshots" / kCommit);
    std::ofstream(repo / "refs" / "main") << kCommit;  // huggingface_hub writes no newline
    std::ofstream(repo / "snapshots" / kCommit / "config.json") << "{}";
  }
  ~FakeHubCache() { fs::remove_all(root); }
};

TEST_CASE("parse_hub_repo_id", "[model_source]") {
  auto id = parse_hub_repo_id("deepseek-ai/DeepSeek-OCR-2");
  REQUIRE(id.ok());
  CHECK(id->org == "deepseek-ai");
  CHECK(id->name == "DeepSeek-OCR-2");
  CHECK(id->revision == "main");
  CHECK(parse_hub_repo_id("a/b@v1.0")->revision == "v1.0");
  CHECK_FALSE(parse_hub_repo_id("noslash").ok());
  CHECK_FALSE(parse_hub_repo_id("a/b/c").ok());
  CHECK_FALSE(parse_hub_repo_id("a/../b").ok());
  CHECK_FALSE(parse_hub_repo_id("a/b@").ok());
  CHECK_FALSE(parse_hub_repo_id("a/b c").ok());
}

TEST_CASE("hub cache location follows huggingface_hub", "[model_source]") {
  unsetenv("HF_HUB_CACHE");
  setenv("HF_HOME", "/tmp/hfhome", 1);
  CHECK(hub_cache_dir() == fs::path("/tmp/hfhome/hub"));
  setenv("HF_HUB_CACHE", "/tmp/explicit", 1);
  CHECK(hub_cache_dir() == fs::path("/tmp/explicit"));
  unsetenv("HF_HUB_CACHE");
  unsetenv("HF_HOME");
}

TEST_CASE("resolve_model_source: demo, local directory, hub cache", "[model_source]") {
  FakeHubCache cache;
  auto demo = resolve_model_source("demo", cache.root);
  REQUIRE(demo.ok());
  CHECK(demo->kind == ModelSource::Kind::kDemo);

  auto hub = resolve_model_source("deepseek-ai/DeepSeek-OCR-2", cache.root);
  REQUIRE(hub.ok());
  CHECK(hub->kind == ModelSource::Kind::kHubCache);
  CHECK(hub->dir == cache.root / "models--deepseek-ai--DeepSeek-OCR-2" / "snapshots" / kCommit);
  CHECK(hub->name == "deepseek-ai/DeepSeek-OCR-2");
  CHECK(resolve_model_source("deepseek-ai/DeepSeek-OCR-2@" + kCommit, cache.root).ok());

  auto local = resolve_model_source(hub->dir.string(), cache.root);
  REQUIRE(local.ok());
  CHECK(local->kind == ModelSource::Kind::kLocalDir);
  CHECK(local->name == kCommit);
}

TEST_CASE("resolve_model_source: clear errors", "[model_source]") {
  FakeHubCache cache;
  auto missing = resolve_model_source("other-org/Other-Model", cache.root);
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().code() == StatusCode::kNotFound);
  CHECK(missing.status().message().find("--model demo") != std::string::npos);
  CHECK(missing.status().message().find("models--other-org--Other-Model") != std::string::npos);
  CHECK(resolve_model_source("deepseek-ai/DeepSeek-OCR-2@v9", cache.root).status().code() ==
        StatusCode::kNotFound);
  CHECK(resolve_model_source("/nonexistent/dir", cache.root).status().code() ==
        StatusCode::kNotFound);
  CHECK(resolve_model_source(cache.root.string(), cache.root).status().code() ==
        StatusCode::kInvalidArgument);  // a directory without config.json
  CHECK(resolve_model_source("not a model", cache.root).status().code() ==
        StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dsocr::weights

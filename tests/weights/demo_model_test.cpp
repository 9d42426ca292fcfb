// ensure_demo_model() under concurrent first use (issue #19). Replicas that share a model cache
// volume all run the server as PID 1, so scratch directories named after the process id collided:
// one replica deleted or renamed the directory another was still writing. Threads of one process
// share a process id too, so they reproduce that collision without containers.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <latch>
#include <string>
#include <thread>
#include <vector>

#include "weights/make_model.h"

namespace dsocr::weights {
namespace {
namespace fs = std::filesystem;

const fs::path kModelFiles = fs::path(DSOCR_TEST_SOURCE_DIR) / "model-files" / "deepseek-ocr2";

struct TempDir {
  fs::path path = fs::temp_directory_path() /
                  ("dsocr-demo-" + std::to_string(::getpid()) + "-" + std::to_string(std::rand()));
  ~TempDir() { fs::remove_all(path); }
};

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST_CASE("ensure_demo_model: simultaneous first uses in one cache all get the whole model",
          "[make_model]") {
  TempDir cache, reference;
  REQUIRE(make_model({.preset = "tiny",
                      .seed = 0,
                      .dtype = DType::kF32,
                      .out = reference.path,
                      .tokenizer_dir = kModelFiles})
              .ok());

  constexpr int kUsers = 4;
  std::latch start(kUsers);
  std::vector<StatusOr<fs::path>> results(kUsers, unavailable("not run"));
  std::vector<std::thread> users;
  for (int i = 0; i < kUsers; ++i) {
    users.emplace_back([&, i] {
      start.arrive_and_wait();  // all make the model at once, as replicas starting together do
      results[i] = ensure_demo_model(cache.path, kModelFiles);
    });
  }
  for (auto& t : users) t.join();

  for (const auto& r : results) {
    INFO((r.ok() ? r->string() : r.status().to_string()));
    REQUIRE(r.ok());
    CHECK(*r == results[0].value());
  }
  // The winner's copy is complete and byte-identical to a model made alone, and no scratch
  // directory is left behind.
  const fs::path dir = results[0].value();
  int files = 0;
  for (const auto& entry : fs::directory_iterator(reference.path)) {
    const fs::path name = entry.path().filename();
    INFO(name);
    CHECK(read_file(dir / name) == read_file(entry.path()));
    ++files;
  }
  CHECK(files >= 6);  // shard, index, config and the tokenizer files
  for (const auto& entry : fs::directory_iterator(cache.path)) {
    CHECK(entry.path() == dir);
  }
  // A later first use of the same cache finds it.
  auto again = ensure_demo_model(cache.path, kModelFiles);
  REQUIRE(again.ok());
  CHECK(*again == dir);
}

}  // namespace
}  // namespace dsocr::weights

// Checkpoint load speed, two ways: zero-copy views of every tensor (what loading into a module of
// the checkpoint's own dtype on the CPU costs: nothing is copied), and every tensor materialised
// once (the single copy a dtype or device conversion makes). Prints one JSON object; best of
// --repeat passes each.
//   load_bench --model DIR [--repeat 3]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/flags.h"
#include "weights/safetensors.h"

int main(int argc, char** argv) {
  using namespace dsocr;
  using clock = std::chrono::steady_clock;
  std::string model;
  int64_t repeat = 3;
  FlagSet flags("load_bench", "Checkpoint load throughput (page cache -> tensors).");
  flags.add_string("model", &model, "model directory or .safetensors file");
  flags.add_int("repeat", &repeat, "passes (the best is reported)");
  if (Status s = flags.parse(argc, argv); !s.ok() || model.empty()) {
    std::cerr << (s.ok() ? "--model is required" : s.message()) << "\n" << flags.usage();
    return 2;
  }
  double best_open = 1e30, best_views = 1e30, best_copy = 1e30;
  uint64_t bytes = 0;
  size_t count = 0;
  for (int64_t r = 0; r < repeat; ++r) {
    auto start = clock::now();
    auto sd = weights::StateDict::open(model);
    if (!sd.ok()) {
      std::cerr << sd.status().message() << "\n";
      return 1;
    }
    auto opened = clock::now();
    std::vector<at::Tensor> views;
    for (const auto& name : sd->names()) views.push_back(*sd->get(name));
    auto viewed = clock::now();
    bytes = 0;
    count = views.size();
    for (const auto& view : views) {
      at::Tensor owned = at::empty_like(view);
      owned.copy_(view);
      bytes += owned.numel() * owned.element_size();
    }
    auto copied = clock::now();
    best_open = std::min(best_open, std::chrono::duration<double>(opened - start).count());
    best_views = std::min(best_views, std::chrono::duration<double>(viewed - start).count());
    best_copy = std::min(best_copy, std::chrono::duration<double>(copied - start).count());
  }
  std::cout << nlohmann::json{{"tensors", count},
                              {"bytes", bytes},
                              {"open_s", best_open},
                              {"views_s", best_views},
                              {"copy_s", best_copy},
                              {"copy_gb_per_s", bytes / best_copy / 1e9},
                              {"threads", at::get_num_threads()}}
                   .dump()
            << "\n";
  return 0;
}

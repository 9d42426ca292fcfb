// Vision benchmarks, driven by bench/vision_bench.py (which runs the Python side in the same run).
//   vision_bench preprocess IMAGE [--iters N]         decode once, then preprocess + normalise
//   vision_bench encode MODEL_DIR IMAGE [--iters N]   vision encoder (SAM -> Qwen2 -> projector)
// Prints one JSON object. Single-threaded preprocessing; the encoder uses at::get_num_threads().
#include <ATen/Parallel.h>

#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <string>

#include "common/memory.h"
#include "vision/image_decoder.h"
#include "engine/model/pixel_values.h"
#include "vision/preprocess.h"
#include "engine/model/vision_model.h"
#include "common/files.h"
#include "weights/cpu_allocator.h"
#include "weights/model_config.h"

using namespace dsocr;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr
        << "usage: vision_bench preprocess IMAGE [--iters N] | encode MODEL IMAGE [--iters N]\n";
    return 2;
  }
  // The server's process-wide memory settings after it has loaded the model (engine.cpp), so
  // buffers cost what they cost there.
  use_mmap_for_large_allocations();
  weights::install_caching_cpu_allocator();
  reuse_heap_for_large_allocations();
  const std::string mode = argv[1];
  int iters = 20;
  for (int i = 2; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--iters") iters = std::stoi(argv[i + 1]);
  const std::string image_path = mode == "encode" ? argv[3] : argv[2];
  auto bytes = read_file_bytes(image_path);
  auto image = vision::decode_image(*bytes);
  if (!image.ok()) {
    std::cerr << image.status() << "\n";
    return 1;
  }
  nlohmann::json out = {{"mode", mode}, {"width", image->width}, {"height", image->height}};
  if (mode == "preprocess") {
    at::set_num_threads(1);
    cv::setNumThreads(0);
    double best = 1e30, best_views = 1e30;
    for (int i = 0; i < iters; ++i) {
      auto t0 = Clock::now();
      vision::PreprocessedImage pre = vision::preprocess(*image);
      auto t1 = Clock::now();
      const vision::PreprocessedImage* ptr = &pre;
      model::PixelBatch batch = model::make_pixel_batch({&ptr, 1}, at::kFloat, at::kCPU);
      best = std::min(best, std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
      best_views = std::min(best_views, std::chrono::duration<double, std::milli>(t1 - t0).count());
      if (i == 0) out["tiles"] = pre.plan.tiles;
    }
    out["ms_per_page"] = best;
    out["ms_views_only"] = best_views;
  } else if (mode == "encode") {
    auto config = weights::ModelConfig::from_file(std::string(argv[2]) + "/config.json");
    auto state = weights::StateDict::open(argv[2]);
    model::VisionModel model(*config);
    if (Status s = model->load(*state, at::kFloat, at::kCPU); !s.ok()) {
      std::cerr << s << "\n";
      return 1;
    }
    vision::PreprocessedImage pre = vision::preprocess(*image);
    const vision::PreprocessedImage* ptr = &pre;
    model::PixelBatch batch = model::make_pixel_batch({&ptr, 1}, at::kFloat, at::kCPU);
    model->encode(batch);  // warm-up
    double best = 1e30;
    for (int i = 0; i < iters; ++i) {
      auto t0 = Clock::now();
      model->encode(batch);
      best = std::min(best, std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
    out["tiles"] = pre.plan.tiles;
    out["threads"] = at::get_num_threads();
    out["ms_per_page"] = best;
  }
  std::cout << out.dump() << "\n";
  return 0;
}

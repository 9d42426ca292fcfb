// Shared by the engine's end-to-end tests: the tiny random model (made once per test process)
// and synthetic page images.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/version.h"
#include "weights/make_model.h"

namespace dsocr::engine::testing {

inline const std::filesystem::path& tiny_model() {
  static const std::filesystem::path dir = [] {
    std::filesystem::path d =
        std::filesystem::temp_directory_path() / ("dsocr_e2e_tiny_" + std::to_string(::getpid()));
    weights::MakeModelOptions o;
    o.preset = "tiny";
    o.dtype = weights::DType::kF32;
    o.out = d;
    o.tokenizer_dir = dsocr::built_model_files_dir();
    Status s = weights::make_model(o, nullptr);
    if (!s.ok()) throw std::runtime_error(s.to_string());
    // Every test case runs in its own process (ctest): without this, each left 70 MB in /tmp.
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(std::filesystem::temp_directory_path() /
                                      ("dsocr_e2e_tiny_" + std::to_string(::getpid())),
                                  ec);
    });
    return d;
  }();
  return dir;
}

// A PNG of noise with a coloured box: noise does not compress, so a large one is slow to decode.
inline std::string page_png(int w, int h, int seed) {
  cv::Mat m(h, w, CV_8UC3);
  cv::randu(m, cv::Scalar::all(0), cv::Scalar::all(255));
  cv::rectangle(m, {seed * 7 % w, 10}, {w / 2, h / 3}, cv::Scalar(seed, 255 - seed, 40), -1);
  std::vector<uint8_t> out;
  cv::imencode(".png", m, out);
  return std::string(out.begin(), out.end());
}

}  // namespace dsocr::engine::testing

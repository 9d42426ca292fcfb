// What `dsocr encode` does, behind a torch-free header so that the command-line tool stays
// torch-free: runs the vision encoder on images and writes one safetensors file with the pixel
// tensors fed to the model (pixel_values [N,3,1024,1024], pixel_values_local [T,3,768,768],
// num_local_patches [N]), every stage's output (sam_*, encoder_*, projector_* for "global" and
// "tiles") and each image's assembled block (block_{i}), all float32: the input of the parity
// tests against transformers (tests/python/test_vision_parity.py).
//
// Thread-safety: free function; loads its own copy of the vision weights.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "common/status.h"

namespace dsocr::model {

struct VisionDumpOptions {
  std::filesystem::path model_dir;
  std::vector<std::filesystem::path> images;
  std::filesystem::path out_file;
  std::string dtype = "float32";  // float32 | bfloat16
  std::string device = "cpu";
};
Status write_vision_dump(const VisionDumpOptions& options);

}  // namespace dsocr::model

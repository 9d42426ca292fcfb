// What `dsocr preprocess` and `dsocr encode` do, behind a torch-free header so the CLI stays
// torch-free.
//
//  * write_preprocess_dump: DIR/plan.json ({"width", "height", "grid": [i, j], "tiles",
//    "image_tokens", "global_size": [w, h], "paste_offset": [x, y], "content_hash"}),
//    DIR/global.png (the padded 1024x1024 view) and DIR/tile_{k}.png (768x768, row-major): the
//    uint8 RGB views exactly as they enter normalisation.
//  * write_vision_dump: runs the vision encoder on images and writes one safetensors file with
//    the pixel tensors fed to the model (pixel_values [N,3,1024,1024], pixel_values_local
//    [T,3,768,768], num_local_patches [N]), every stage's output (sam_*, encoder_*, projector_*
//    for "global" and "tiles") and each image's assembled block (block_{i}), all float32 — the
//    input of the parity tests against transformers.
//
// Thread-safety: free functions.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "common/status.h"

namespace dsocr::vision {

//    With `write_decoded`, also DIR/decoded.png: the image after EXIF orientation and RGB
//    conversion, before any resizing (to tell decoder differences from resizing ones).
Status write_preprocess_dump(const std::filesystem::path& image_path,
                             const std::filesystem::path& out_dir, bool write_decoded = false);

struct VisionDumpOptions {
  std::filesystem::path model_dir;
  std::vector<std::filesystem::path> images;
  std::filesystem::path out_file;
  std::string dtype = "float32";  // float32 | bfloat16
  std::string device = "cpu";
};
Status write_vision_dump(const VisionDumpOptions& options);

// Reads a whole file (image inputs), with a clear error.
StatusOr<std::string> read_file_bytes(const std::filesystem::path& path);

}  // namespace dsocr::vision

// What `dsocr preprocess` does: the image exactly as the model's preprocessing prepares it.
//
//  * write_preprocess_dump: DIR/plan.json ({"width", "height", "grid": [i, j], "tiles",
//    "image_tokens", "global_size": [w, h], "paste_offset": [x, y], "content_hash"}),
//    DIR/global.png (the padded 1024x1024 view) and DIR/tile_{k}.png (768x768, row-major): the
//    uint8 RGB views exactly as they enter normalisation. With `write_decoded`, also
//    DIR/decoded.png: the image after EXIF orientation and RGB conversion, before any resizing
//    (to tell decoder differences from resizing ones).
//
// `dsocr encode` (the vision encoder's stages) is engine/model/vision_dump.h.
//
// Thread-safety: free functions.
#pragma once

#include <filesystem>

#include "common/status.h"

namespace dsocr::cli {

Status write_preprocess_dump(const std::filesystem::path& image_path,
                             const std::filesystem::path& out_dir, bool write_decoded = false);

}  // namespace dsocr::cli

// Small file helpers shared by the command-line tool, benchmarks and tests.
//
// Thread-safety: free functions.
#pragma once

#include <filesystem>
#include <string>

#include "common/status.h"

namespace dsocr {

// The whole file (an image, a JSON file), or kNotFound naming the path.
StatusOr<std::string> read_file_bytes(const std::filesystem::path& path);

}  // namespace dsocr

// The dsocr version, and what this binary was built with (for --version and startup logs).
#pragma once

#include <string>

namespace dsocr {

// "0.1.0".
const char* version();
// One line: version, build type, compiler; e.g. "dsocr 0.1.0 (Release, GCC 12.2.0)".
std::string build_summary();
// Where the build copied DeepSeek-OCR-2's small model files (tokenizer.json, configs; see
// model-files/PROVENANCE.md): the demo model and `dsocr make-model` take them from here unless
// told otherwise. One definition in one file, so that build trees in other folders still share
// compiler-cache entries for everything else.
const char* built_model_files_dir();

}  // namespace dsocr

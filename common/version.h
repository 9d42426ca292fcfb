// The dsocr version, and what this binary was built with (for --version and startup logs).
#pragma once

#include <string>

namespace dsocr {

// "0.1.0".
const char* version();
// One line: version, build type, compiler; e.g. "dsocr 0.1.0 (Release, GCC 12.2.0)".
std::string build_summary();

}  // namespace dsocr

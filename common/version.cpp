#include "common/version.h"

namespace dsocr {

const char* version() { return DSOCR_VERSION_STRING; }

const char* built_model_files_dir() { return DSOCR_DEFAULT_MODEL_FILES_DIR; }

std::string build_summary() {
  std::string compiler;
#if defined(__clang__)
  compiler = "clang " __clang_version__;
#elif defined(__GNUC__)
  compiler = "GCC " __VERSION__;
#else
  compiler = "unknown compiler";
#endif
  return std::string("dsocr ") + version() + " (" + DSOCR_BUILD_TYPE_STRING + ", " + compiler + ")";
}

}  // namespace dsocr

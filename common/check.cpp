#include "common/check.h"

#include <cstdio>
#include <cstdlib>

namespace dsocr::internal {

CheckFailure::CheckFailure(const char* file, int line, const char* condition)
    : file_(file), line_(line), condition_(condition) {}

CheckFailure::~CheckFailure() {
  std::fprintf(stderr, "dsocr: check failed at %s:%d: %s %s\n", file_, line_, condition_,
               message_.str().c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace dsocr::internal

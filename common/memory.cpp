#include "common/memory.h"

#include <malloc.h>

namespace dsocr {

void use_mmap_for_large_allocations() {
  static const bool done = [] {
    mallopt(M_MMAP_THRESHOLD, 1 << 20);  // also disables the dynamic threshold
    return true;
  }();
  (void)done;
}

}  // namespace dsocr

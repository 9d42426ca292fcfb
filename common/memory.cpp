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

void reuse_heap_for_large_allocations() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's largest heap allocation on 64-bit
  mallopt(M_TRIM_THRESHOLD, 1 << 30);   // free heap memory is kept for reuse, up to 1 GiB
}

void release_free_heap_memory() { malloc_trim(0); }

}  // namespace dsocr

// Process-wide allocator settings for holding multi-GB model weights.
//
// glibc raises its mmap threshold dynamically (up to 32 MB) whenever a large block is freed, after
// which multi-MB tensors come from the heap, where freed memory is neither returned to the system
// nor always reused: loading a 3B model after freeing another model's initial values then needs
// twice the memory (measured: 22.9 GB instead of 11.6 GB for the full-size language model).
// A fixed 1 MiB threshold keeps every large tensor in its own mapping, returned on free.
//
// Thread-safety: call once at start-up, before other threads allocate.
#pragma once

namespace dsocr {

void use_mmap_for_large_allocations();

}  // namespace dsocr

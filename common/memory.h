// Process-wide allocator settings for holding multi-GB model weights.
//
// glibc raises its mmap threshold dynamically (up to 32 MB) whenever a large block is freed, after
// which multi-MB tensors come from the heap, where freed memory is neither returned to the system
// nor always reused: loading a 3B model after freeing another model's initial values then needs
// twice the memory (measured: 22.9 GB instead of 11.6 GB for the full-size language model).
// A fixed 1 MiB threshold keeps every large tensor in its own mapping, returned on free.
//
// Once the model is loaded the pressure is the opposite: every page request allocates and frees
// ~40 MB of image buffers (decoded pixels, resized views, tiles), and a fresh mapping per buffer
// is a page fault per 4 KiB (24 ms of a 61 ms A4 preprocessing). Large tensors have their own
// cache by then (weights/cpu_allocator.h); reuse_heap_for_large_allocations() lets the other
// buffers up to 32 MiB come from the heap and stay there for the next request.
//
// Thread-safety: callable from any thread (mallopt takes glibc's arena lock); the settings apply
// to allocations made after the call.
#pragma once

namespace dsocr {

void use_mmap_for_large_allocations();
void reuse_heap_for_large_allocations();
// Returns malloc's free memory (every arena, not just the top of the heap) to the system; the
// heap keeps up to M_TRIM_THRESHOLD free otherwise. For idle times: it takes the arena locks.
void release_free_heap_memory();

}  // namespace dsocr

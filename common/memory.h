// Process-wide allocator settings for holding multi-GB model weights, and what the process and
// the machine have (for sizing the engine's memory: engine/memory_plan.h).
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

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace dsocr {

void use_mmap_for_large_allocations();
void reuse_heap_for_large_allocations();
// Returns malloc's free memory (every arena, not just the top of the heap) to the system; the
// heap keeps up to M_TRIM_THRESHOLD free otherwise. For idle times: it takes the arena locks.
void release_free_heap_memory();

// This process's resident memory (VmRSS), in bytes; 0 if /proc cannot be read.
int64_t process_resident_bytes();

// Memory this process could still take: /proc/meminfo's MemAvailable, and no more than what is
// left under its cgroup's limit (memory.max - memory.current, cgroup v2) when it has one, as in
// a container with a memory limit. 0 if neither can be read.
int64_t available_memory_bytes();

// "8G", "8GiB", "512M", "1.5G", "1073741824": bytes (K, M, G, T are powers of 1024, with or
// without "iB"/"B"). kInvalidArgument for anything else, negative or over 2^62.
StatusOr<int64_t> parse_byte_size(std::string_view text);
// 1.5 GiB as "1.50 GiB" (MiB below 1 GiB).
std::string format_bytes(int64_t bytes);

}  // namespace dsocr

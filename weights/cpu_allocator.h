// A caching allocator for large CPU tensors, installed as libtorch's CPU allocator.
//
// Why: every large tensor (an attention gather, the logits, a vision activation) used to be a
// fresh mmap that the kernel zero-fills page by page on first touch and unmaps on free. A `small`
// model serving one page took 3 million page faults in 19 s, 40% of the CPU time in the kernel.
// Here each large tensor still gets a mapping of its own (so memory really goes back to the
// system, and freeing a model's initial values before loading the checkpoint cannot double the
// footprint, docs/engine.md), but a freed mapping is kept and handed to the next tensor of about
// the same size, and new mappings ask for transparent huge pages (THP "madvise" mode), so a step
// that allocates what the previous step freed touches no new page at all.
//
// Invariants: blocks below `min_bytes` go to libtorch's default allocator; a cached block is
// reused only for a request of at least 7/8 of its size (bounded waste); the cached (free) bytes
// never exceed `max_cached_bytes` after a free returns (least recently freed blocks are unmapped
// first); a failed mmap unmaps the whole cache and tries once more.
//
// Thread-safety: every function may be called from any thread (one mutex around the cache; only
// allocations of at least `min_bytes` take it).
//
// Torch-free header.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dsocr::weights {

struct CpuAllocatorOptions {
  size_t min_bytes = size_t{1} << 20;         // smaller tensors: libtorch's default allocator
  size_t max_cached_bytes = size_t{2} << 30;  // freed mappings kept for reuse, at most
};

struct CpuAllocatorStats {
  uint64_t hits = 0;          // large allocations served from the cache
  uint64_t misses = 0;        // large allocations that mapped new memory
  uint64_t mapped_bytes = 0;  // in live tensors plus in the cache
  uint64_t cached_bytes = 0;  // free, kept for reuse
};

// Installs the allocator for the process (first call wins; later calls change nothing and return
// false). Call it before loading a model: tensors allocated earlier keep their own deleters.
bool install_caching_cpu_allocator(const CpuAllocatorOptions& options = {});

CpuAllocatorStats cpu_allocator_stats();

// Unmaps every cached block (for tests and for handing memory back after a burst).
void release_cached_cpu_memory();

}  // namespace dsocr::weights

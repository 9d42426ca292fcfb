#include "weights/cpu_allocator.h"

#include <c10/core/CPUAllocator.h>
#include <sys/mman.h>
#include <unistd.h>

#include <list>
#include <map>
#include <mutex>
#include <new>
#include <unordered_map>

namespace dsocr::weights {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

// A mapping of `bytes`, aligned to a huge page when it spans one, so that THP can back it.
void* map_block(size_t bytes) {
  const size_t align = bytes >= kHugePage ? kHugePage : static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t padded = bytes + align;
  void* raw = mmap(nullptr, padded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = round_up(start, align);
  if (aligned > start) munmap(raw, aligned - start);
  const uintptr_t end = start + padded;
  if (end > aligned + bytes)
    munmap(reinterpret_cast<void*>(aligned + bytes), end - aligned - bytes);
  void* block = reinterpret_cast<void*>(aligned);
  if (bytes >= kHugePage) madvise(block, bytes, MADV_HUGEPAGE);  // advisory: fine if refused
  return block;
}

class CachingCpuAllocator final : public c10::Allocator {
 public:
  CachingCpuAllocator(const CpuAllocatorOptions& options, c10::Allocator* small)
      : options_(options), small_(small) {}

  c10::DataPtr allocate(size_t n) override {
    if (n < options_.min_bytes) return small_->allocate(n);
    void* block = acquire(n);
    if (block == nullptr) throw std::bad_alloc();
    return {block, block, &CachingCpuAllocator::release_block, c10::Device(c10::DeviceType::CPU)};
  }

  // raw_allocate()/raw_deallocate() users free through this; it takes small blocks too.
  c10::DeleterFnPtr raw_deleter() const override { return &CachingCpuAllocator::release_block; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  CpuAllocatorStats stats() {
    std::lock_guard lock(mu_);
    return stats_;
  }

  void release_cache() {
    std::lock_guard lock(mu_);
    evict_until(0);
  }

  static CachingCpuAllocator* instance;

 private:
  struct FreeBlock {
    void* ptr;
    size_t bytes;
  };
  using FreeList = std::list<FreeBlock>;  // least recently freed first

  static void release_block(void* ptr) { instance->give_back(ptr); }

  void* acquire(size_t n) {
    const size_t bytes = round_up(n, n >= kHugePage ? kHugePage : size_t{4096});
    {
      std::lock_guard lock(mu_);
      // The smallest cached block that fits, if it wastes at most 1/8 of itself.
      auto it = by_size_.lower_bound(bytes);
      if (it != by_size_.end() && it->first - it->first / 8 <= bytes) {
        FreeBlock block = *it->second;
        free_.erase(it->second);
        by_size_.erase(it);
        stats_.cached_bytes -= block.bytes;
        ++stats_.hits;
        live_.emplace(block.ptr, block.bytes);
        return block.ptr;
      }
      ++stats_.misses;
    }
    void* ptr = map_block(bytes);
    if (ptr == nullptr) {
      release_cache();
      ptr = map_block(bytes);
      if (ptr == nullptr) return nullptr;
    }
    std::lock_guard lock(mu_);
    live_.emplace(ptr, bytes);
    stats_.mapped_bytes += bytes;
    return ptr;
  }

  void give_back(void* ptr) {
    std::unique_lock lock(mu_);
    auto it = live_.find(ptr);
    if (it == live_.end()) {  // a small block, from raw_deallocate()
      lock.unlock();
      if (c10::DeleterFnPtr d = small_->raw_deleter()) d(ptr);
      return;
    }
    const size_t bytes = it->second;
    live_.erase(it);
    if (bytes > options_.max_cached_bytes) {
      unmap(ptr, bytes);
      return;
    }
    evict_until(options_.max_cached_bytes - bytes);
    free_.push_back({ptr, bytes});
    by_size_.emplace(bytes, std::prev(free_.end()));
    stats_.cached_bytes += bytes;
  }

  // Unmaps least recently freed blocks until at most `limit` bytes stay cached. Holds mu_.
  void evict_until(size_t limit) {
    while (stats_.cached_bytes > limit && !free_.empty()) {
      FreeBlock block = free_.front();
      auto range = by_size_.equal_range(block.bytes);
      for (auto it = range.first; it != range.second; ++it) {
        if (it->second == free_.begin()) {
          by_size_.erase(it);
          break;
        }
      }
      free_.pop_front();
      stats_.cached_bytes -= block.bytes;
      unmap(block.ptr, block.bytes);
    }
  }

  void unmap(void* ptr, size_t bytes) {
    munmap(ptr, bytes);
    stats_.mapped_bytes -= bytes;
  }

  const CpuAllocatorOptions options_;
  c10::Allocator* const small_;
  std::mutex mu_;
  FreeList free_;
  std::multimap<size_t, FreeList::iterator> by_size_;
  std::unordered_map<void*, size_t> live_;
  CpuAllocatorStats stats_;
};

CachingCpuAllocator* CachingCpuAllocator::instance = nullptr;
std::once_flag install_once;

}  // namespace

bool install_caching_cpu_allocator(const CpuAllocatorOptions& options) {
  bool installed = false;
  std::call_once(install_once, [&] {
    // Never destroyed: tensors may be freed during static destruction.
    CachingCpuAllocator::instance = new CachingCpuAllocator(options, c10::GetDefaultCPUAllocator());
    c10::SetCPUAllocator(CachingCpuAllocator::instance, /*priority=*/1);
    installed = true;
  });
  return installed;
}

CpuAllocatorStats cpu_allocator_stats() {
  return CachingCpuAllocator::instance ? CachingCpuAllocator::instance->stats()
                                       : CpuAllocatorStats{};
}

void release_cached_cpu_memory() {
  if (CachingCpuAllocator::instance) CachingCpuAllocator::instance->release_cache();
}

}  // namespace dsocr::weights

#include "weights/cpu_allocator.h"

#include <ATen/ATen.h>
#include <c10/core/CPUAllocator.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <vector>

namespace dsocr::weights {
namespace {

constexpr size_t kMiB = size_t{1} << 20;

// ctest runs each case in its own process: every case installs the same options.
CpuAllocatorOptions test_options() {
  CpuAllocatorOptions options;
  options.max_cached_bytes = 64 * kMiB;
  return options;
}

TEST_CASE("caching CPU allocator reuses freed large blocks", "[cpu_allocator]") {
  install_caching_cpu_allocator(test_options());
  CHECK_FALSE(install_caching_cpu_allocator(test_options()));  // first call wins
  release_cached_cpu_memory();

  const CpuAllocatorStats before = cpu_allocator_stats();
  void* first = nullptr;
  {
    at::Tensor t = at::empty({4 * 1024 * 1024}, at::kFloat);  // 16 MiB
    t.fill_(1.5f);
    first = t.data_ptr();
  }
  const CpuAllocatorStats freed = cpu_allocator_stats();
  CHECK(freed.misses == before.misses + 1);
  CHECK(freed.cached_bytes >= 16 * kMiB);

  // A slightly smaller tensor takes the cached block; its contents are the caller's to fill.
  at::Tensor again = at::empty({4 * 1024 * 1024 - 1000}, at::kFloat);
  CHECK(again.data_ptr() == first);
  CHECK(cpu_allocator_stats().hits == freed.hits + 1);
  again.fill_(2.0f);
  CHECK(again.sum().item<double>() == Approx(2.0 * again.numel()));

  // Much smaller requests do not take a big block (waste is bounded to 1/8).
  at::Tensor big = at::empty({4 * 1024 * 1024}, at::kFloat);
  void* big_ptr = big.data_ptr();
  big.reset();
  at::Tensor small = at::empty({1024 * 1024}, at::kFloat);  // 4 MiB
  CHECK(small.data_ptr() != big_ptr);

  // Small tensors bypass the cache entirely.
  const CpuAllocatorStats mid = cpu_allocator_stats();
  { at::Tensor tiny = at::ones({100}); }
  CHECK(cpu_allocator_stats().hits == mid.hits);
  CHECK(cpu_allocator_stats().misses == mid.misses);
}

TEST_CASE("caching CPU allocator keeps at most its cache limit", "[cpu_allocator]") {
  install_caching_cpu_allocator(test_options());
  release_cached_cpu_memory();
  {
    std::vector<at::Tensor> many;
    for (int i = 0; i < 10; ++i)
      many.push_back(at::empty({static_cast<int64_t>(10 * kMiB)}, at::kByte));
  }  // 100 MiB freed at once
  const CpuAllocatorStats s = cpu_allocator_stats();
  CHECK(s.cached_bytes <= 64 * kMiB);
  CHECK(s.cached_bytes > 0);
  release_cached_cpu_memory();
  CHECK(cpu_allocator_stats().cached_bytes == 0);
}

TEST_CASE("raw allocations of any size round-trip through the caching allocator",
          "[cpu_allocator]") {
  install_caching_cpu_allocator(test_options());
  c10::Allocator* allocator = c10::GetCPUAllocator();
  for (size_t bytes : {size_t{64}, size_t{4096}, 3 * kMiB}) {
    void* p = allocator->raw_allocate(bytes);
    REQUIRE(p != nullptr);
    std::memset(p, 7, bytes);
    allocator->raw_deallocate(p);
  }
}

}  // namespace
}  // namespace dsocr::weights

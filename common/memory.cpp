#include "common/memory.h"

#include <malloc.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <sstream>

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

namespace {

// The number after `key` in a "key value unit" file such as /proc/self/status, in KiB.
int64_t read_kib(const char* path, std::string_view key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, key.size(), key) != 0) continue;
    std::istringstream fields(line.substr(key.size()));
    int64_t kib = 0;
    fields >> kib;
    return kib;
  }
  return 0;
}

// A cgroup v2 file holding one number, or -1 ("max", absent, unreadable).
int64_t read_cgroup_value(const char* path) {
  std::ifstream in(path);
  std::string value;
  if (!(in >> value) || value == "max") return -1;
  char* end = nullptr;
  const long long v = std::strtoll(value.c_str(), &end, 10);
  return end && *end == '\0' && v >= 0 ? v : -1;
}

}  // namespace

int64_t process_resident_bytes() { return read_kib("/proc/self/status", "VmRSS:") * 1024; }

int64_t available_memory_bytes() {
  int64_t available = read_kib("/proc/meminfo", "MemAvailable:") * 1024;
  const int64_t limit = read_cgroup_value("/sys/fs/cgroup/memory.max");
  const int64_t used = read_cgroup_value("/sys/fs/cgroup/memory.current");
  if (limit > 0 && used >= 0) {
    const int64_t left = std::max<int64_t>(0, limit - used);
    available = available > 0 ? std::min(available, left) : left;
  }
  return available;
}

StatusOr<int64_t> parse_byte_size(std::string_view text) {
  const auto bad = [&] {
    return invalid_argument("'" + std::string(text) +
                            "' is not a size (bytes, or a number with K, M, G or T: 8G, 1.5GiB)");
  };
  std::string s(text);
  size_t digits = 0;
  while (digits < s.size() && (std::isdigit(static_cast<unsigned char>(s[digits])) || s[digits] == '.'))
    ++digits;
  if (digits == 0) return bad();
  std::string unit = s.substr(digits);
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (unit.ends_with("IB")) unit.resize(unit.size() - 2);
  else if (unit.size() > 1 && unit.ends_with("B")) unit.resize(unit.size() - 1);
  int shift = 0;
  if (unit == "" || unit == "B") shift = 0;
  else if (unit == "K") shift = 10;
  else if (unit == "M") shift = 20;
  else if (unit == "G") shift = 30;
  else if (unit == "T") shift = 40;
  else return bad();
  char* end = nullptr;
  const std::string number = s.substr(0, digits);
  const double value = std::strtod(number.c_str(), &end);
  if (end != number.c_str() + number.size() || !std::isfinite(value)) return bad();
  const double bytes = value * std::ldexp(1.0, shift);
  if (bytes > std::ldexp(1.0, 62)) return bad();
  return static_cast<int64_t>(bytes);
}

std::string format_bytes(int64_t bytes) {
  char out[32];
  if (std::abs(bytes) >= (int64_t{1} << 30))
    std::snprintf(out, sizeof out, "%.2f GiB", static_cast<double>(bytes) / (1 << 30));
  else
    std::snprintf(out, sizeof out, "%.0f MiB", static_cast<double>(bytes) / (1 << 20));
  return out;
}

}  // namespace dsocr

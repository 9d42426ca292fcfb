// The CPU memory plan (engine/memory_plan.h): the budget's default, the weights check before
// loading, and the KV cache sized within what is left, refusing when one request cannot fit.
#include "engine/memory_plan.h"

#include <catch2/catch.hpp>

#include "common/memory.h"

using namespace dsocr;
using namespace dsocr::engine;

namespace {
constexpr int64_t kMiB = int64_t{1} << 20, kGiB = int64_t{1} << 30;
}

TEST_CASE("memory plan: the default budget is what is available plus what we hold, less 10%",
          "[memory_plan]") {
  CHECK(default_cpu_memory_budget(18 * kGiB, 2 * kGiB) == 18 * kGiB);
  // At least 512 MiB stay out of the plan.
  CHECK(default_cpu_memory_budget(1 * kGiB, 0) == 512 * kMiB);
  CHECK(default_cpu_memory_budget(100 * kMiB, 0) == 0);
}

TEST_CASE("memory plan: weights that cannot fit are refused before loading", "[memory_plan]") {
  CHECK(check_weights_fit(16 * kGiB, kGiB, 13 * kGiB, true, true).ok());
  Status s = check_weights_fit(12 * kGiB, kGiB, 13 * kGiB, true, true);
  REQUIRE(s.code() == StatusCode::kResourceExhausted);
  CHECK(s.message().find("13.00 GiB (some of them widened to float32)") != std::string::npos);
  CHECK(s.message().find("--dtype bfloat16") != std::string::npos);
  CHECK(s.message().find("--cpu-memory-budget") != std::string::npos);
  CHECK(s.message().find("--weights int8") != std::string::npos);
  // Already int8: no advice to narrow them.
  Status narrow = check_weights_fit(6 * kGiB, kGiB, 6 * kGiB, false, false);
  REQUIRE_FALSE(narrow.ok());
  CHECK(narrow.message().find("--weights") == std::string::npos);
}

TEST_CASE("memory plan: the KV cache gets its share of what is left, within its limits",
          "[memory_plan]") {
  KvCacheRequest kv{.bytes_per_block = kMiB,
                    .blocks_per_request = 100,
                    .max_num_seqs = 64,
                    .memory_fraction = 0.5,
                    .cap_bytes = 0,
                    .max_model_len = 1600};
  auto plan = plan_kv_cache(10 * kGiB, 6 * kGiB, 8 * kGiB, kv);
  REQUIRE(plan.ok());
  CHECK(plan->kv_blocks == 1024);  // half of the 2 GiB left
  CHECK(plan->kv_bytes == kGiB);
  CHECK(plan->headroom() == kGiB);
  CHECK(plan->describe().find("KV cache 1.00 GiB") != std::string::npos);
  // The cap, then what max_num_seqs full-length requests need, bound it.
  kv.cap_bytes = 300 * kMiB;
  CHECK(plan_kv_cache(10 * kGiB, 6 * kGiB, 8 * kGiB, kv)->kv_blocks == 300);
  kv.max_num_seqs = 2;
  CHECK(plan_kv_cache(10 * kGiB, 6 * kGiB, 8 * kGiB, kv)->kv_blocks == 200);
  // Not one request's worth: refused, saying what to change.
  auto refused = plan_kv_cache(10 * kGiB, 6 * kGiB, 10 * kGiB - 150 * kMiB, kv);
  REQUIRE(refused.status().code() == StatusCode::kResourceExhausted);
  CHECK(refused.status().message().find("--max-model-len 1600") != std::string::npos);
  CHECK(refused.status().message().find("100 MiB") != std::string::npos);
  // Resident already over the budget.
  CHECK_FALSE(plan_kv_cache(kGiB, kGiB, 2 * kGiB, kv).ok());
}

TEST_CASE("parse_byte_size reads sizes with binary units", "[memory_plan]") {
  CHECK(*parse_byte_size("1073741824") == kGiB);
  CHECK(*parse_byte_size("8G") == 8 * kGiB);
  CHECK(*parse_byte_size("8GiB") == 8 * kGiB);
  CHECK(*parse_byte_size("8gb") == 8 * kGiB);
  CHECK(*parse_byte_size("1.5G") == kGiB + kGiB / 2);
  CHECK(*parse_byte_size("512M") == 512 * kMiB);
  CHECK(*parse_byte_size("64k") == 64 * 1024);
  CHECK(*parse_byte_size("2T") == 2048 * kGiB);
  for (const char* bad : {"", "G", "-1G", "1.2.3G", "8X", "8 G", "1e3", "99999999999T"}) {
    INFO(bad);
    CHECK_FALSE(parse_byte_size(bad).ok());
  }
  CHECK(format_bytes(3 * kGiB / 2) == "1.50 GiB");
  CHECK(format_bytes(100 * kMiB) == "100 MiB");
}

TEST_CASE("process and machine memory are read from /proc", "[memory_plan]") {
  CHECK(process_resident_bytes() > 0);
  CHECK(available_memory_bytes() > 0);
}

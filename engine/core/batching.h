// The plain value types that the scheduler shares with the engine's public face (engine/engine.h):
// how a request ended, the batching limits and the scheduler's counters. Nothing here refers to a
// request in flight, so engine.h can carry these without exposing the scheduler's internals
// (Sequence, StepPlan, BlockManager).
//
// Thread-safety: plain values.
#pragma once

#include <cstdint>
#include <string_view>

namespace dsocr::engine {

enum class FinishReason { kNone, kStop, kLength, kLoop, kCancelled, kError };
std::string_view finish_reason_name(FinishReason reason);  // "stop", "length", "loop", ...

struct SchedulerConfig {
  int64_t max_num_batched_tokens = 2048;  // tokens computed per step, all requests together
  int64_t max_num_seqs = 64;              // requests running at once
  int64_t max_model_len = 8192;           // prompt + generated tokens of one request
  int64_t max_image_tokens_per_step = 2242;  // two 6-tile pages
  int32_t eos_token_id = 1;                  // set by the engine from the model's config
};

struct PrefixCacheStats {
  uint64_t queried_tokens = 0;  // prompt tokens looked up
  uint64_t hit_tokens = 0;      // of which served from the cache
  uint64_t evicted_blocks = 0;
};

struct SchedulerStats {
  int64_t running = 0, waiting = 0;
  double kv_usage = 0.0;  // fraction of KV blocks referenced
  int64_t preemptions = 0;
  PrefixCacheStats prefix;
};

}  // namespace dsocr::engine

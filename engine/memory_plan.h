// CPU memory plan: how the engine divides a memory budget (--cpu-memory-budget; by default what
// the machine, or the process's cgroup, has available, less a margin) between the weights, the
// activations of the largest step, the KV cache and what is left for everything else (images
// waiting for the encoder, the HTTP bodies, the allocator's slack).
//
//   1. Before loading: the weights' size as they will be held (in the compute dtype, a bf16
//      checkpoint loaded as float32 taking twice its file; the language model's matrices in
//      --weights' format) plus what the process already holds must fit, or the engine
//      refuses to start (check_weights_fit), before anything big is allocated.
//   2. After loading and one maximal step through a throwaway cache: the process's resident
//      memory is weights + activations + allocator cache as they really are. The KV cache gets
//      kv_memory_fraction of what the budget has left, at most kv_cap_bytes and what max_num_seqs
//      full-length requests need, and at least what one full-length request needs, or the engine
//      refuses to start (plan_kv_cache) with a message that says which knob to turn.
// The start-up log prints the plan (CpuMemoryPlan::describe).
//
// Thread-safety: pure functions of their arguments.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace dsocr::engine {

// The budget when none is given: what is available now plus what this process already holds,
// less 10% (at least 512 MiB) for the system and the allocator's slack.
int64_t default_cpu_memory_budget(int64_t available_bytes, int64_t resident_bytes);

// Step 1. kResourceExhausted, naming the sizes and the flags that change them, when
// resident + weights exceeds the budget. `can_quantize`: the language model's matrices are wider
// than int8 (the message then names --weights int8).
Status check_weights_fit(int64_t budget_bytes, int64_t resident_bytes, int64_t weight_bytes,
                         bool widened_to_float32, bool can_quantize);

struct KvCacheRequest {
  int64_t bytes_per_block = 0;
  int64_t blocks_per_request = 0;  // one request of max_model_len
  int64_t max_num_seqs = 1;
  double memory_fraction = 0.9;  // of what the budget has left
  int64_t cap_bytes = 0;         // 0: no cap
  int64_t max_model_len = 0;     // for the message
};

struct CpuMemoryPlan {
  int64_t budget = 0;
  int64_t weights = 0;   // estimated before loading
  int64_t resident = 0;  // after loading and the maximal step (weights, activations, caches)
  int64_t kv_blocks = 0;
  int64_t kv_bytes = 0;
  int64_t headroom() const { return budget - resident - kv_bytes; }
  std::string describe() const;
};

// Step 2. kResourceExhausted when not even one full-length request's KV fits.
StatusOr<CpuMemoryPlan> plan_kv_cache(int64_t budget_bytes, int64_t weight_bytes,
                                      int64_t resident_bytes, const KvCacheRequest& kv);

}  // namespace dsocr::engine

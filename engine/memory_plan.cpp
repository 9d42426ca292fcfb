#include "engine/memory_plan.h"

#include <algorithm>

#include "common/memory.h"

namespace dsocr::engine {

int64_t default_cpu_memory_budget(int64_t available_bytes, int64_t resident_bytes) {
  const int64_t total =
      std::max<int64_t>(0, available_bytes) + std::max<int64_t>(0, resident_bytes);
  const int64_t margin = std::max<int64_t>(total / 10, int64_t{512} << 20);
  return std::max<int64_t>(0, total - margin);
}

Status check_weights_fit(int64_t budget_bytes, int64_t resident_bytes, int64_t weight_bytes,
                         bool widened_to_float32, bool can_quantize) {
  if (resident_bytes + weight_bytes <= budget_bytes) return Status();
  std::string message = "the model's weights need " + format_bytes(weight_bytes);
  if (widened_to_float32) message += " (some of them widened to float32)";
  message += " and the process holds " + format_bytes(resident_bytes) +
             " already, over the CPU memory budget of " + format_bytes(budget_bytes) +
             " (--cpu-memory-budget; by default what the machine has available, less a margin)";
  if (can_quantize)
    message += "; --weights int8 holds the language model's matrices in one byte per weight";
  if (widened_to_float32) message += "; --dtype bfloat16 halves the widened ones";
  return resource_exhausted(message);
}

StatusOr<CpuMemoryPlan> plan_kv_cache(int64_t budget_bytes, int64_t weight_bytes,
                                      int64_t resident_bytes, const KvCacheRequest& kv) {
  CpuMemoryPlan plan;
  plan.budget = budget_bytes;
  plan.weights = weight_bytes;
  plan.resident = resident_bytes;
  const int64_t left = std::max<int64_t>(0, budget_bytes - resident_bytes);
  int64_t bytes = static_cast<int64_t>(kv.memory_fraction * static_cast<double>(left));
  if (kv.cap_bytes > 0) bytes = std::min(bytes, kv.cap_bytes);
  const int64_t per_block = std::max<int64_t>(1, kv.bytes_per_block);
  plan.kv_blocks = std::min(bytes / per_block, kv.blocks_per_request * kv.max_num_seqs);
  if (plan.kv_blocks < kv.blocks_per_request) {
    return resource_exhausted(
        "the KV cache for one request of --max-model-len " + std::to_string(kv.max_model_len) +
        " tokens needs " + format_bytes(kv.blocks_per_request * per_block) + ", but only " +
        format_bytes(bytes) + " of the CPU memory budget of " + format_bytes(budget_bytes) +
        " is left after the weights and one maximal step (" + format_bytes(resident_bytes) +
        " resident, " + std::to_string(static_cast<int>(kv.memory_fraction * 100)) +
        "% of the rest for the KV cache); raise --cpu-memory-budget or --kv-memory-fraction, "
        "lower --max-model-len or --max-num-batched-tokens, or use --weights int8");
  }
  plan.kv_bytes = plan.kv_blocks * per_block;
  return plan;
}

std::string CpuMemoryPlan::describe() const {
  return "CPU memory plan: budget " + format_bytes(budget) + " = weights " + format_bytes(weights) +
         " + activations and the rest of the process " +
         format_bytes(std::max<int64_t>(0, resident - weights)) +
         " (measured after a maximal step) + KV cache " + format_bytes(kv_bytes) + " + headroom " +
         format_bytes(headroom());
}

}  // namespace dsocr::engine

#include "engine/core/sampling_params.h"

namespace dsocr::engine {

Status SamplingParams::validate() const {
  auto bad = [](const std::string& field, const std::string& why) {
    return invalid_argument("'" + field + "' " + why);
  };
  if (!(temperature >= 0.0 && temperature <= 100.0))
    return bad("temperature", "must be in [0, 100]");
  if (!(top_p > 0.0 && top_p <= 1.0)) return bad("top_p", "must be in (0, 1]");
  if (top_k < 0) return bad("top_k", "must be >= 0 (0 disables it)");
  if (!(min_p >= 0.0 && min_p <= 1.0)) return bad("min_p", "must be in [0, 1]");
  if (!(repetition_penalty > 0.0 && repetition_penalty <= 10.0))
    return bad("repetition_penalty", "must be in (0, 10]");
  if (!(frequency_penalty >= -2.0 && frequency_penalty <= 2.0))
    return bad("frequency_penalty", "must be in [-2, 2]");
  if (!(presence_penalty >= -2.0 && presence_penalty <= 2.0))
    return bad("presence_penalty", "must be in [-2, 2]");
  if (max_tokens < 0) return bad("max_tokens", "must be >= 1");
  if (ngram_size < 0) return bad("ngram_size", "must be >= 0 (0 disables it)");
  if (ngram_size > 0 && ngram_window < ngram_size)
    return bad("ngram_window", "must be >= ngram_size");
  if (loop_min_span < 0 || loop_max_period < 1) return bad("loop_min_span", "must be >= 0");
  return Status();
}

}  // namespace dsocr::engine

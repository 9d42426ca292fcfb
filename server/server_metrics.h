// ServerMetrics: every dsocr_* Prometheus metric the server exposes, in one place.
//
// Two sources. Per-request observations (finish reasons, the engine's failure reasons, latency
// histograms) are recorded by the chat handler as requests end. Engine-wide numbers
// (running/waiting, KV usage, token and cache counters) live in the engine and are copied from an
// EngineStats snapshot on every scrape; cumulative engine counters become Prometheus counters by
// adding the change since the last scrape, so they never go backwards.
//
// Thread-safety: every method may be called concurrently.
#pragma once

#include <array>
#include <mutex>
#include <string_view>

#include "common/metrics.h"
#include "engine/engine.h"

namespace dsocr::server {

struct RequestRecord {
  std::string_view finish_reason;  // stop, length, loop, cancelled, error
  std::string_view failure;  // why the engine failed it (engine::failure_reason_name); or empty
  double queue_s = 0, ttft_s = 0, e2e_s = 0, prepare_s = 0, encode_s = 0;
  bool has_timings = false;  // false for requests that failed before running
};

class ServerMetrics {
 public:
  explicit ServerMetrics(MetricsRegistry* registry);

  void observe_request(const RequestRecord& record);
  void observe_inter_token_latency(double seconds);
  // Copies engine-wide numbers; call before rendering. Without an engine (still loading), only
  // the state is set.
  void refresh(const engine::EngineStats* stats);

 private:
  MetricFamily<Counter>& requests_;
  MetricFamily<Counter>& failures_;
  Histogram &queue_, &ttft_, &itl_, &e2e_, &prepare_, &encode_;
  Gauge &running_, &waiting_, &preparing_, &kv_usage_, &kv_blocks_, &ready_, &pending_image_bytes_;
  Counter &prompt_tokens_, &image_tokens_, &generated_tokens_, &cached_tokens_;
  Counter &prefix_queried_, &prefix_hits_, &images_encoded_, &image_cache_hits_;
  Counter &preemptions_, &loops_, &steps_, &step_failures_, &vision_seconds_;

  static constexpr size_t kEngineTotals = 13;
  std::mutex mu_;
  std::array<double, kEngineTotals>
      last_totals_{};  // the totals at the last refresh; guarded by mu_
};

}  // namespace dsocr::server

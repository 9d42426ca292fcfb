#include "server/server_metrics.h"

#include <utility>

namespace dsocr::server {
namespace {

std::vector<double> latency_bounds() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
}

}  // namespace

ServerMetrics::ServerMetrics(MetricsRegistry* r)
    : requests_(r->counter("dsocr_requests_total",
                           "Chat completion requests that ended, by finish reason "
                           "(stop, length, loop, cancelled, error).",
                           {"finish_reason"})),
      failures_(r->counter("dsocr_request_failures_total",
                           "Chat completion requests the engine failed, by reason (invalid_input, "
                           "context_length_exceeded, exceeds_kv_cache, shutting_down, "
                           "step_failed).",
                           {"reason"})),
      queue_(r->histogram("dsocr_queue_time_seconds",
                          "Time from being ready to run (prepared) to first being scheduled.", {},
                          latency_bounds())
                 .labels({})),
      ttft_(r->histogram("dsocr_time_to_first_token_seconds",
                         "Time from submission to the first generated token.", {}, latency_bounds())
                .labels({})),
      itl_(r->histogram("dsocr_inter_token_latency_seconds",
                        "Time between consecutive token deliveries of a stream.", {},
                        {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5})
               .labels({})),
      e2e_(r->histogram("dsocr_e2e_request_latency_seconds",
                        "Time from submission to the last token.", {}, latency_bounds())
               .labels({})),
      prepare_(r->histogram("dsocr_image_preprocess_seconds",
                            "Per request: image decoding, preprocessing and tokenisation.", {},
                            latency_bounds())
                   .labels({})),
      encode_(r->histogram("dsocr_vision_encode_seconds",
                           "Per request with images: vision-encoder time of its images.", {},
                           latency_bounds())
                  .labels({})),
      running_(r->gauge("dsocr_requests_running", "Requests in the running batch.").labels({})),
      waiting_(r->gauge("dsocr_requests_waiting", "Requests waiting to be scheduled.").labels({})),
      preparing_(r->gauge("dsocr_requests_preparing",
                          "Requests whose images are being decoded and preprocessed.")
                     .labels({})),
      kv_usage_(
          r->gauge("dsocr_kv_cache_usage_ratio", "Fraction of KV-cache blocks in use.").labels({})),
      kv_blocks_(r->gauge("dsocr_kv_cache_blocks", "KV-cache blocks in total.").labels({})),
      ready_(
          r->gauge("dsocr_engine_ready", "1 when the engine accepts requests, else 0.").labels({})),
      pending_image_bytes_(r->gauge("dsocr_pending_image_bytes",
                                    "Image memory of requests accepted but not yet running "
                                    "(bounded by --max-pending-image-bytes).")
                               .labels({})),
      prompt_tokens_(r->counter("dsocr_prompt_tokens_total",
                                "Prompt tokens of finished requests (image tokens included).")
                         .labels({})),
      image_tokens_(
          r->counter("dsocr_image_tokens_total", "Image placeholder tokens of finished requests.")
              .labels({})),
      generated_tokens_(
          r->counter("dsocr_generation_tokens_total", "Tokens generated.").labels({})),
      cached_tokens_(r->counter("dsocr_cached_prompt_tokens_total",
                                "Prompt tokens served from the prefix cache.")
                         .labels({})),
      prefix_queried_(r->counter("dsocr_prefix_cache_queries_total",
                                 "Prompt tokens looked up in the prefix cache.")
                          .labels({})),
      prefix_hits_(
          r->counter("dsocr_prefix_cache_hits_total", "Prompt tokens found in the prefix cache.")
              .labels({})),
      images_encoded_(
          r->counter("dsocr_images_encoded_total", "Images run through the vision encoder.")
              .labels({})),
      image_cache_hits_(r->counter("dsocr_image_cache_hits_total",
                                   "Images whose embeddings came from the image cache.")
                            .labels({})),
      preemptions_(r->counter("dsocr_preemptions_total", "Requests preempted (recomputed later).")
                       .labels({})),
      loops_(r->counter("dsocr_loops_detected_total",
                        "Requests ended early by the repetition-loop detector.")
                 .labels({})),
      steps_(r->counter("dsocr_engine_steps_total", "Engine steps run.").labels({})),
      step_failures_(r->counter("dsocr_engine_step_failures_total",
                                "Engine steps that failed; their requests failed, the engine went "
                                "on serving.")
                         .labels({})),
      vision_seconds_(r->counter("dsocr_vision_encode_seconds_total",
                                 "Wall time spent in vision-encoder steps.")
                          .labels({})) {}

void ServerMetrics::observe_request(const RequestRecord& record) {
  requests_.labels({std::string(record.finish_reason)}).inc();
  if (!record.failure.empty()) failures_.labels({std::string(record.failure)}).inc();
  if (!record.has_timings) return;
  queue_.observe(record.queue_s);
  if (record.ttft_s > 0) ttft_.observe(record.ttft_s);
  e2e_.observe(record.e2e_s);
  prepare_.observe(record.prepare_s);
  if (record.encode_s > 0) encode_.observe(record.encode_s);
}

void ServerMetrics::observe_inter_token_latency(double seconds) { itl_.observe(seconds); }

void ServerMetrics::refresh(const engine::EngineStats* stats) {
  if (!stats) {
    ready_.set(0);
    return;
  }
  ready_.set(stats->state == engine::EngineState::kReady ? 1 : 0);
  running_.set(static_cast<double>(stats->scheduler.running));
  waiting_.set(static_cast<double>(stats->scheduler.waiting));
  preparing_.set(static_cast<double>(stats->queued_for_preparation));
  kv_usage_.set(stats->scheduler.kv_usage);
  kv_blocks_.set(static_cast<double>(stats->kv_blocks));
  pending_image_bytes_.set(static_cast<double>(stats->pending_image_bytes));
  const std::array<std::pair<Counter*, double>, kEngineTotals> totals = {{
      {&prompt_tokens_, static_cast<double>(stats->prompt_tokens)},
      {&image_tokens_, static_cast<double>(stats->image_tokens)},
      {&generated_tokens_, static_cast<double>(stats->generated_tokens)},
      {&cached_tokens_, static_cast<double>(stats->cached_tokens)},
      {&prefix_queried_, static_cast<double>(stats->scheduler.prefix.queried_tokens)},
      {&prefix_hits_, static_cast<double>(stats->scheduler.prefix.hit_tokens)},
      {&images_encoded_, static_cast<double>(stats->images_encoded)},
      {&image_cache_hits_, static_cast<double>(stats->image_cache_hits)},
      {&preemptions_, static_cast<double>(stats->scheduler.preemptions)},
      {&loops_, static_cast<double>(stats->loops_detected)},
      {&steps_, static_cast<double>(stats->steps)},
      {&step_failures_, static_cast<double>(stats->step_failures)},
      {&vision_seconds_, stats->vision_encode_seconds},
  }};
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < totals.size(); ++i) {
    const auto [counter, now] = totals[i];
    if (now > last_totals_[i]) {
      counter->inc(now - last_totals_[i]);
      last_totals_[i] = now;
    }
  }
}

}  // namespace dsocr::server

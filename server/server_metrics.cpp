#include "server/server_metrics.h"

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
      vision_seconds_(r->counter("dsocr_vision_encode_seconds_total",
                                 "Wall time spent in vision-encoder steps.")
                          .labels({})) {}

void ServerMetrics::observe_request(const RequestRecord& record) {
  requests_.labels({std::string(record.finish_reason)}).inc();
  if (!record.has_timings) return;
  queue_.observe(record.queue_s);
  if (record.ttft_s > 0) ttft_.observe(record.ttft_s);
  e2e_.observe(record.e2e_s);
  prepare_.observe(record.prepare_s);
  if (record.encode_s > 0) encode_.observe(record.encode_s);
}

void ServerMetrics::observe_inter_token_latency(double seconds) { itl_.observe(seconds); }

void ServerMetrics::advance(Counter& counter, double now, double* last) {
  if (now > *last) counter.inc(now - *last);
  *last = std::max(*last, now);
}

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
  std::lock_guard lock(mu_);
  auto step = [&](Counter& c, auto now, auto& last) {
    double l = static_cast<double>(last);
    advance(c, static_cast<double>(now), &l);
    last = static_cast<std::remove_reference_t<decltype(last)>>(l);
  };
  step(prompt_tokens_, stats->prompt_tokens, last_.prompt_tokens);
  step(image_tokens_, stats->image_tokens, last_.image_tokens);
  step(generated_tokens_, stats->generated_tokens, last_.generated_tokens);
  step(cached_tokens_, stats->cached_tokens, last_.cached_tokens);
  step(prefix_queried_, stats->scheduler.prefix.queried_tokens,
       last_.scheduler.prefix.queried_tokens);
  step(prefix_hits_, stats->scheduler.prefix.hit_tokens, last_.scheduler.prefix.hit_tokens);
  step(images_encoded_, stats->images_encoded, last_.images_encoded);
  step(image_cache_hits_, stats->image_cache_hits, last_.image_cache_hits);
  step(preemptions_, stats->scheduler.preemptions, last_.scheduler.preemptions);
  step(loops_, stats->loops_detected, last_.loops_detected);
  step(steps_, stats->steps, last_.steps);
  step(vision_seconds_, stats->vision_encode_seconds, last_.vision_encode_seconds);
}

}  // namespace dsocr::server

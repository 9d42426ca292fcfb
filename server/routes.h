// The routes other than chat (server/chat_handler.h), each a function from what the server knows
// now and the request to the whole response:
//   GET  /health        200 {"status":"ok"} when ready; 503 (Retry-After) loading, draining,
//   unhealthy GET  /v1/models     the one served model GET  /metrics       Prometheus text
//   (server/server_metrics.h) POST /tokenize      {"prompt"} -> {"tokens","count","max_model_len"},
//   the engine's tokenizer POST /detokenize    {"tokens"} -> {"prompt"}
// Errors have the OpenAI shape (server/openai_errors.h). server/http_server.cpp maps paths to them.
//
// Thread-safety: pure functions of their arguments; the engine's methods are thread-safe.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "common/metrics.h"
#include "engine/engine.h"
#include "server/http/http_message.h"
#include "server/server_metrics.h"

namespace dsocr::server {

struct ServedModel {
  std::string id;           // what /v1/models lists and requests must name
  std::string description;  // where it came from, for logs and /health
};

// A route's view of the server, taken when the request arrives.
struct ServingSnapshot {
  const ServedModel* model = nullptr;
  std::chrono::system_clock::time_point started;
  std::shared_ptr<engine::Engine> engine;  // null while the model loads
  bool draining = false;
};

http::HttpResponse health_route(const ServingSnapshot& now);
http::HttpResponse models_route(const ServingSnapshot& now);
http::HttpResponse tokenize_route(const ServingSnapshot& now, const http::HttpRequest& request);
http::HttpResponse detokenize_route(const ServingSnapshot& now, const http::HttpRequest& request);

// The caller sets the transport's own gauges first; this refreshes the engine's numbers and renders
// every metric of `registry`.
http::HttpResponse metrics_route(const ServingSnapshot& now, ServerMetrics* server_metrics,
                                 const MetricsRegistry& registry);

}  // namespace dsocr::server

#include "server/routes.h"

#include <nlohmann/json.hpp>

#include "server/openai_errors.h"

namespace dsocr::server {
namespace {

using json = nlohmann::json;

http::HttpResponse json_response(const json& body, int status = 200) {
  http::HttpResponse r;
  r.status = status;
  r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  return r;
}

// "ok", "loading", "draining" or "unhealthy", with a reason for the last.
std::pair<std::string, std::string> health(const ServingSnapshot& now) {
  if (now.draining) return {"draining", ""};
  if (!now.engine) return {"loading", ""};
  switch (now.engine->state()) {
    case engine::EngineState::kReady:
      return {"ok", ""};
    case engine::EngineState::kLoading:
      return {"loading", ""};
    case engine::EngineState::kDraining:
    case engine::EngineState::kStopped:
      return {"draining", ""};
    case engine::EngineState::kUnhealthy:
      return {"unhealthy", "the engine failed"};
  }
  return {"unhealthy", ""};
}

// The body as a JSON object, or the 400 that says it is not one.
std::optional<json> json_object(const http::HttpRequest& request, http::HttpResponse* error_out) {
  json body = json::parse(request.body, nullptr, false);
  if (body.is_discarded() || !body.is_object()) {
    *error_out = error_response(invalid_argument("the body must be a JSON object"));
    return std::nullopt;
  }
  return body;
}

}  // namespace

http::HttpResponse health_route(const ServingSnapshot& now) {
  auto [status, reason] = health(now);
  json body = {{"status", status}, {"model", now.model->id}};
  if (!reason.empty()) body["reason"] = reason;
  http::HttpResponse r = json_response(body, status == "ok" ? 200 : 503);
  if (r.status == 503) r.set_header("Retry-After", "5");
  return r;
}

http::HttpResponse models_route(const ServingSnapshot& now) {
  json entry = {{"id", now.model->id},
                {"object", "model"},
                {"created", std::chrono::system_clock::to_time_t(now.started)},
                {"owned_by", "dsocr"}};
  if (now.engine) entry["max_model_len"] = now.engine->max_model_len();
  return json_response({{"object", "list"}, {"data", json::array({entry})}});
}

http::HttpResponse metrics_route(const ServingSnapshot& now, ServerMetrics* server_metrics,
                                 const MetricsRegistry& registry) {
  if (now.engine) {
    engine::EngineStats stats = now.engine->stats();
    server_metrics->refresh(&stats);
  } else {
    server_metrics->refresh(nullptr);
  }
  http::HttpResponse r;
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  r.body = registry.render();
  return r;
}

http::HttpResponse tokenize_route(const ServingSnapshot& now, const http::HttpRequest& request) {
  auto tokenizer = now.engine ? now.engine->tokenizer() : nullptr;
  if (!tokenizer) return error_response(unavailable("the model is still loading"));
  http::HttpResponse bad;
  auto body = json_object(request, &bad);
  if (!body) return bad;
  auto prompt = body->find("prompt");
  if (prompt == body->end() || !prompt->is_string()) {
    return error_response(invalid_argument("prompt: must be a string"), "prompt");
  }
  std::vector<int32_t> ids = tokenizer->encode(prompt->get<std::string>());
  return json_response(
      {{"tokens", ids}, {"count", ids.size()}, {"max_model_len", now.engine->max_model_len()}});
}

http::HttpResponse detokenize_route(const ServingSnapshot& now, const http::HttpRequest& request) {
  auto tokenizer = now.engine ? now.engine->tokenizer() : nullptr;
  if (!tokenizer) return error_response(unavailable("the model is still loading"));
  http::HttpResponse bad;
  auto body = json_object(request, &bad);
  if (!body) return bad;
  auto tokens = body->find("tokens");
  if (tokens == body->end() || !tokens->is_array()) {
    return error_response(invalid_argument("tokens: must be an array of token ids"), "tokens");
  }
  std::vector<int32_t> ids;
  for (const json& t : *tokens) {
    if (!t.is_number_integer() || t.get<int64_t>() < 0 ||
        t.get<int64_t>() >= tokenizer->vocab_size()) {
      return error_response(invalid_argument("tokens: every id must be an integer in [0, " +
                                             std::to_string(tokenizer->vocab_size()) + ")"),
                            "tokens");
    }
    ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  return json_response({{"prompt", tokenizer->decode(ids)}});
}

}  // namespace dsocr::server

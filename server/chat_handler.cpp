#include "server/chat_handler.h"

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>

#include "common/logging.h"
#include "common/version.h"
#include "server/completion_text.h"
#include "server/http/http_listener.h"
#include "server/openai_errors.h"
#include "server/sse_writer.h"
#include "tokenizer/ocr_prompt.h"

namespace dsocr::server {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

const std::string& system_fingerprint() {
  static const std::string fingerprint = std::string("dsocr-") + version();
  return fingerprint;
}

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// OpenAI's finish_reason for an engine finish; a detected loop is a "stop" with a stop_reason.
std::string_view openai_finish_reason(engine::FinishReason reason) {
  return reason == engine::FinishReason::kLength ? "length" : "stop";
}

json usage_json(const engine::Usage& u, int64_t completion_tokens) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", u.prompt_tokens + completion_tokens},
          {"prompt_tokens_details",
           {{"cached_tokens", u.cached_tokens}, {"image_tokens", u.image_tokens}}}};
}

// The SSE error event: {"error": {"message", "type", "param", "code"}}, the same object an error
// response's body holds.
json error_event(const ApiError& error) {
  return json::parse(openai_error_body(error.status, error.param, error.code));
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace

// One request's state, on its handler thread.
struct ChatHandler::Call {
  ChatHandler* handler = nullptr;
  http::Exchange* exchange = nullptr;
  std::string request_id;
  std::string id;  // chatcmpl-<request id>
  ChatRequest request;
  std::shared_ptr<engine::Engine> engine;
  std::shared_ptr<engine::RequestStream> stream;
  std::optional<CompletionText> text;
  Clock::time_point arrived = Clock::now();
  Clock::time_point last_token;
  int64_t created = std::chrono::duration_cast<std::chrono::seconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
  int64_t completion_tokens = 0;
  bool finished = false;
  bool client_left = false;
  bool logged = false;
  std::string pending;  // text produced before the stream started
  engine::StreamEvent final_event;

  ~Call() {
    if (stream && !finished) stream->cancel();  // the client left or the server is stopping
    --handler->active_;
  }

  http::Headers headers() const { return {{"X-Request-Id", request_id}}; }

  bool gone() {
    if (!client_left && exchange->client_gone()) client_left = true;
    return client_left;
  }

  // Next engine event, probing the client at least every disconnect_poll_ms (also while events
  // keep arriving); nullopt when the client left or max_wait_ms passed.
  std::optional<engine::StreamEvent> next_event(int64_t max_wait_ms) {
    const auto poll_every = milliseconds(handler->options_.disconnect_poll_ms);
    const auto deadline = Clock::now() + milliseconds(max_wait_ms);
    auto last_probe = Clock::now() - poll_every;
    for (;;) {
      const auto now = Clock::now();
      if (now - last_probe >= poll_every) {
        last_probe = now;
        if (gone()) return std::nullopt;
      }
      const auto remaining = std::chrono::duration_cast<milliseconds>(deadline - now);
      if (auto e = stream->next(std::clamp(remaining, milliseconds(0), poll_every))) return e;
      if (Clock::now() >= deadline) return std::nullopt;
    }
  }

  // An engine event -> the new text; a stop string cancels the request here, a final event
  // ends the call.
  std::string take(engine::StreamEvent e) {
    if (!e.token_ids.empty()) {
      const auto now = Clock::now();
      if (completion_tokens > 0) {
        handler->metrics_->observe_inter_token_latency(
            std::chrono::duration<double>(now - last_token).count());
      }
      last_token = now;
    }
    std::string delta;
    if (!text->stopped_by_string()) {
      completion_tokens += static_cast<int64_t>(e.token_ids.size());
      delta = text->push(e.token_ids);
      if (text->stopped_by_string()) stream->cancel();
    }
    if (e.finished) {
      finished = true;
      final_event = std::move(e);
    }
    return delta;
  }

  // How a finished call failed: an engine error (by its typed reason), or a cancellation nobody
  // here asked for (the engine draining at shutdown). A stop string's own cancellation is a
  // normal end.
  std::optional<ApiError> failure() const {
    const engine::FinishReason reason = final_event.finish_reason;
    if (reason == engine::FinishReason::kError) {
      return engine_failure_error(final_event.failure, final_event.error, request_id);
    }
    if (reason == engine::FinishReason::kCancelled && !text->stopped_by_string()) {
      return engine_failure_error(engine::FailureReason::kShuttingDown, final_event.error,
                                  request_id);
    }
    return std::nullopt;
  }

  std::string_view finish_reason() const {
    return text->stopped_by_string() ? "stop" : openai_finish_reason(final_event.finish_reason);
  }

  json stop_reason() const {
    if (text->stopped_by_string()) return "stop_string";
    if (final_event.finish_reason == engine::FinishReason::kLoop) return "repetition_loop";
    return nullptr;
  }

  // The metrics label and log word for how a successful call ended.
  std::string_view outcome() const {
    return text->stopped_by_string() ? "stop"
                                     : engine::finish_reason_name(final_event.finish_reason);
  }

  // The fields every stream chunk shares.
  json chunk(json choices) const {
    json j = {{"id", id},
              {"object", "chat.completion.chunk"},
              {"created", created},
              {"model", handler->options_.model_id},
              {"system_fingerprint", system_fingerprint()},
              {"choices", std::move(choices)}};
    if (request.include_usage) j["usage"] = nullptr;
    return j;
  }

  json choice_chunk(json delta, json finish_reason) const {
    return chunk(json::array({{{"index", 0},
                               {"delta", std::move(delta)},
                               {"logprobs", nullptr},
                               {"finish_reason", std::move(finish_reason)}}}));
  }

  // An error answer (before any 200 was sent).
  void fail(const ApiError& error) {
    http::HttpResponse r = error_response(error);
    r.set_header("X-Request-Id", request_id);
    record("error", r.status);
    exchange->respond(r);
  }

  // The client left before anything was sent: nobody reads an answer, but the transport needs
  // one; 499 is what the logs and metrics show. When it is the server that is stopping, the
  // client is still there and gets a 503 it can retry elsewhere.
  void abandon() {
    if (exchange->server_stopping()) {
      return fail({unavailable("the server is shutting down; retry on another replica"), {}, {}});
    }
    exchange->close_after();
    http::HttpResponse r = error_response(499, "the client closed the request");
    r.set_header("X-Request-Id", request_id);
    record("cancelled", 499);
    exchange->respond(r);
  }

  // The request's summary: one log line and its metrics.
  void record(std::string_view result, int status) {
    if (logged) return;
    logged = true;
    log::ScopedRequestId scoped(request_id);
    const auto& u = final_event.usage;
    const auto& t = final_event.timings;
    const bool failed = final_event.failure != engine::FailureReason::kNone;
    if (final_event.failure == engine::FailureReason::kStepFailed) {
      // The client was told only that it failed; the cause is for the operator.
      log::get("chat")->error("{}", final_event.error.message());
    }
    handler->metrics_->observe_request(
        {.finish_reason = result,
         .failure = failed ? engine::failure_reason_name(final_event.failure) : std::string_view(),
         .queue_s = t.queue_ms / 1000,
         .ttft_s = t.ttft_ms / 1000,
         .e2e_s = t.total_ms / 1000,
         .prepare_s = t.prepare_ms / 1000,
         .encode_s = t.encode_ms / 1000,
         .has_timings = finished && t.total_ms > 0});
    log::get("chat")->info(
        "chat {} {}: {} images, prompt {} tokens ({} image, {} cached), completion {}, "
        "ttft {:.0f} ms, {:.0f} ms total, finish {}",
        status, request.stream ? "stream" : "json", request.images.size(), u.prompt_tokens,
        u.image_tokens, u.cached_tokens, completion_tokens, t.ttft_ms,
        seconds_since(arrived) * 1000, result);
  }
};

ChatHandler::ChatHandler(ChatHandlerOptions options, ServingState state, ServerMetrics* metrics)
    : options_(std::move(options)),
      state_(std::move(state)),
      metrics_(metrics),
      fetcher_(options_.fetch) {}

void ChatHandler::handle(http::Exchange& exchange, const std::string& request_id) {
  ++active_;
  Call call;
  call.handler = this;
  call.exchange = &exchange;
  call.request_id = request_id;
  call.id = "chatcmpl-" + request_id;
  run(call);
}

void ChatHandler::run(Call& call) {
  const http::HttpRequest& req = call.exchange->request();
  json body = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded())
    return call.fail({invalid_argument("the request body is not valid JSON"), {}, {}});
  if (!body.is_object()) {
    return call.fail({invalid_argument("the request body must be a JSON object"), {}, {}});
  }
  if (ApiError e = parse_chat_request(body, options_.limits, &call.request); !e.ok()) {
    return call.fail(e);
  }
  body = json();  // the images are still in request.images; the parsed tree is not needed
  ChatRequest& r = call.request;
  if (r.model != options_.model_id) {
    return call.fail({not_found("the model '" + r.model + "' does not exist; this server serves '" +
                                options_.model_id + "' (GET /v1/models)"),
                      "model", "model_not_found"});
  }
  auto prompt = r.prompt_text();
  if (!prompt.ok()) return call.fail({prompt.status(), "messages", {}});
  if (state_.draining()) {
    return call.fail(
        {unavailable("the server is shutting down; retry on another replica"), {}, {}});
  }
  call.engine = state_.engine();
  auto tokenizer = call.engine ? call.engine->tokenizer() : nullptr;
  if (!call.engine || !tokenizer || call.engine->state() != engine::EngineState::kReady) {
    return call.fail({unavailable("the model is still loading; retry shortly"), {}, {}});
  }

  engine::GenerateRequest g;
  g.request_id = call.request_id;
  g.prompt = std::move(prompt).value();
  g.sampling = r.sampling;
  g.cache_salt = r.cache_salt;
  // One deadline for all of the request's fetches; they stop when the client leaves or the
  // server begins to drain.
  FetchControl control;
  control.deadline = Clock::now() + milliseconds(options_.fetch.total_timeout_ms);
  control.cancelled = [&] { return call.gone() || state_.draining(); };
  for (ImageInput& image : r.images) {
    auto bytes = fetcher_.fetch(image.url, control);
    if (call.client_left) return call.abandon();
    if (!bytes.ok()) {
      if (state_.draining()) break;  // answered 503 below
      const StatusCode code = bytes.status().code();
      return call.fail({bytes.status(), image.param,
                        code == StatusCode::kDeadlineExceeded    ? "image_fetch_timeout"
                        : code == StatusCode::kResourceExhausted ? ""
                                                                 : "invalid_image_url"});
    }
    g.images.push_back(std::move(bytes).value());
    image.url = std::string();  // a data: URI can be megabytes; its bytes are in g now
  }
  if (state_.draining()) {
    return call.fail(
        {unavailable("the server is shutting down; retry on another replica"), {}, {}});
  }
  auto submitted = call.engine->submit(std::move(g));
  if (!submitted.ok()) return call.fail({submitted.status(), {}, {}});
  call.stream = *submitted;

  std::vector<int32_t> end_ids = r.sampling.stop_token_ids;
  if (auto eos = tokenizer->token_to_id(tokenizer::kEosToken)) {
    end_ids.push_back(*eos);
  }
  call.text.emplace(tokenizer, r.skip_special_tokens, std::move(end_ids), r.stop);

  // The first event says whether the engine took the request (images decoded, prompt within the
  // context): until then the answer can still be a 4xx.
  std::optional<engine::StreamEvent> first;
  while (!first) {
    first = call.next_event(options_.keepalive_interval_ms);
    if (call.client_left) return call.abandon();
  }
  // Usually the bare "accepted" event; an engine that sends tokens right away is served too.
  call.pending = call.take(std::move(*first));
  if (call.finished && call.final_event.finish_reason == engine::FinishReason::kError) {
    return call.fail(*call.failure());
  }
  if (r.stream) return stream(call);

  // Non-streaming: collect everything, then answer once.
  std::string content = std::move(call.pending);
  while (!call.finished) {
    auto e = call.next_event(options_.keepalive_interval_ms);
    if (call.client_left) return call.abandon();
    if (e) content += call.take(std::move(*e));
  }
  if (auto failed = call.failure()) return call.fail(*failed);
  content += call.text->finish();
  json choice = {{"index", 0},
                 {"message", {{"role", "assistant"}, {"content", content}, {"refusal", nullptr}}},
                 {"logprobs", nullptr},
                 {"finish_reason", call.finish_reason()}};
  if (json reason = call.stop_reason(); !reason.is_null()) choice["stop_reason"] = reason;
  json answer = {{"id", call.id},
                 {"object", "chat.completion"},
                 {"created", call.created},
                 {"model", options_.model_id},
                 {"system_fingerprint", system_fingerprint()},
                 {"choices", json::array({choice})},
                 {"usage", usage_json(call.final_event.usage, call.completion_tokens)}};
  http::HttpResponse response;
  response.headers = call.headers();
  response.body = dump(answer);
  // Recorded before it is sent: a client holding the answer reads metrics that count it.
  call.record(call.outcome(), 200);
  call.exchange->respond(response);
}

void ChatHandler::stream(Call& c) {
  SseWriter sse(*c.exchange);
  // A write that fails means the client left: the request is recorded as cancelled and ~Call
  // cancels it in the engine.
  auto left = [&] {
    if (c.exchange->server_stopping()) {  // the client is still there: tell it why it ends
      sse.event(error_event({unavailable("the server is shutting down; retry"), {}, {}}));
      sse.done();
      c.record("cancelled", 200);
      sse.end();
      return;
    }
    c.record("cancelled", 499);
  };
  if (!sse.start(c.headers())) return left();
  if (!sse.event(c.choice_chunk({{"role", "assistant"}, {"content", ""}}, nullptr))) return left();
  std::string delta = std::move(c.pending);
  while (!c.finished) {
    if (!delta.empty() && !sse.event(c.choice_chunk({{"content", delta}}, nullptr))) return left();
    delta.clear();
    auto e = c.next_event(options_.keepalive_interval_ms);
    if (c.client_left) return left();
    if (!e) {
      if (!sse.keep_alive()) return left();
      continue;
    }
    delta = c.take(std::move(*e));
  }
  if (auto failed = c.failure()) {
    sse.event(error_event(*failed));
    if (!sse.done()) return left();
    return c.record(
        c.final_event.finish_reason == engine::FinishReason::kError ? "error" : "cancelled", 200);
  }
  delta += c.text->finish();
  if (!delta.empty() && !sse.event(c.choice_chunk({{"content", delta}}, nullptr))) return left();
  json last = c.choice_chunk(json::object(), c.finish_reason());
  if (json reason = c.stop_reason(); !reason.is_null()) last["choices"][0]["stop_reason"] = reason;
  if (!sse.event(last)) return left();
  if (c.request.include_usage) {
    json usage = c.chunk(json::array());
    usage["usage"] = usage_json(c.final_event.usage, c.completion_tokens);
    if (!sse.event(usage)) return left();
  }
  if (!sse.done()) return left();
  c.record(c.outcome(), 200);
  sse.end();
}

}  // namespace dsocr::server

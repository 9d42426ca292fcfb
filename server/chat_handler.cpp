#include "server/chat_handler.h"

#include <httplib.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>

#include "common/logging.h"
#include "common/version.h"
#include "server/completion_text.h"
#include "server/connection_probe.h"
#include "server/openai_errors.h"
#include "tokenizer/ocr_prompt.h"

namespace dsocr::server {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr std::string_view kDone = "data: [DONE]\n\n";
constexpr std::string_view kKeepAlive = ": keep-alive\n\n";

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

ApiError from_status(Status status) {
  ApiError e{std::move(status), {}, {}};
  if (e.status.code() == StatusCode::kOutOfRange &&
      e.status.message().starts_with(engine::kContextLengthExceeded)) {
    e.code = std::string(engine::kContextLengthExceeded);
    e.param = "messages";
    e.status = invalid_argument(e.status.message());
  }
  return e;
}

json usage_json(const engine::Usage& u, int64_t completion_tokens) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", u.prompt_tokens + completion_tokens},
          {"prompt_tokens_details",
           {{"cached_tokens", u.cached_tokens}, {"image_tokens", u.image_tokens}}}};
}

json error_json(const ApiError& error) {
  return json::parse(openai_error_body(error.status, error.param, error.code));
}

}  // namespace

void send_api_error(httplib::Response& res, const ApiError& error) {
  res.status = error.status.http_status();
  if (res.status == 429 || res.status == 503) res.set_header("Retry-After", "1");
  res.set_content(openai_error_body(error.status, error.param, error.code), "application/json");
}

// One request's state, shared by the handler and (for streams) the content provider, which
// cpp-httplib calls after handle() has returned.
struct ChatHandler::Call {
  ChatHandler* handler = nullptr;
  std::string request_id;
  std::string id;  // chatcmpl-<request id>
  ChatRequest request;
  std::shared_ptr<engine::Engine> engine;  // kept alive while its stream is
  std::shared_ptr<engine::RequestStream> stream;
  std::optional<CompletionText> text;
  std::optional<ConnectionProbe> probe;
  Clock::time_point arrived = Clock::now();
  Clock::time_point last_token, last_probe;
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

  // Next engine event, probing the client at least every disconnect_poll_ms (also while events
  // keep arriving); nullopt when the client left or max_wait_ms passed.
  std::optional<engine::StreamEvent> next_event(int64_t max_wait_ms) {
    const auto poll_every = milliseconds(handler->options_.disconnect_poll_ms);
    const auto deadline = Clock::now() + milliseconds(max_wait_ms);
    for (;;) {
      const auto now = Clock::now();
      if (probe && now - last_probe >= poll_every) {
        last_probe = now;
        if (probe->peer_closed()) {
          client_left = true;
          return std::nullopt;
        }
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

  // How a finished call failed: an engine error, or a cancellation nobody here asked for (the
  // engine draining at shutdown). A stop string's own cancellation is a normal end.
  std::optional<ApiError> failure() const {
    const engine::FinishReason reason = final_event.finish_reason;
    if (reason == engine::FinishReason::kError) return from_status(final_event.error);
    if (reason == engine::FinishReason::kCancelled && !text->stopped_by_string()) {
      return from_status(unavailable("the server is shutting down; retry"));
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

  // The request's summary: one log line and its metrics.
  void record(std::string_view result, int status) {
    if (logged) return;
    logged = true;
    log::ScopedRequestId scoped(request_id);
    const auto& u = final_event.usage;
    const auto& t = final_event.timings;
    handler->metrics_->observe_request({.finish_reason = result,
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

void ChatHandler::handle(const httplib::Request& req, httplib::Response& res) {
  ++active_;
  auto call = std::make_shared<Call>();
  call->handler = this;
  call->request_id = res.get_header_value("X-Request-Id");
  call->id = "chatcmpl-" + call->request_id;
  run(*call, req, res);
  if (call->stream && !call->client_left && res.status == 200 && call->request.stream) {
    // Streaming: the content provider owns the call from here.
    res.set_chunked_content_provider(
        "text/event-stream",
        [call](size_t, httplib::DataSink& sink) {
          Call& c = *call;
          log::ScopedRequestId scoped(c.request_id);
          auto send = [&](const json& j) {
            std::string line =
                "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
            return sink.write(line.data(), line.size());
          };
          auto done = [&](std::string_view result) {
            if (!sink.write(kDone.data(), kDone.size())) return false;
            c.record(result, 200);
            sink.done();
            return true;
          };
          if (!send(c.choice_chunk({{"role", "assistant"}, {"content", ""}}, nullptr))) {
            return false;
          }
          std::string delta = std::move(c.pending);
          while (!c.finished) {
            if (!delta.empty() && !send(c.choice_chunk({{"content", delta}}, nullptr))) {
              return false;
            }
            delta.clear();
            auto e = c.next_event(c.handler->options_.keepalive_interval_ms);
            if (c.client_left) return false;
            if (!e) {
              if (!sink.write(kKeepAlive.data(), kKeepAlive.size())) return false;
              continue;
            }
            delta = c.take(std::move(*e));
          }
          if (auto failed = c.failure()) {
            send({{"error", error_json(*failed)}});
            return done(c.final_event.finish_reason == engine::FinishReason::kError ? "error"
                                                                                    : "cancelled");
          }
          delta += c.text->finish();
          if (!delta.empty() && !send(c.choice_chunk({{"content", delta}}, nullptr))) return false;
          json last = c.choice_chunk(json::object(), c.finish_reason());
          if (json reason = c.stop_reason(); !reason.is_null()) {
            last["choices"][0]["stop_reason"] = reason;
          }
          if (!send(last)) return false;
          if (c.request.include_usage) {
            json usage = c.chunk(json::array());
            usage["usage"] = usage_json(c.final_event.usage, c.completion_tokens);
            if (!send(usage)) return false;
          }
          return done(c.outcome());
        },
        [call](bool) {
          // Runs when the response is destroyed, streamed or not: a stream that never finished
          // (client gone, write failed) is recorded as cancelled; ~Call cancels it.
          if (!call->finished) call->record("cancelled", 499);
        });
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
  }
}

void ChatHandler::run(Call& call, const httplib::Request& req, httplib::Response& res) {
  auto fail = [&](const ApiError& error) {
    send_api_error(res, error);
    call.record("error", res.status);
  };
  json body = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded())
    return fail({invalid_argument("the request body is not valid JSON"), {}, {}});
  if (!body.is_object()) {
    return fail({invalid_argument("the request body must be a JSON object"), {}, {}});
  }
  if (ApiError e = parse_chat_request(body, options_.limits, &call.request); !e.ok()) {
    return fail(e);
  }
  ChatRequest& r = call.request;
  if (r.model != options_.model_id) {
    return fail({not_found("the model '" + r.model + "' does not exist; this server serves '" +
                           options_.model_id + "' (GET /v1/models)"),
                 "model", "model_not_found"});
  }
  auto prompt = r.prompt_text();
  if (!prompt.ok()) return fail({prompt.status(), "messages", {}});
  if (state_.draining()) {
    return fail({unavailable("the server is shutting down; retry on another replica"), {}, {}});
  }
  call.engine = state_.engine();
  auto tokenizer = state_.tokenizer();
  if (!call.engine || !tokenizer || call.engine->state() != engine::EngineState::kReady) {
    return fail({unavailable("the model is still loading; retry shortly"), {}, {}});
  }

  engine::GenerateRequest g;
  g.request_id = call.request_id;
  g.prompt = std::move(prompt).value();
  g.sampling = r.sampling;
  for (const ImageInput& image : r.images) {
    auto bytes = fetcher_.fetch(image.url);
    if (!bytes.ok()) return fail({bytes.status(), image.param, "invalid_image_url"});
    g.images.push_back(std::move(bytes).value());
  }
  call.probe =
      ConnectionProbe::find(req.local_addr, req.local_port, req.remote_addr, req.remote_port);
  if (!call.probe) {
    log::get("chat")->warn(
        "cannot find the connection {}:{} -> {}:{}; a disconnect will only be "
        "noticed when writing",
        req.remote_addr, req.remote_port, req.local_addr, req.local_port);
  }
  auto submitted = call.engine->submit(std::move(g));
  if (!submitted.ok()) return fail(from_status(submitted.status()));
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
    if (call.client_left) {
      res.status = 499;
      return call.record("cancelled", 499);
    }
  }
  // Usually the bare "accepted" event; an engine that sends tokens right away is served too.
  call.pending = call.take(std::move(*first));
  if (call.finished && call.final_event.finish_reason == engine::FinishReason::kError) {
    ApiError e = from_status(call.final_event.error);
    if (e.param.empty() && e.status.message().starts_with("image ")) e.param = "messages";
    return fail(e);
  }
  res.status = 200;
  if (r.stream) return;  // handle() installs the stream

  // Non-streaming: collect everything, then answer once.
  std::string content = std::move(call.pending);
  while (!call.finished) {
    auto e = call.next_event(options_.keepalive_interval_ms);
    if (call.client_left) {
      res.status = 499;
      return call.record("cancelled", 499);
    }
    if (e) content += call.take(std::move(*e));
  }
  if (auto failed = call.failure()) return fail(*failed);
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
  res.set_content(answer.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
  call.record(call.outcome(), 200);
}

}  // namespace dsocr::server

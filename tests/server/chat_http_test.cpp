// The chat endpoint over real HTTP against a scripted engine (tests/server/fake_engine.h):
// response shapes, SSE framing, stop strings, UTF-8, status codes, auth, disconnect -> cancel,
// backpressure, draining.
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/version.h"
#include "server/completion_text.h"
#include "server/http_server.h"
#include "server/server_metrics.h"
#include "tests/server/chat_test_server.h"
#include "tests/server/fake_engine.h"
#include "tokenizer/ocr_prompt.h"
#include "tokenizer/utf8.h"

namespace dsocr::server {
namespace {

using json = nlohmann::json;
using testing::basic_request;
using testing::send_and_hang_up;
using testing::ChatServer;
using testing::FakeEngine;
using testing::shared_tokenizer;
using testing::sse_data;

TEST_CASE("chat: non-streaming answer has OpenAI's shape", "[chat]") {
  ChatServer s;
  s.reply_with("# Title\n<|ref|>text<|/ref|><|det|>[[1, 2, 3, 4]]<|/det|>");
  auto res = s.chat(basic_request({{"max_tokens", 64}}), {{"X-Request-Id", "abc-1"}});
  REQUIRE(res);
  REQUIRE(res->status == 200);
  CHECK(res->get_header_value("X-Request-Id") == "abc-1");
  json j = json::parse(res->body);
  CHECK(j["id"] == "chatcmpl-abc-1");
  CHECK(j["object"] == "chat.completion");
  CHECK(j["model"] == "ocr");
  CHECK(j["created"].is_number_integer());
  REQUIRE(j["choices"].size() == 1);
  CHECK(j["choices"][0]["index"] == 0);
  CHECK(j["choices"][0]["message"]["role"] == "assistant");
  // Grounding tags survive (skip_special_tokens defaults to false); EOS is not text.
  CHECK(j["choices"][0]["message"]["content"] ==
        "# Title\n<|ref|>text<|/ref|><|det|>[[1, 2, 3, 4]]<|/det|>");
  CHECK(j["choices"][0]["finish_reason"] == "stop");
  const int64_t n = static_cast<int64_t>(s.engine->reply.size());
  CHECK(j["usage"]["completion_tokens"] == n);
  CHECK(j["usage"]["prompt_tokens"] == 300);
  CHECK(j["usage"]["total_tokens"] == 300 + n);
  CHECK(j["usage"]["prompt_tokens_details"]["image_tokens"] == 257);
  CHECK(j["usage"]["prompt_tokens_details"]["cached_tokens"] == 16);
  // The engine got the sampling fields and a prompt.
  std::lock_guard lock(s.engine->mu);
  REQUIRE(s.engine->requests.size() == 1);
  CHECK(s.engine->requests[0].sampling.max_tokens == 64);
  CHECK(s.engine->requests[0].prompt == "Free OCR.");
}

TEST_CASE("chat: skip_special_tokens drops grounding tags on request", "[chat]") {
  ChatServer s;
  s.reply_with("<|ref|>a<|/ref|>");
  auto res = s.chat(basic_request({{"skip_special_tokens", true}}));
  REQUIRE(res);
  CHECK(json::parse(res->body)["choices"][0]["message"]["content"] == "a");
}

TEST_CASE("chat: streaming framing", "[chat]") {
  ChatServer s;
  s.reply_with("Hello, wörld 日本語 🙂 done");
  for (bool include_usage : {false, true}) {
    json req = basic_request({{"stream", true}});
    if (include_usage) req["stream_options"] = {{"include_usage", true}};
    auto res = s.chat(req);
    REQUIRE(res);
    REQUIRE(res->status == 200);
    CHECK(res->get_header_value("Content-Type").rfind("text/event-stream", 0) == 0);
    auto events = sse_data(res->body);
    REQUIRE(events.size() >= 4);
    CHECK(events.back() == "[DONE]");
    std::string id, text;
    int finish_chunks = 0, usage_chunks = 0;
    for (size_t i = 0; i + 1 < events.size(); ++i) {
      json c = json::parse(events[i]);
      CHECK(c["object"] == "chat.completion.chunk");
      if (i == 0) id = c["id"];
      CHECK(c["id"] == id);  // one id for the whole stream
      CHECK(c.contains("usage") == include_usage);
      if (c["choices"].empty()) {
        ++usage_chunks;
        CHECK(i + 2 == events.size());  // the usage chunk comes last, before [DONE]
        CHECK(c["usage"]["completion_tokens"] == s.engine->reply.size());
        continue;
      }
      const json& choice = c["choices"][0];
      if (i == 0) CHECK(choice["delta"]["role"] == "assistant");
      if (choice["delta"].contains("content")) {
        std::string piece = choice["delta"]["content"];
        CHECK(tokenizer::is_valid_utf8(piece));  // no delta splits a character
        text += piece;
      }
      if (!choice["finish_reason"].is_null()) {
        ++finish_chunks;
        CHECK(choice["finish_reason"] == "stop");
      }
    }
    CHECK(text == "Hello, wörld 日本語 🙂 done");
    CHECK(finish_chunks == 1);
    CHECK(usage_chunks == (include_usage ? 1 : 0));
  }
}

TEST_CASE("chat: stop strings across deltas end the completion and are excluded", "[chat]") {
  ChatServer s;
  s.reply_with("alpha beta</table> gamma delta");
  s.engine->token_delay = std::chrono::milliseconds(2);
  for (bool stream : {false, true}) {
    auto res =
        s.chat(basic_request({{"stream", stream}, {"stop", json::array({"</table>", "zz"})}}));
    REQUIRE(res);
    REQUIRE(res->status == 200);
    std::string text, finish;
    json stop_reason;
    if (stream) {
      for (const auto& e : sse_data(res->body)) {
        if (e == "[DONE]") continue;
        json c = json::parse(e);
        if (c["choices"].empty()) continue;
        if (c["choices"][0]["delta"].contains("content"))
          text += c["choices"][0]["delta"]["content"];
        if (!c["choices"][0]["finish_reason"].is_null()) {
          finish = c["choices"][0]["finish_reason"];
          stop_reason = c["choices"][0]["stop_reason"];
        }
      }
    } else {
      json j = json::parse(res->body);
      text = j["choices"][0]["message"]["content"];
      finish = j["choices"][0]["finish_reason"];
      stop_reason = j["choices"][0]["stop_reason"];
    }
    CHECK(text == "alpha beta");
    CHECK(finish == "stop");
    CHECK(stop_reason == "stop_string");
  }
  // Generation was cancelled at the stop string instead of running to the end.
  for (int i = 0; i < 200 && s.engine->cancelled < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(s.engine->cancelled == 2);
}

TEST_CASE("StopStringMatcher holds back only what could start a stop string", "[chat]") {
  StopStringMatcher m({"END", "</td>"});
  CHECK(m.push("abc") == "abc");
  CHECK(m.push("xE") == "x");  // "E" may start "END"
  CHECK(m.push("Nd") == "ENd");
  CHECK(m.push("q</t") == "q");
  CHECK(m.push("d") == "");
  CHECK(m.push(">tail") == "");
  CHECK(m.matched());
  CHECK(m.matched_stop() == "</td>");
  CHECK(m.push("more") == "");
  StopStringMatcher n({"XY"});
  CHECK(n.push("aX") == "a");
  CHECK(n.flush() == "X");  // the text ended: "X" can no longer become "XY"
  StopStringMatcher none({});
  CHECK(none.push("anything") == "anything");
}

void check_error(const httplib::Result& res, int status, const std::string& param,
                 const std::string& code = "") {
  REQUIRE(res);
  CHECK(res->status == status);
  json j = json::parse(res->body);
  REQUIRE(j.contains("error"));
  CHECK(j["error"]["message"].is_string());
  if (param.empty()) {
    CHECK(j["error"]["param"].is_null());
  } else {
    CHECK(j["error"]["param"] == param);
  }
  if (!code.empty()) CHECK(j["error"]["code"] == code);
}

TEST_CASE("chat: client errors name the field and keep the server serving", "[chat]") {
  ChatServer s;
  s.reply_with("ok");
  check_error(s.chat(basic_request({{"model", "gpt-4"}})), 404, "model", "model_not_found");
  check_error(s.chat(basic_request({{"temperature", "hot"}})), 400, "temperature");
  check_error(s.chat(basic_request({{"max_tokens", 0}})), 400, "max_tokens");
  check_error(s.chat(basic_request({{"max_tokens", 1.5}})), 400, "max_tokens");
  check_error(s.chat(basic_request({{"n", 2}})), 400, "n");
  check_error(s.chat(basic_request({{"stop", 3}})), 400, "stop");
  check_error(s.chat(basic_request({{"stream", "yes"}})), 400, "stream");
  check_error(s.chat(basic_request({{"stream_options", {{"include_usage", true}}}})), 400,
              "stream_options");
  check_error(s.chat(basic_request({{"messages", json::array()}})), 400, "messages");
  check_error(
      s.chat(basic_request(
          {{"messages",
            json::array(
                {{{"role", "user"},
                  {"content", json::array({{{"type", "image_url"},
                                            {"image_url", {{"url", "ftp://x/y.png"}}}}})}}})}})),
      400, "messages[0].content[0].image_url.url", "invalid_image_url");
  check_error(
      s.chat(basic_request({{"messages", json::array({{{"role", "robot"}, {"content", "x"}}})}})),
      400, "messages[0].role");
  // Unknown fields are ignored.
  auto ok = s.chat(basic_request({{"frobnicate", true}, {"user", "u1"}}));
  REQUIRE(ok);
  CHECK(ok->status == 200);
  CHECK(s.engine->submitted == 1);  // none of the bad ones reached the engine
}

TEST_CASE("chat: engine refusals map to 400 / 429 / 503", "[chat]") {
  ChatServer s;
  s.reply_with("ok");
  s.engine->prepare_error =
      Status(StatusCode::kOutOfRange, std::string(engine::kContextLengthExceeded) + ": too long");
  s.engine->prepare_failure = engine::FailureReason::kContextLengthExceeded;
  check_error(s.chat(basic_request()), 400, "messages", "context_length_exceeded");
  s.engine->prepare_error = invalid_argument("image 1: not an image (unknown format)");
  s.engine->prepare_failure = engine::FailureReason::kInvalidInput;
  check_error(s.chat(basic_request()), 400, "messages");
  s.engine->prepare_error = Status();

  s.engine->submit_error = resource_exhausted("queue full");
  auto busy = s.chat(basic_request());
  check_error(busy, 429, "");
  CHECK(busy->get_header_value("Retry-After") == "1");
  CHECK(json::parse(busy->body)["error"]["type"] == "rate_limit_error");
  s.engine->submit_error = Status();

  s.engine->engine_state = engine::EngineState::kLoading;
  auto loading = s.chat(basic_request());
  check_error(loading, 503, "");
  CHECK(loading->get_header_value("Retry-After") == "1");
  auto health = s.client().Get("/health");
  REQUIRE(health);
  CHECK(health->status == 503);
  s.engine->engine_state = engine::EngineState::kReady;

  s.server->begin_drain();
  check_error(s.chat(basic_request()), 503, "");
  health = s.client().Get("/health");
  CHECK(json::parse(health->body)["status"] == "draining");
}

TEST_CASE("chat: API key", "[chat]") {
  ServerConfig config;
  config.api_key = "sk-secret";
  ChatServer s(config);
  s.reply_with("ok");
  auto missing = s.chat(basic_request());
  check_error(missing, 401, "", "invalid_api_key");
  CHECK(json::parse(missing->body)["error"]["type"] == "authentication_error");
  check_error(s.chat(basic_request(), {{"Authorization", "Bearer sk-wrong"}}), 401, "");
  check_error(s.chat(basic_request(), {{"Authorization", "sk-secret"}}), 401, "");
  auto good = s.chat(basic_request(), {{"Authorization", "Bearer sk-secret"}});
  REQUIRE(good);
  CHECK(good->status == 200);
  CHECK(s.client().Get("/v1/models")->status == 401);
  CHECK(s.client().Get("/health")->status == 200);  // probes need no key
  CHECK(s.client().Get("/metrics")->status == 200);
  CHECK(constant_time_equals("abc", "abc"));
  CHECK_FALSE(constant_time_equals("abc", "abd"));
  CHECK_FALSE(constant_time_equals("abc", "abcd"));
  CHECK_FALSE(constant_time_equals("", "a"));
}

TEST_CASE("chat: a client that hangs up cancels its request", "[chat]") {
  ChatServer s;
  std::string long_text;
  for (int i = 0; i < 200; ++i) long_text += "word ";
  s.reply_with(long_text);
  s.engine->token_delay = std::chrono::milliseconds(20);
  SECTION("non-streaming, while generating") {
    send_and_hang_up(s.server->port(), basic_request().dump(), 0);
  }
  SECTION("streaming, after a few chunks") {
    send_and_hang_up(s.server->port(), basic_request({{"stream", true}}).dump(), 600);
  }
  for (int i = 0; i < 300 && s.engine->cancelled == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(s.engine->cancelled == 1);
  CHECK(s.engine->finished == 0);
  for (int i = 0; i < 300 && s.server->active_chat_requests() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(s.server->active_chat_requests() == 0);
  auto metrics = s.client().Get("/metrics");
  CHECK(metrics->body.find("dsocr_requests_total{finish_reason=\"cancelled\"} 1") !=
        std::string::npos);
}

TEST_CASE("chat: keep-alive comments while a stream waits", "[chat]") {
  ServerConfig config;
  config.keepalive_interval_ms = 20;
  ChatServer s(config);
  s.reply_with("slow");
  s.engine->token_delay = std::chrono::milliseconds(150);
  auto res = s.chat(basic_request({{"stream", true}}));
  REQUIRE(res);
  CHECK(res->body.find(": keep-alive\n\n") != std::string::npos);
  CHECK(sse_data(res->body).back() == "[DONE]");
}

TEST_CASE("chat: metrics and tokenize endpoints", "[chat]") {
  ChatServer s;
  s.reply_with("a b c");
  REQUIRE(s.chat(basic_request())->status == 200);
  auto m = s.client().Get("/metrics");
  REQUIRE(m);
  for (const char* name :
       {"dsocr_requests_total{finish_reason=\"stop\"} 1",
        "dsocr_time_to_first_token_seconds_count 1", "dsocr_e2e_request_latency_seconds_count 1",
        "dsocr_queue_time_seconds_count 1", "dsocr_vision_encode_seconds_count 1",
        "dsocr_inter_token_latency_seconds_count", "dsocr_kv_cache_usage_ratio",
        "dsocr_requests_running", "dsocr_prefix_cache_hits_total", "dsocr_preemptions_total",
        "dsocr_loops_detected_total", "dsocr_engine_ready 1", "dsocr_pending_image_bytes 0",
        "dsocr_http_open_connections", "dsocr_http_requests_in_flight 1"}) {
    INFO(name);
    CHECK(m->body.find(name) != std::string::npos);
  }
  auto c = s.client();
  auto tok = c.Post("/tokenize", R"({"prompt":"Free OCR."})", "application/json");
  REQUIRE(tok);
  REQUIRE(tok->status == 200);
  json ids = json::parse(tok->body)["tokens"];
  CHECK(ids == json(shared_tokenizer()->encode("Free OCR.")));
  auto detok = c.Post("/detokenize", json{{"tokens", ids}}.dump(), "application/json");
  REQUIRE(detok);
  CHECK(json::parse(detok->body)["prompt"] == "Free OCR.");
  check_error(c.Post("/detokenize", R"({"tokens":[-1]})", "application/json"), 400, "tokens");
  check_error(c.Post("/tokenize", R"({"prompt":5})", "application/json"), 400, "prompt");
}

TEST_CASE("chat: engine failures are classified by their typed reason, not their text", "[chat]") {
  ChatServer s;
  s.reply_with("ok");
  // A message that reads like a context overflow but is an image error: no code.
  s.engine->prepare_error = invalid_argument(std::string(engine::kContextLengthExceeded) + " x");
  s.engine->prepare_failure = engine::FailureReason::kInvalidInput;
  auto invalid = s.chat(basic_request());
  check_error(invalid, 400, "messages");
  CHECK(json::parse(invalid->body)["error"]["code"].is_null());
  // A context overflow whose message says nothing of it: still the OpenAI code.
  s.engine->prepare_error = Status(StatusCode::kOutOfRange, "prompt too long");
  s.engine->prepare_failure = engine::FailureReason::kContextLengthExceeded;
  check_error(s.chat(basic_request()), 400, "messages", "context_length_exceeded");
  // A bad input whose message does not start with "image ": the field is still named.
  s.engine->prepare_error = invalid_argument("the text has 2 <image> markers but 0 images");
  s.engine->prepare_failure = engine::FailureReason::kInvalidInput;
  check_error(s.chat(basic_request()), 400, "messages");
}

// The metric line `name value`'s value (0 when the line is absent).
double metric_value(ChatServer& s, const std::string& name) {
  auto m = s.client().Get("/metrics");
  REQUIRE(m);
  const size_t at = m->body.find("\n" + name + " ");
  return at == std::string::npos ? 0 : std::stod(m->body.substr(at + name.size() + 2));
}

TEST_CASE("chat: a failed engine step is a 500 naming the request, counted, and serving goes on",
          "[chat]") {
  ChatServer s;
  s.reply_with("one two three four five");
  s.engine->fail_step_at = 2;  // two tokens out, then the step throws
  SECTION("non-streaming: 500 server_error with the request id") {
    auto res = s.chat(basic_request(), {{"X-Request-Id", "req-step-1"}});
    check_error(res, 500, "");
    json error = json::parse(res->body)["error"];
    CHECK(error["type"] == "server_error");
    CHECK(error["message"].get<std::string>().find("req-step-1") != std::string::npos);
    // The exception's text stays in the log.
    CHECK(error["message"].get<std::string>().find("injected") == std::string::npos);
    CHECK(res->get_header_value("X-Request-Id") == "req-step-1");
  }
  SECTION("streaming: the tokens so far, then an error event and [DONE]") {
    auto res = s.chat(basic_request({{"stream", true}}), {{"X-Request-Id", "req-step-2"}});
    REQUIRE(res);
    REQUIRE(res->status == 200);  // the stream had begun
    auto events = sse_data(res->body);
    REQUIRE(events.size() >= 2);
    CHECK(events.back() == "[DONE]");
    json last = json::parse(events[events.size() - 2]);
    REQUIRE(last.contains("error"));
    CHECK(last["error"]["type"] == "server_error");
    CHECK(last["error"]["message"].get<std::string>().find("req-step-2") != std::string::npos);
    std::string text;
    for (size_t i = 0; i + 2 < events.size(); ++i) {
      json c = json::parse(events[i]);
      CHECK(c["choices"][0]["finish_reason"].is_null());  // no chunk claims a normal end
      if (c["choices"][0]["delta"].contains("content")) text += c["choices"][0]["delta"]["content"];
    }
    CHECK(text == "one two");
  }
  CHECK(s.engine->step_failures == 1);
  CHECK(metric_value(s, "dsocr_request_failures_total{reason=\"step_failed\"}") == 1);
  CHECK(metric_value(s, "dsocr_requests_total{finish_reason=\"error\"}") == 1);
  CHECK(metric_value(s, "dsocr_engine_step_failures_total") == 1);
  // The server keeps serving.
  s.engine->fail_step_at = -1;
  auto ok = s.chat(basic_request());
  REQUIRE(ok);
  CHECK(ok->status == 200);
  CHECK(json::parse(ok->body)["choices"][0]["message"]["content"] == "one two three four five");
}

TEST_CASE("ServerMetrics turns engine totals into counters that never go backwards", "[chat]") {
  MetricsRegistry registry;
  ServerMetrics metrics(&registry);
  auto value = [&](const std::string& line_start) {
    const std::string text = registry.render();
    const size_t at = text.find("\n" + line_start + " ");
    REQUIRE(at != std::string::npos);
    return std::stod(text.substr(at + line_start.size() + 2));
  };
  engine::EngineStats stats;
  stats.state = engine::EngineState::kReady;
  stats.generated_tokens = 10;
  stats.scheduler.prefix.hit_tokens = 4;
  stats.vision_encode_seconds = 0.5;
  stats.scheduler.running = 3;
  metrics.refresh(&stats);
  stats.generated_tokens = 25;
  metrics.refresh(&stats);
  CHECK(value("dsocr_generation_tokens_total") == 25);
  CHECK(value("dsocr_prefix_cache_hits_total") == 4);
  CHECK(value("dsocr_vision_encode_seconds_total") == 0.5);
  CHECK(value("dsocr_requests_running") == 3);
  CHECK(value("dsocr_engine_ready") == 1);
  stats.generated_tokens = 5;  // a snapshot behind an earlier one must not subtract
  metrics.refresh(&stats);
  CHECK(value("dsocr_generation_tokens_total") == 25);
  metrics.refresh(nullptr);
  CHECK(value("dsocr_engine_ready") == 0);
}

}  // namespace
}  // namespace dsocr::server

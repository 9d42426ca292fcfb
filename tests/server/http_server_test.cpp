#include "server/http_server.h"

#include <httplib.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/flags.h"
#include "engine/engine_flags.h"
#include "server/openai_errors.h"

namespace dsocr::server {
namespace {

using json = nlohmann::json;

// An in-process server on a free loopback port, serving on its own thread.
struct RunningServer {
  MetricsRegistry metrics;
  HttpServer server;
  std::thread thread;
  explicit RunningServer(ServerConfig config = {})
      : server((config.port = 0, config.http_threads = 4, config), {.id = "test-model"}, &metrics) {
    REQUIRE(server.bind().ok());
    thread = std::thread([this] { server.serve(); });
  }
  ~RunningServer() {
    server.stop();
    thread.join();
  }
  httplib::Client client() {
    httplib::Client c("127.0.0.1", server.port());
    c.set_read_timeout(10, 0);
    return c;
  }
};

void check_error_shape(const httplib::Result& res, int status, const std::string& type) {
  REQUIRE(res);
  CHECK(res->status == status);
  CHECK(res->get_header_value("Content-Type") == "application/json");
  json body = json::parse(res->body);
  REQUIRE(body.contains("error"));
  CHECK(body["error"]["type"] == type);
  CHECK(body["error"]["message"].is_string());
  CHECK(body["error"].contains("param"));
  CHECK(body["error"].contains("code"));
}

TEST_CASE("HTTP: /health, /v1/models, /metrics", "[http]") {
  RunningServer s;
  auto c = s.client();
  auto health = c.Get("/health");
  REQUIRE(health);
  CHECK(health->status == 503);  // no engine yet
  CHECK(json::parse(health->body)["status"] == "loading");

  auto models = c.Get("/v1/models");
  REQUIRE(models);
  json m = json::parse(models->body);
  CHECK(m["object"] == "list");
  REQUIRE(m["data"].size() == 1);
  CHECK(m["data"][0]["id"] == "test-model");
  CHECK(m["data"][0]["object"] == "model");

  auto metrics = c.Get("/metrics");
  REQUIRE(metrics);
  CHECK(metrics->status == 200);
  CHECK(metrics->body.find("dsocr_http_requests_total{route=\"/health\",status=\"503\"} 1") !=
        std::string::npos);
}

TEST_CASE("HTTP: errors have the OpenAI shape and the right status", "[http]") {
  RunningServer s;
  auto c = s.client();
  check_error_shape(c.Get("/no/such/route"), 404, "not_found_error");
  check_error_shape(c.Post("/v1/chat/completions", "{not json", "application/json"), 400,
                    "invalid_request_error");
  check_error_shape(c.Post("/v1/chat/completions", "[1,2]", "application/json"), 400,
                    "invalid_request_error");
  // No engine yet (still loading): 503 with Retry-After, and /health says so.
  auto loading = c.Post("/v1/chat/completions",
                        R"({"model":"test-model","messages":[{"role":"user","content":"hi"}]})",
                        "application/json");
  check_error_shape(loading, 503, "service_unavailable_error");
  CHECK(loading->get_header_value("Retry-After") == "1");
  // The server keeps serving after every one of them.
  auto health = c.Get("/health");
  REQUIRE(health);
  CHECK(health->status == 503);
  CHECK(json::parse(health->body)["status"] == "loading");
}

TEST_CASE("HTTP: oversized bodies are refused with 413", "[http]") {
  ServerConfig config;
  config.max_body_bytes = 4096;
  RunningServer s(config);
  auto c = s.client();
  check_error_shape(c.Post("/v1/chat/completions", std::string(10000, 'x'), "application/json"),
                    413, "invalid_request_error");
}

TEST_CASE("HTTP: request ids are kept when sane, generated otherwise", "[http]") {
  RunningServer s;
  auto c = s.client();
  auto kept = c.Get("/health", {{"X-Request-Id", "client-id-42"}});
  REQUIRE(kept);
  CHECK(kept->get_header_value("X-Request-Id") == "client-id-42");
  auto replaced = c.Get("/health", {{"X-Request-Id", "bad id\"with<junk>"}});
  REQUIRE(replaced);
  std::string generated = replaced->get_header_value("X-Request-Id");
  CHECK(generated.size() == 16);
  CHECK(generated != "bad id\"with<junk>");
  CHECK(sanitize_or_generate_request_id(std::string(129, 'a')).size() == 16);
  CHECK(sanitize_or_generate_request_id("") != sanitize_or_generate_request_id(""));
}

TEST_CASE("HTTP: concurrent clients are all answered", "[http][stress]") {
  RunningServer s;
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int t = 0; t < 8; ++t) {
    clients.emplace_back([&] {
      auto c = s.client();
      for (int i = 0; i < 50; ++i) {
        auto r = (i % 2) ? c.Get("/v1/models") : c.Post("/v1/chat/completions", "{", "text/plain");
        if (r && (r->status == 200 || r->status == 400)) ++ok;
      }
    });
  }
  for (auto& t : clients) t.join();
  CHECK(ok == 400);
}

TEST_CASE("openai_error_body", "[http]") {
  json body = json::parse(openai_error_body(invalid_argument("bad"), "messages", "bad_type"));
  CHECK(body == json::parse(R"({"error":{"message":"bad","type":"invalid_request_error",
                                          "param":"messages","code":"bad_type"}})"));
  json plain = json::parse(openai_error_body(resource_exhausted("busy")));
  CHECK(plain["error"]["type"] == "rate_limit_error");
  CHECK(plain["error"]["param"].is_null());
}

}  // namespace
}  // namespace dsocr::server

namespace dsocr::server {
namespace {

TEST_CASE("HTTP: /metrics counts open connections and requests in flight", "[http]") {
  RunningServer s;
  auto idle = s.client();
  idle.set_keep_alive(true);
  REQUIRE(idle.Get("/health"));  // a kept-alive connection that now idles
  auto c = s.client();
  auto metrics = c.Get("/metrics");
  REQUIRE(metrics);
  // This scrape is in flight itself, and two connections are open (the idle one and this one).
  CHECK(metrics->body.find("dsocr_http_requests_in_flight 1") != std::string::npos);
  CHECK(metrics->body.find("dsocr_http_open_connections 2") != std::string::npos);
}

// The engine flags: one table (engine/engine_flags.h) that the server and the CLI register.
StatusOr<ServerConfig> parse_args(std::vector<const char*> args) {
  args.insert(args.begin(), "dsocr-server");
  std::string help;
  return parse_server_config(static_cast<int>(args.size()), args.data(), &help);
}

TEST_CASE("ServerConfig: engine flags and DSOCR_* variables reach EngineOptions", "[http]") {
  setenv("DSOCR_MAX_NUM_SEQS", "7", 1);
  auto c = parse_args({"--model", "demo", "--max-model-len", "4096", "--no-prefix-caching",
                       "--num-kv-blocks", "99", "--dtype", "float32", "--vision-threads", "3"});
  unsetenv("DSOCR_MAX_NUM_SEQS");
  REQUIRE(c.ok());
  CHECK(c->engine.model == "demo");
  engine::EngineOptions o = c->engine.to_options("/models/m");
  CHECK(o.model_dir == "/models/m");
  CHECK(o.scheduler.max_model_len == 4096);
  CHECK(o.scheduler.max_num_seqs == 7);  // from the environment
  CHECK_FALSE(o.prefix_caching);
  CHECK(o.num_kv_blocks == 99);
  CHECK(o.dtype == "float32");
  CHECK(o.vision_threads == 3);
  // Flags left alone give EngineOptions' own defaults.
  const engine::EngineOptions defaults;
  const engine::EngineOptions from_flags = engine::EngineFlags{}.to_options("/m");
  CHECK(from_flags.device == defaults.device);
  CHECK(from_flags.dtype == defaults.dtype);
  CHECK(from_flags.num_kv_blocks == defaults.num_kv_blocks);
  CHECK(from_flags.kv_memory_fraction == defaults.kv_memory_fraction);
  CHECK(from_flags.prefix_caching == defaults.prefix_caching);
  CHECK(from_flags.scheduler.max_model_len == defaults.scheduler.max_model_len);
  CHECK(from_flags.scheduler.max_num_seqs == defaults.scheduler.max_num_seqs);
  CHECK(from_flags.scheduler.max_num_batched_tokens == defaults.scheduler.max_num_batched_tokens);
  CHECK(from_flags.vision_threads == defaults.vision_threads);
  CHECK(from_flags.max_queued_requests == defaults.max_queued_requests);
  CHECK(from_flags.max_pending_image_bytes == defaults.max_pending_image_bytes);
  CHECK(from_flags.idle_memory_release_ms == defaults.idle_memory_release_ms);
  CHECK(from_flags.torch_threads == defaults.torch_threads);
  // The default model and the range errors, which name the flag.
  CHECK(parse_args({})->engine.model == "deepseek-ai/DeepSeek-OCR-2");
  CHECK(parse_args({"--max-model-len", "4"}).status().message() ==
        "--max-model-len must be in 16..1048576, got 4");
  CHECK(parse_args({"--dtype", "fp16"}).status().message() ==
        "--dtype must be auto, float32 or bfloat16");
  CHECK(parse_args({"--kv-memory-fraction", "0"}).status().code() == StatusCode::kOutOfRange);
}

TEST_CASE("Engine flags: a command picks flags, help and whether the environment counts",
          "[http]") {
  using engine::EngineFlag;
  FlagSet flags("dsocr generate", "");
  engine::EngineFlags values;
  values.model.clear();
  engine::add_engine_flags(&flags, &values,
                           {EngineFlag::kModel, {EngineFlag::kNumKvBlocks, "own meaning of 0"}},
                           engine::EngineFlagEnv::kWithout);
  setenv("DSOCR_NUM_KV_BLOCKS", "5", 1);
  const char* argv[] = {"dsocr", "generate", "--model", "demo"};
  Status parsed = flags.parse(4, argv, 2);
  unsetenv("DSOCR_NUM_KV_BLOCKS");
  REQUIRE(parsed.ok());
  CHECK(values.model == "demo");
  CHECK(values.num_kv_blocks == 0);  // a server's environment does not reach one-shot commands
  const std::string usage = flags.usage();
  CHECK(usage.find("own meaning of 0") != std::string::npos);
  CHECK(usage.find("--max-model-len") == std::string::npos);  // only what was registered
  const char* other[] = {"dsocr", "generate", "--max-model-len", "9"};
  CHECK_FALSE(flags.parse(4, other, 2).ok());
}

}  // namespace
}  // namespace dsocr::server

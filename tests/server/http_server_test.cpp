#include "server/http_server.h"

#include <httplib.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <thread>

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

}  // namespace
}  // namespace dsocr::server

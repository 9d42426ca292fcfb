// The web playground's routes (server/playground.h) on a real HttpServer: what is served, with
// which headers, and that it needs no API key while the API still does.
#include "server/playground.h"

#include <httplib.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "server/http_server.h"

namespace dsocr::server {
namespace {

constexpr const char* kKey = "sk-playground";

// An in-process server on a free loopback port, with no engine (the model still "loading"): the
// playground is served from the first moment, before any model is there.
struct PlaygroundServer {
  MetricsRegistry metrics;
  HttpServer server;
  std::thread thread;
  explicit PlaygroundServer(std::string api_key)
      : server(config(std::move(api_key)), {.id = "test-model"}, &metrics) {
    REQUIRE(server.bind().ok());
    thread = std::thread([this] { server.serve(); });
  }
  ~PlaygroundServer() {
    server.stop();
    thread.join();
  }
  static ServerConfig config(std::string api_key) {
    ServerConfig c;
    c.port = 0;
    c.http_threads = 2;
    c.api_key = std::move(api_key);
    return c;
  }
  httplib::Client client() {
    httplib::Client c("127.0.0.1", server.port());
    c.set_read_timeout(10, 0);
    return c;
  }
};

std::string source_file(const std::string& relative) {
  const char* env = std::getenv("DSOCR_SOURCE_DIR");
  const std::string root = env != nullptr ? env : DSOCR_TEST_SOURCE_DIR;
  std::ifstream in(root + "/" + relative, std::ios::binary);
  REQUIRE(in);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

void check_playground_headers(const httplib::Result& res, const std::string& content_type) {
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->get_header_value("Content-Type") == content_type);
  CHECK(res->get_header_value("Cache-Control") == "no-cache");
  CHECK(res->get_header_value("X-Content-Type-Options") == "nosniff");
  CHECK(res->get_header_value("Content-Security-Policy") == kPlaygroundContentSecurityPolicy);
}

TEST_CASE("playground: the CSP allows nothing outside the server's own origin", "[playground]") {
  const std::string csp = kPlaygroundContentSecurityPolicy;
  CHECK(csp.find("default-src 'none'") != std::string::npos);
  CHECK(csp.find("script-src 'self';") != std::string::npos);
  CHECK(csp.find("connect-src 'self'") != std::string::npos);
  CHECK(csp.find("frame-ancestors 'none'") != std::string::npos);
  // No scheme or host beyond 'self' and blob: (the picked image's preview), no inline code.
  for (const char* forbidden : {"http:", "https:", "data:", "*", "unsafe-inline", "unsafe-eval"})
    CHECK(csp.find(forbidden) == std::string::npos);
}

TEST_CASE("playground: / and its assets are served byte for byte without the API key",
          "[playground]") {
  PlaygroundServer s(kKey);
  auto c = s.client();

  auto index = c.Get("/");
  check_playground_headers(index, "text/html; charset=utf-8");
  CHECK(index->body == source_file("server/playground/index.html"));

  // Every file the page references is served, with its type, and is the file in the repository.
  const std::map<std::string, std::string> expected_types = {
      {"/playground.js", "text/javascript; charset=utf-8"},
      {"/playground.css", "text/css; charset=utf-8"},
      {"/favicon.svg", "image/svg+xml"}};
  std::set<std::string> referenced;
  const std::regex reference(R"re((?:src|href)="([^"]*)")re");
  for (std::sregex_iterator it(index->body.begin(), index->body.end(), reference), end; it != end;
       ++it)
    referenced.insert((*it)[1]);
  REQUIRE(referenced.size() == expected_types.size());
  for (const std::string& path : referenced) {
    INFO(path);
    REQUIRE(expected_types.count(path) == 1);  // a same-origin absolute path, nothing external
    auto asset = c.Get(path);
    check_playground_headers(asset, expected_types.at(path));
    CHECK(asset->body == source_file("server/playground" + path));
  }
  CHECK(playground_assets().size() == expected_types.size() + 1);
  CHECK(playground_assets().front().path == "/");
}

TEST_CASE("playground: the API still needs the key, other methods as on every route",
          "[playground]") {
  PlaygroundServer s(kKey);
  auto c = s.client();
  auto models = c.Get("/v1/models");
  REQUIRE(models);
  CHECK(models->status == 401);
  auto with_key = c.Get("/v1/models", {{"Authorization", std::string("Bearer ") + kKey}});
  REQUIRE(with_key);
  CHECK(with_key->status == 200);
  // The exemption is for the playground's exact paths, not for whatever lies next to them.
  CHECK(c.Get("/index.html")->status == 401);
  CHECK(c.Get("/playground.js/x")->status == 401);
  CHECK(c.Post("/v1/chat/completions", "{}", "application/json")->status == 401);

  auto head = c.Head("/playground.js");
  REQUIRE(head);
  CHECK(head->status == 200);
  CHECK(head->body.empty());
  CHECK(head->get_header_value("Content-Length") ==
        std::to_string(source_file("server/playground/playground.js").size()));
  CHECK(head->get_header_value("Content-Type") == "text/javascript; charset=utf-8");

  auto post = c.Post("/", "x", "text/plain");
  REQUIRE(post);
  CHECK(post->status == 405);

  // Counted under their own route labels, like every route.
  PlaygroundServer open("");
  auto oc = open.client();
  CHECK(oc.Get("/")->status == 200);
  CHECK(oc.Get("/index.html")->status == 404);
  auto metrics = oc.Get("/metrics");
  REQUIRE(metrics);
  CHECK(metrics->body.find("dsocr_http_requests_total{route=\"/\",status=\"200\"} 1") !=
        std::string::npos);
}

}  // namespace
}  // namespace dsocr::server

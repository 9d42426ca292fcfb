// The chat tests' server: a real HttpServer on a free port with a FakeEngine behind it, and
// helpers to send chat requests and read SSE bodies.
#pragma once

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/version.h"
#include "server/http_server.h"
#include "tests/server/fake_engine.h"
#include "tokenizer/ocr_prompt.h"

namespace dsocr::server::testing {

using json = nlohmann::json;

inline std::shared_ptr<const tokenizer::Tokenizer> shared_tokenizer() {
  static auto tok = [] {
    auto t = tokenizer::Tokenizer::from_file(std::string(dsocr::built_model_files_dir()) +
                                             "/tokenizer.json");
    REQUIRE(t.ok());
    return *t;
  }();
  return tok;
}

struct ChatServer {
  MetricsRegistry metrics;
  std::shared_ptr<FakeEngine> engine = std::make_shared<FakeEngine>();
  std::unique_ptr<HttpServer> server;
  std::thread thread;

  explicit ChatServer(ServerConfig config = {}) {
    config.port = 0;
    config.http_threads = 16;
    if (config.keepalive_interval_ms == ServerConfig{}.keepalive_interval_ms) {
      config.keepalive_interval_ms = 5000;
    }
    server = std::make_unique<HttpServer>(config, ServedModel{.id = "ocr"}, &metrics);
    REQUIRE(server->bind().ok());
    engine->tok = shared_tokenizer();
    server->set_engine(engine);
    thread = std::thread([this] { server->serve(); });
  }
  ~ChatServer() {
    server->stop();
    thread.join();
  }
  void reply_with(const std::string& text) {
    engine->reply = shared_tokenizer()->encode(text);
    engine->reply.push_back(*shared_tokenizer()->token_to_id(tokenizer::kEosToken));
  }
  httplib::Client client() {
    httplib::Client c("127.0.0.1", server->port());
    c.set_read_timeout(20, 0);
    return c;
  }
  httplib::Result chat(json body, httplib::Headers headers = {}) {
    return client().Post("/v1/chat/completions", headers, body.dump(), "application/json");
  }
};

inline json basic_request(json extra = json::object()) {
  json r = {{"model", "ocr"},
            {"messages", json::array({{{"role", "user"}, {"content", "Free OCR."}}})}};
  r.update(extra);
  return r;
}

// The data lines of an SSE body, in order.
inline std::vector<std::string> sse_data(const std::string& body) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t end = body.find("\n\n", pos);
    REQUIRE(end != std::string::npos);  // every event is terminated
    std::string event = body.substr(pos, end - pos);
    if (event.rfind("data: ", 0) == 0) out.push_back(event.substr(6));
    pos = end + 2;
  }
  return out;
}

// Sends a request on a raw socket, reads `read_bytes` of the answer (0: none), then closes.
inline void send_and_hang_up(int port, const std::string& body, size_t read_bytes) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  std::string request =
      "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
      "Content-Type: application/json\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body;
  REQUIRE(send(fd, request.data(), request.size(), 0) == static_cast<ssize_t>(request.size()));
  std::string got;
  char buf[512];
  while (got.size() < read_bytes) {
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  if (read_bytes == 0) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  close(fd);
}

}  // namespace dsocr::server::testing

// HttpServer: dsocr-server's HTTP front end on cpp-httplib.
//
// Routes today: GET /health, GET /v1/models, GET /metrics, and POST /v1/chat/completions, which
// validates its JSON and answers 501 until the engine can generate (the engine issue). Every
// response that is not a success has the OpenAI error shape (server/openai_errors.h), unknown
// routes included. Handlers never let an exception escape: the exception handler turns one into a
// 500 with the same shape, and the server keeps serving.
//
// Each request gets an id: a well-formed X-Request-Id header is kept, otherwise one is generated;
// it is echoed in the response and prefixes the request's log lines. One summary line is logged
// per request, except for /health and /metrics (probes and scrapers would drown the log).
//
// Thread-safety: bind() and serve() are called once, from one thread; stop() from any thread
// (a signal-handling thread, a test). Handlers run on the HTTP thread pool.
#pragma once

#include <memory>
#include <string>

#include "common/metrics.h"
#include "common/status.h"
#include "server/server_config.h"

namespace dsocr::server {

struct ServedModel {
  std::string id;           // what /v1/models lists and requests must name
  std::string description;  // where it came from, for logs and /health
};

class HttpServer {
 public:
  HttpServer(ServerConfig config, ServedModel model, MetricsRegistry* metrics);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds the listening socket (port 0 picks a free one); after it, port() is the real port.
  Status bind();
  int port() const;
  // Serves until stop(). Precondition: bind() succeeded.
  void serve();
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A request id that is safe to log and echo: 1..128 of [A-Za-z0-9._-]; otherwise a new random id.
std::string sanitize_or_generate_request_id(const std::string& candidate);

}  // namespace dsocr::server

// HttpServer: dsocr-server's routes on its own HTTP/1.1 transport (server/http/http_listener.h:
// bounded header/body/idle times, a connection cap, pipelining, a handler thread per request).
//
// Routes: POST /v1/chat/completions (server/chat_handler.h), GET /v1/models, GET /health,
// GET /metrics, POST /tokenize, POST /detokenize (server/routes.h). Every response that is not a
// success has the OpenAI error shape (server/openai_errors.h), unknown routes included. Handlers
// never let an exception escape: one that does becomes a 500 with the same shape, and the server
// keeps serving. Requests refused from their head alone (wrong API key, unknown route or method)
// are answered before their body is read, with "Connection: close", so an unread body never poisons
// the connection's next request.
//
// The server listens before the model has loaded: /health answers 503 "loading" (and chat 503
// with Retry-After) until set_engine(). begin_drain() (SIGTERM) makes /health and new chat
// requests 503 while in-flight ones finish. With an API key configured, every route but /health,
// /metrics and the playground's static files (server/playground.h; the page sends the key the
// user types) needs "Authorization: Bearer KEY" (compared in constant time).
//
// Each request gets an id: a well-formed X-Request-Id header is kept, otherwise one is generated;
// it is echoed in the response and prefixes the request's log lines. One summary line is logged
// per request, except for /health and /metrics (probes and scrapers would drown the log).
//
// Thread-safety: bind() and serve() are called once, from one thread; everything else from any
// thread. Handlers run on the transport's handler threads.
#pragma once

#include <memory>
#include <string>

#include "common/metrics.h"
#include "common/status.h"
#include "engine/engine.h"
#include "server/routes.h"
#include "server/server_config.h"

namespace dsocr::server {

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
  // Makes serve() return (or not start), whenever it is called; blocks until it has returned.
  void stop();

  // The model is ready: chat requests go to `engine`, and text to and from ids through its
  // tokenizer (Engine::tokenizer()).
  void set_engine(std::shared_ptr<engine::Engine> engine);
  // Stop taking chat requests (503); in-flight ones continue.
  void begin_drain();
  // Chat requests still being answered (streams included).
  int64_t active_chat_requests() const;
  // Open client connections (for logs while draining).
  size_t open_connections() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A request id that is safe to log and echo: 1..128 of [A-Za-z0-9._-]; otherwise a new random id.
std::string sanitize_or_generate_request_id(const std::string& candidate);

// Equality of two secrets in time that depends only on their lengths.
bool constant_time_equals(std::string_view a, std::string_view b);

}  // namespace dsocr::server

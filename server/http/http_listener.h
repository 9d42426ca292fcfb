// HttpListener: dsocr's HTTP/1.1 transport. It owns the listening socket and every client
// connection, reads requests with bounded time and memory, and runs route handlers on their own
// threads so that a handler may block (a stream lasts minutes) without holding anyone else up.
//
//   event thread   accept -> read the head (header timeout) -> head filter (may answer at once:
//                  401, 404...) -> read the body (body timeout, decoded-size limit, a budget for
//                  all bodies held at once) -> hand the request to a handler thread.
//                  Idle keep-alive connections and slow readers cost a socket and a buffer here,
//                  never a thread.
//   handler thread runs the handler with an Exchange, which writes a whole response or a chunked
//                  stream (each write bounded by the write timeout) and can probe whether the
//                  client has gone. Then the connection returns to the event thread: bytes the
//                  client pipelined behind the request are parsed next, in order.
//
// Limits, each answered rather than suffered: more than max_connections open sockets -> 503 and
// close at accept; a head not complete within header_timeout -> 408; a body not complete within
// body_timeout -> 408; an idle keep-alive connection is closed after idle_timeout; the decoded
// body over ParserLimits::max_body_bytes -> 413 whatever the framing; all bodies held at once over
// max_buffered_body_bytes -> 503. Every ProtocolError (server/http/request_parser.h) is answered
// with its status and "Connection: close", and the connection is then closed gracefully (our side
// shut down, the client's remaining bytes read and dropped for a moment) so that the client reads
// the answer instead of a reset.
//
// A client "has gone" when its connection was reset. A client that shuts down its sending side
// may have gone (close()) or only half-closed (shutdown(SHUT_WR) after its request, as nc -N
// does): TCP shows both the same way until the server writes. So the transport writes something
// the client must accept and ignore - an interim "100 Continue" before the response (RFC 9110
// §15.2: clients parse unexpected 1xx responses), or the handler's stream probe (an SSE comment)
// inside a stream - and a client that has really gone answers that write with a reset. Pipelined
// requests behind the current one also mean the client is still there.
//
// Thread-safety: start()/stop() from one thread; handlers run concurrently on handler threads,
// each with its own Exchange. Invariant: a connection is touched by exactly one thread at a time
// (the event thread while it reads, its handler thread while a request is being handled).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"
#include "server/http/http_message.h"
#include "server/http/request_parser.h"

namespace dsocr::server::http {

struct ListenerOptions {
  std::string host = "127.0.0.1";
  int port = 0;  // 0: any free port
  size_t max_connections = 2048;
  std::chrono::milliseconds header_timeout{10'000};
  std::chrono::milliseconds body_timeout{60'000};
  std::chrono::milliseconds idle_timeout{60'000};
  std::chrono::milliseconds write_timeout{60'000};  // a write that makes no progress this long
  int64_t max_buffered_body_bytes = 1ll << 30;      // all request bodies held at once
  size_t spare_handler_threads = 16;                // kept alive while idle
  ParserLimits limits;
};

class Connection;

// One request being handled, and the way to answer it. Exactly one response per request: either
// respond() once, or begin_stream() + write()... + end_stream(). A handler that returns without
// answering gets a 500.
class Exchange {
 public:
  Exchange(Connection* connection, HttpRequest* request);
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;

  const HttpRequest& request() const { return *request_; }

  // A whole response with Content-Length. False when the client is gone or too slow to read it.
  bool respond(const HttpResponse& response);
  // Starts a chunked response (close-delimited for an HTTP/1.0 client).
  bool begin_stream(int status, std::string_view content_type, const Headers& headers = {});
  // One piece of the stream, sent now. False once the client is gone; later writes do nothing.
  bool write(std::string_view data);
  // Ends the stream; the connection stays open for the client's next request.
  bool end_stream();

  // Whether the client has gone (see the header comment); cheap, never blocks. Also true once the
  // server is stopping, so that long waits end.
  bool client_gone();
  // The server is stopping: answer now (a last answer is still written, briefly).
  bool server_stopping() const;
  // Bytes of stream body the client ignores (an SSE comment), which client_gone() may write into
  // a stream to learn whether the client is still reading.
  void set_stream_probe(std::string probe) { stream_probe_ = std::move(probe); }

  bool answered() const { return state_ != State::kNothingSent; }
  int status() const { return status_; }
  size_t bytes_sent() const { return bytes_sent_; }
  // Ask for the connection to be closed after this response (also set by write failures).
  void close_after() { close_after_ = true; }
  bool closes_after() const { return close_after_; }

 private:
  enum class State { kNothingSent, kStreaming, kDone, kFailed };
  bool send_all(std::string_view data);

  Connection* connection_;
  HttpRequest* request_;
  State state_ = State::kNothingSent;
  int status_ = 0;
  size_t bytes_sent_ = 0;
  bool chunked_ = false;
  bool close_after_ = false;
  std::string stream_probe_;
  // The client shut down its side: when we wrote a probe, and whether it then proved alive.
  std::optional<std::chrono::steady_clock::time_point> probe_sent_;
  bool half_closed_ = false;
};

class HttpListener {
 public:
  struct Hooks {
    // Decides from the head alone, before the body is read, whether to answer at once (wrong API
    // key, unknown route): the answer is sent with "Connection: close". Runs on the event thread:
    // must be quick and must not block. Empty: every head goes on.
    std::function<std::optional<HttpResponse>(const HttpRequest& head)> filter;
    // Answers one request (on a handler thread).
    std::function<void(Exchange& exchange)> handler;
    // The body of an answer the transport gives itself (a ProtocolError, 503 at the connection
    // cap, 408), so that every error has the server's one error shape. Empty: a plain JSON
    // {"error": {"message": ...}}.
    std::function<HttpResponse(int status, std::string_view message)> error_response;
    // Called for each of those answers, for logs and metrics. May be empty.
    std::function<void(int status, std::string_view message)> on_rejected;
  };

  HttpListener(ListenerOptions options, Hooks hooks);
  ~HttpListener();
  HttpListener(const HttpListener&) = delete;
  HttpListener& operator=(const HttpListener&) = delete;

  // Binds and listens; after it, port() is the real port.
  Status bind();
  int port() const;
  // Runs the event loop until stop(). Precondition: bind() succeeded.
  void serve();
  // Makes serve() return (or not start): the listening socket and idle connections close, handlers
  // see client_gone() and their writes fail; returns once every handler thread has finished.
  void stop();

  // Open client connections, and requests whose answer has not started its last write (for
  // metrics: a client that has read its answer never finds its request still counted).
  size_t open_connections() const;
  size_t requests_in_flight() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsocr::server::http

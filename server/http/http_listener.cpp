#include "server/http/http_listener.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/logging.h"

namespace dsocr::server::http {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr size_t kReadChunk = 64 * 1024;
constexpr int kMaxReadsPerEvent = 16;  // then other connections get their turn
// After our last answer on a connection whose body we refused, the client may still be sending it
// (Python's http.client sends a whole body before reading): reading and dropping it for a while
// lets the client reach our answer instead of a reset. Bounded in time and bytes.
constexpr auto kLingerTime = milliseconds(5'000);
constexpr size_t kMaxLingerBytes = 256u << 20;
constexpr size_t kMaxLingering = 1024;  // sockets being closed gracefully, beyond max_connections
constexpr auto kSweepEvery = milliseconds(100);

std::string numeric_address(const sockaddr_storage& ss, int* port) {
  char text[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, text, sizeof(text));
    *port = ntohs(a->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof(text));
    *port = ntohs(a->sin6_port);
  }
  return text;
}

HttpResponse plain_error(int status, std::string_view message) {
  HttpResponse r;
  r.status = status;
  r.body = nlohmann::json{{"error", {{"message", message}}}}.dump();
  return r;
}

// "HTTP/1.1 200 OK\r\n" + fields + "\r\n".
std::string response_head(int status, std::string_view content_type, const Headers& headers,
                          std::optional<size_t> content_length, bool chunked, bool close,
                          bool keep_alive_header) {
  std::string head = "HTTP/1.1 " + std::to_string(status) + " ";
  head += status_reason(status);
  head += "\r\n";
  if (!content_type.empty()) {
    head += "Content-Type: ";
    head += content_type;
    head += "\r\n";
  }
  if (content_length) head += "Content-Length: " + std::to_string(*content_length) + "\r\n";
  if (chunked) head += "Transfer-Encoding: chunked\r\n";
  if (close)
    head += "Connection: close\r\n";
  else if (keep_alive_header)
    head += "Connection: keep-alive\r\n";
  for (const auto& [name, value] : headers) {
    if (iequals(name, "Content-Length") || iequals(name, "Transfer-Encoding") ||
        iequals(name, "Connection") || iequals(name, "Content-Type")) {
      continue;
    }
    head += name;
    head += ": ";
    head += value;
    head += "\r\n";
  }
  head += "\r\n";
  return head;
}

}  // namespace

// One client socket. Owned by the event thread's table; lent to one handler thread at a time.
class Connection {
 public:
  enum class Phase { kHead, kBody, kHandling, kLingering };

  Connection(int fd, std::string addr, int port)
      : fd(fd), peer_addr(std::move(addr)), peer_port(port) {}
  ~Connection() {
    if (fd >= 0) ::close(fd);
  }

  const int fd;
  const std::string peer_addr;
  const int peer_port;
  Phase phase = Phase::kHead;
  Clock::time_point deadline;
  bool idle = true;              // kHead with nothing of the next request received yet
  std::string in;                // received, not yet parsed (a head, pipelined requests)
  bool eof = false;              // the client shut down its side
  bool eof_at_dispatch = false;  // ...already when its request was handed to a handler
  bool close_after = false;      // close once the current response is written
  size_t linger_bytes = 0;
  bool watched = false;  // in the event thread's epoll set
  RequestHead head;
  std::optional<BodyReader> body;
  int64_t reserved_body_bytes = 0;  // counted in the listener's body budget
  HttpRequest request;              // being handled
  std::atomic<bool>* stopping = nullptr;
  milliseconds write_timeout{60'000};
  // The listener's count of requests not yet answered, and whether this connection's request is
  // in it: it leaves just before its last bytes go out, so that a client that has read its answer
  // never sees its own finished request still counted (/metrics).
  std::atomic<size_t>* unanswered = nullptr;
  bool counted_unanswered = false;
};

namespace {

void leave_unanswered(Connection& c) {
  if (std::exchange(c.counted_unanswered, false)) --*c.unanswered;
}

}  // namespace

Exchange::Exchange(Connection* connection, HttpRequest* request)
    : connection_(connection), request_(request) {}

bool Exchange::send_all(std::string_view data) {
  Connection& c = *connection_;
  auto last_progress = Clock::now();
  while (!data.empty()) {
    // Once the server is stopping, last answers are still written, but nobody waits long for a
    // slow reader.
    const auto patience =
        c.stopping->load() ? std::min(c.write_timeout, milliseconds(1'000)) : c.write_timeout;
    const ssize_t n = ::send(c.fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      bytes_sent_ += static_cast<size_t>(n);
      last_progress = Clock::now();
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (Clock::now() - last_progress > patience) return false;
      pollfd p{c.fd, POLLOUT, 0};
      ::poll(&p, 1, 100);  // short, so that stopping is noticed
      if (p.revents & (POLLERR | POLLHUP | POLLNVAL)) return false;
      continue;
    }
    return false;
  }
  return true;
}

bool Exchange::respond(const HttpResponse& response) {
  if (state_ != State::kNothingSent) return false;
  status_ = response.status;
  const bool head_only = request_->method == "HEAD";
  const bool close = close_after_ || connection_->close_after;
  std::string out =
      response_head(response.status, response.content_type, response.headers, response.body.size(),
                    false, close, request_->minor_version == 0 && !close);
  if (!head_only) out += response.body;
  leave_unanswered(*connection_);
  if (!send_all(out)) {
    state_ = State::kFailed;
    close_after_ = true;
    return false;
  }
  state_ = State::kDone;
  return true;
}

bool Exchange::begin_stream(int status, std::string_view content_type, const Headers& headers) {
  if (state_ != State::kNothingSent) return false;
  status_ = status;
  chunked_ = request_->minor_version >= 1;
  if (!chunked_) close_after_ = true;  // an HTTP/1.0 client reads the stream until we close
  const bool close = close_after_ || connection_->close_after;
  if (!send_all(
          response_head(status, content_type, headers, std::nullopt, chunked_, close, false))) {
    state_ = State::kFailed;
    close_after_ = true;
    return false;
  }
  state_ = State::kStreaming;
  return true;
}

bool Exchange::write(std::string_view data) {
  if (state_ != State::kStreaming) return false;
  if (data.empty()) return true;
  bool ok;
  if (chunked_) {
    char size[32];
    const int n = std::snprintf(size, sizeof(size), "%zx\r\n", data.size());
    std::string framed(size, static_cast<size_t>(n));
    framed += data;
    framed += "\r\n";
    ok = send_all(framed);
  } else {
    ok = send_all(data);
  }
  if (!ok) {
    state_ = State::kFailed;
    close_after_ = true;
  }
  return ok;
}

bool Exchange::end_stream() {
  if (state_ != State::kStreaming) return false;
  leave_unanswered(*connection_);
  if (chunked_ && !send_all("0\r\n\r\n")) {
    state_ = State::kFailed;
    close_after_ = true;
    return false;
  }
  state_ = State::kDone;
  return true;
}

bool Exchange::server_stopping() const { return connection_->stopping->load(); }

bool Exchange::client_gone() {
  Connection& c = *connection_;
  if (c.stopping->load() || state_ == State::kFailed) return true;
  pollfd p{c.fd, POLLIN | POLLRDHUP, 0};
  if (::poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLERR | POLLHUP | POLLNVAL)) return true;  // reset
  // Readable: pipelined bytes of a next request, or the client's end of stream.
  char byte;
  const ssize_t n = ::recv(c.fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) return false;  // more requests behind this one: it will read the answers
  if (n < 0) return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
  if (!c.in.empty() || half_closed_) return false;
  // End of stream: gone, or half-closed? Write something it must ignore; a client that has gone
  // answers with a reset, which the poll above sees on a later call.
  const auto now = Clock::now();
  if (probe_sent_) {
    if (now - *probe_sent_ > milliseconds(1'000)) half_closed_ = true;  // no reset came
    return false;
  }
  bool probed = false;
  if (state_ == State::kNothingSent && request_->minor_version >= 1) {
    constexpr std::string_view kInterim = "HTTP/1.1 100 Continue\r\n\r\n";
    probed = ::send(c.fd, kInterim.data(), kInterim.size(), MSG_NOSIGNAL | MSG_DONTWAIT) ==
             static_cast<ssize_t>(kInterim.size());
  } else if (state_ == State::kStreaming && !stream_probe_.empty()) {
    probed = write(stream_probe_);
  }
  if (!probed) return !c.eof_at_dispatch;  // cannot ask (HTTP/1.0): it left unless it said so
  probe_sent_ = now;
  return false;
}

// Handler threads: one per request being handled, reused, created on demand (a waiting request
// never waits for a thread), and idle ones beyond `spare` exit after a while.
class HandlerPool {
 public:
  using Job = std::function<void()>;
  explicit HandlerPool(size_t spare) : state_(std::make_shared<State>()) { state_->spare = spare; }

  void run(Job job) {
    std::lock_guard lock(state_->mu);
    state_->jobs.push_back(std::move(job));
    if (state_->jobs.size() > state_->idle) {
      ++state_->threads;
      std::thread([s = state_] { work(s); }).detach();
    } else {
      state_->cv.notify_one();
    }
  }

  // Lets idle threads exit and waits until every thread has (jobs already given run first).
  void shut_down() {
    std::unique_lock lock(state_->mu);
    state_->stopping = true;
    state_->cv.notify_all();
    state_->done.wait(lock, [&] { return state_->threads == 0; });
  }

 private:
  struct State {
    std::mutex mu;
    std::condition_variable cv, done;
    std::deque<Job> jobs;
    size_t idle = 0, threads = 0, spare = 0;
    bool stopping = false;
  };

  static void work(std::shared_ptr<State> s) {
    std::unique_lock lock(s->mu);
    while (true) {
      if (s->jobs.empty()) {
        if (s->stopping) break;
        ++s->idle;
        const bool woke = s->cv.wait_for(lock, std::chrono::seconds(30),
                                         [&] { return !s->jobs.empty() || s->stopping; });
        --s->idle;
        if (!woke && s->threads > s->spare) break;
        continue;
      }
      Job job = std::move(s->jobs.front());
      s->jobs.pop_front();
      lock.unlock();
      job();
      lock.lock();
    }
    --s->threads;
    s->done.notify_all();
  }

  std::shared_ptr<State> state_;
};

struct HttpListener::Impl {
  ListenerOptions options;
  Hooks hooks;
  std::shared_ptr<spdlog::logger> logger = log::get("http");

  int listen_fd = -1;
  int epoll_fd = -1;
  int wake_fd = -1;
  int bound_port = -1;

  std::atomic<bool> stopping{false};
  std::mutex serve_mu;
  std::condition_variable serve_cv;
  bool serving = false, stop_requested = false;

  // Event thread only.
  std::unordered_map<int, std::unique_ptr<Connection>> connections;
  size_t lingering = 0;
  int64_t buffered_body_bytes = 0;
  bool accept_paused = false;
  Clock::time_point accept_resume;

  // Handed back by handler threads.
  std::mutex returned_mu;
  std::vector<Connection*> returned;

  std::atomic<size_t> open{0}, in_flight{0};
  std::atomic<size_t> unanswered{0};  // in_flight, less those whose answer is being written
  HandlerPool pool;

  Impl(ListenerOptions o, Hooks h)
      : options(std::move(o)), hooks(std::move(h)), pool(options.spare_handler_threads) {
    if (!hooks.error_response) hooks.error_response = plain_error;
  }

  ~Impl() {
    for (int fd : {listen_fd, epoll_fd, wake_fd})
      if (fd >= 0) ::close(fd);
  }

  void wake() {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd, &one, sizeof(one));
  }

  void watch(Connection* c) {
    if (c->watched || c->eof) return;
    c->watched = true;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.ptr = c;
    ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, c->fd, &ev);
  }
  void unwatch(Connection* c) {
    if (!c->watched) return;
    c->watched = false;
    ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, c->fd, nullptr);
  }

  void close_connection(Connection* c) {
    if (c->phase == Connection::Phase::kLingering) --lingering;
    buffered_body_bytes -= c->reserved_body_bytes;
    connections.erase(c->fd);  // closes the socket, which also leaves the epoll set
    open = connections.size();
  }

  // Our side is done: shut it down and read what the client still sends for a moment, so that it
  // sees our last answer rather than a reset caused by unread data.
  void close_gracefully(Connection* c) {
    if (c->eof || lingering >= kMaxLingering) return close_connection(c);
    ::shutdown(c->fd, SHUT_WR);
    buffered_body_bytes -= c->reserved_body_bytes;
    c->reserved_body_bytes = 0;
    c->body.reset();
    c->in.clear();
    c->phase = Connection::Phase::kLingering;
    c->deadline = Clock::now() + kLingerTime;
    ++lingering;
    watch(c);
  }

  // An answer from the transport itself, then the connection is closed.
  void reject(Connection* c, int status, std::string_view message, Headers extra = {}) {
    HttpResponse r = hooks.error_response(status, message);
    for (auto& h : extra) r.set_header(h.first, h.second);
    const std::string out =
        response_head(r.status, r.content_type, r.headers, r.body.size(), false, true, false) +
        r.body;
    // One non-blocking attempt: the socket's send buffer is empty at this point.
    [[maybe_unused]] ssize_t n = ::send(c->fd, out.data(), out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (hooks.on_rejected) hooks.on_rejected(status, message);
    close_gracefully(c);
  }

  void accept_all() {
    while (true) {
      sockaddr_storage peer{};
      socklen_t len = sizeof(peer);
      const int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&peer), &len,
                               SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          // Out of descriptors: stop accepting for a moment instead of spinning on the error.
          logger->warn("cannot accept connections: {}; pausing 100 ms", std::strerror(errno));
          ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, listen_fd, nullptr);
          accept_paused = true;
          accept_resume = Clock::now() + milliseconds(100);
        }
        return;
      }
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      int port = 0;
      std::string addr = numeric_address(peer, &port);
      auto owned = std::make_unique<Connection>(fd, std::move(addr), port);
      Connection* c = owned.get();
      c->stopping = &stopping;
      c->write_timeout = options.write_timeout;
      c->deadline = Clock::now() + options.idle_timeout;
      const bool over_cap = connections.size() - lingering >= options.max_connections;
      connections.emplace(fd, std::move(owned));
      open = connections.size();
      watch(c);
      if (over_cap) {
        reject(c, 503, "too many open connections; retry shortly", {{"Retry-After", "1"}});
      }
    }
  }

  void on_readable(Connection* c) {
    char buf[kReadChunk];
    for (int i = 0; i < kMaxReadsPerEvent; ++i) {
      const ssize_t n = ::recv(c->fd, buf, sizeof(buf), 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        return close_connection(c);  // reset
      }
      if (n == 0) {
        c->eof = true;
        unwatch(c);  // level-triggered end of stream would wake us forever
        if (c->phase == Connection::Phase::kLingering) return close_connection(c);
        break;
      }
      if (c->phase == Connection::Phase::kLingering) {
        c->linger_bytes += static_cast<size_t>(n);
        if (c->linger_bytes > kMaxLingerBytes) return close_connection(c);
        continue;
      }
      std::string_view data(buf, static_cast<size_t>(n));
      if (c->phase == Connection::Phase::kBody) {
        const size_t used = c->body->feed(data);
        data.remove_prefix(used);
        if (!account_body(c)) return;
      }
      c->in.append(data);
      if (!process(c)) return;  // closed
      if (c->phase == Connection::Phase::kHandling || c->phase == Connection::Phase::kLingering)
        break;
    }
    if (c->phase != Connection::Phase::kLingering && c->phase != Connection::Phase::kHandling)
      process(c);
  }

  // Counts the connection's body at `size` bytes in the budget for all bodies held at once
  // (it only grows: a reserved Content-Length, a growing chunked body, an inflated one). False
  // when that is over the budget: then the request was answered 503.
  bool reserve_body_bytes(Connection* c, int64_t size) {
    if (size <= c->reserved_body_bytes) return true;
    const int64_t more = size - c->reserved_body_bytes;
    if (buffered_body_bytes + more > options.max_buffered_body_bytes) {
      reject(c, 503, "the server is holding too many request bodies; retry shortly",
             {{"Retry-After", "1"}});
      return false;
    }
    buffered_body_bytes += more;
    c->reserved_body_bytes = size;
    return true;
  }

  bool account_body(Connection* c) {
    return reserve_body_bytes(c, static_cast<int64_t>(c->body->body().size()));
  }

  // Advances the connection's request as far as its buffered bytes allow. False when the
  // connection was closed or rejected.
  bool process(Connection* c) {
    const auto now = Clock::now();
    if (c->phase == Connection::Phase::kHead) {
      if (c->in.empty()) {
        if (c->eof) {
          close_connection(c);
          return false;
        }
        return true;
      }
      if (c->idle) {  // the first byte of a request starts its header clock
        c->idle = false;
        c->deadline = now + options.header_timeout;
      }
      HeadParseResult r = parse_request_head(c->in, options.limits);
      if (r.kind == HeadParseResult::kIncomplete) {
        if (c->eof) {
          reject(c, 400, "the connection closed before the request head ended");
          return false;
        }
        return true;
      }
      if (r.kind == HeadParseResult::kError) {
        reject(c, r.error.status, r.error.message);
        return false;
      }
      c->in.erase(0, r.consumed);
      c->head = std::move(r.head);
      c->head.request.remote_addr = c->peer_addr;
      c->head.request.remote_port = c->peer_port;
      c->close_after = !c->head.keep_alive;
      if (hooks.filter) {
        if (std::optional<HttpResponse> early = hooks.filter(c->head.request)) {
          // Its body was not read, so the connection cannot carry another request.
          const std::string out = response_head(early->status, early->content_type, early->headers,
                                                early->body.size(), false, true, false) +
                                  (c->head.request.method == "HEAD" ? "" : early->body);
          [[maybe_unused]] ssize_t n =
              ::send(c->fd, out.data(), out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
          close_gracefully(c);
          return false;
        }
      }
      if (c->head.framing == BodyFraming::kContentLength &&
          !reserve_body_bytes(c, c->head.content_length)) {
        return false;
      }
      c->body.emplace(c->head.framing, c->head.content_length, options.limits.max_body_bytes);
      c->phase = Connection::Phase::kBody;
      c->deadline = now + options.body_timeout;
      if (c->head.expect_continue && !c->body->done() && c->in.empty()) {
        constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
        [[maybe_unused]] ssize_t n =
            ::send(c->fd, kContinue.data(), kContinue.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      }
      const size_t used = c->body->feed(c->in);
      c->in.erase(0, used);
      if (!account_body(c)) return false;
    }
    if (c->phase == Connection::Phase::kBody) {
      if (const auto& err = c->body->error()) {
        reject(c, err->status, err->message);
        return false;
      }
      if (!c->body->done()) {
        if (c->eof) {
          reject(c, 400, "the connection closed before the request body ended");
          return false;
        }
        return true;
      }
      c->request = std::move(c->head.request);
      c->request.body = c->body->take_body();
      c->body.reset();
      if (auto err =
              decode_content(c->head.coding, &c->request.body, options.limits.max_body_bytes)) {
        reject(c, err->status, err->message);
        return false;
      }
      // An inflated body counts at its inflated size.
      if (!reserve_body_bytes(c, static_cast<int64_t>(c->request.body.size()))) return false;
      dispatch(c);
    }
    return true;
  }

  void dispatch(Connection* c) {
    c->phase = Connection::Phase::kHandling;
    c->eof_at_dispatch = c->eof;
    unwatch(c);
    ++in_flight;
    ++unanswered;
    c->unanswered = &unanswered;
    c->counted_unanswered = true;
    pool.run([this, c] {
      handle(c);
      {
        std::lock_guard lock(returned_mu);
        returned.push_back(c);
      }
      wake();
    });
  }

  // On a handler thread.
  void handle(Connection* c) {
    Exchange exchange(c, &c->request);
    try {
      hooks.handler(exchange);
    } catch (const std::exception& e) {
      logger->error("{} {}: handler failed: {}", c->request.method, c->request.path, e.what());
    } catch (...) {
      logger->error("{} {}: handler failed", c->request.method, c->request.path);
    }
    if (!exchange.answered()) {
      exchange.respond(hooks.error_response(500, "internal server error"));
    } else if (exchange.status() != 0 && !exchange.closes_after()) {
      // A stream the handler left open cannot be followed by another response.
      exchange.end_stream();
    }
    c->close_after = c->close_after || exchange.closes_after();
    c->request = HttpRequest();
  }

  void take_returned() {
    std::vector<Connection*> back;
    {
      std::lock_guard lock(returned_mu);
      back.swap(returned);
    }
    for (Connection* c : back) {
      --in_flight;
      leave_unanswered(*c);
      buffered_body_bytes -= c->reserved_body_bytes;
      c->reserved_body_bytes = 0;
      if (c->close_after || stopping) {
        close_gracefully(c);
        continue;
      }
      c->phase = Connection::Phase::kHead;
      c->idle = true;
      c->deadline = Clock::now() + options.idle_timeout;
      watch(c);
      process(c);  // a pipelined request may be waiting in the buffer already
    }
  }

  void sweep(Clock::time_point now) {
    if (accept_paused && now >= accept_resume) {
      accept_paused = false;
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.ptr = nullptr;
      ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listen_fd, &ev);
    }
    std::vector<Connection*> expired;
    for (auto& [fd, c] : connections)
      if (c->phase != Connection::Phase::kHandling && now >= c->deadline)
        expired.push_back(c.get());
    for (Connection* c : expired) {
      switch (c->phase) {
        case Connection::Phase::kHead:
          if (c->idle)
            close_connection(c);  // an idle keep-alive connection: nothing to answer
          else
            reject(c, 408, "the request head did not arrive in time");
          break;
        case Connection::Phase::kBody:
          reject(c, 408, "the request body did not arrive in time");
          break;
        default:
          close_connection(c);
      }
    }
  }

  void run_loop() {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = nullptr;  // the listening socket
    ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listen_fd, &ev);
    epoll_event wake_ev{};
    wake_ev.events = EPOLLIN;
    wake_ev.data.ptr = &wake_fd;
    ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, wake_fd, &wake_ev);

    std::vector<epoll_event> events(256);
    auto last_sweep = Clock::now();
    while (!stopping) {
      const int n = ::epoll_wait(epoll_fd, events.data(), static_cast<int>(events.size()),
                                 static_cast<int>(kSweepEvery.count()));
      for (int i = 0; i < n; ++i) {
        void* tag = events[i].data.ptr;
        if (tag == nullptr) {
          accept_all();
        } else if (tag == &wake_fd) {
          uint64_t count;
          [[maybe_unused]] ssize_t r = ::read(wake_fd, &count, sizeof(count));
          take_returned();
        } else {
          // Only on_readable() closes a watched connection, and only its own: no event of this
          // batch can refer to a connection closed earlier in it.
          on_readable(static_cast<Connection*>(tag));
        }
      }
      const auto now = Clock::now();
      if (now - last_sweep >= kSweepEvery) {
        sweep(now);
        last_sweep = now;
      }
    }
    // Stopping: close the listener and every connection not being handled; wait for handlers
    // (they see client_gone() and failing writes), then close theirs.
    ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, listen_fd, nullptr);
    ::close(listen_fd);
    listen_fd = -1;
    std::vector<Connection*> idle;
    for (auto& [fd, c] : connections)
      if (c->phase != Connection::Phase::kHandling) idle.push_back(c.get());
    for (Connection* c : idle) close_connection(c);
    while (in_flight > 0) {
      pollfd p{wake_fd, POLLIN, 0};
      ::poll(&p, 1, 50);
      uint64_t count;
      if (p.revents & POLLIN) [[maybe_unused]]
        ssize_t r = ::read(wake_fd, &count, sizeof(count));
      take_returned();
    }
    connections.clear();
    open = 0;
    pool.shut_down();
  }
};

HttpListener::HttpListener(ListenerOptions options, Hooks hooks)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(hooks))) {}

HttpListener::~HttpListener() { stop(); }

Status HttpListener::bind() {
  auto& o = impl_->options;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(o.port);
  const int rc =
      ::getaddrinfo(o.host.empty() ? nullptr : o.host.c_str(), port.c_str(), &hints, &found);
  if (rc != 0) {
    return unavailable("cannot listen on " + o.host + ":" + port + ": " + ::gai_strerror(rc));
  }
  int fd = -1;
  std::string why = "no address";
  for (addrinfo* a = found; a != nullptr && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd, 4096) != 0) {
      why = std::strerror(errno);
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(found);
  if (fd < 0) {
    return unavailable("cannot listen on " + o.host + ":" + port + ": " + why +
                       " (address in use, or not an address of this machine?)");
  }
  sockaddr_storage self{};
  socklen_t len = sizeof(self);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&self), &len);
  int bound = 0;
  numeric_address(self, &bound);
  impl_->listen_fd = fd;
  impl_->bound_port = bound;
  impl_->epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
  impl_->wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (impl_->epoll_fd < 0 || impl_->wake_fd < 0)
    return unavailable(std::string("cannot create the event loop: ") + std::strerror(errno));
  return Status();
}

int HttpListener::port() const { return impl_->bound_port; }

void HttpListener::serve() {
  {
    std::lock_guard lock(impl_->serve_mu);
    if (impl_->stop_requested || impl_->listen_fd < 0) return;
    impl_->serving = true;
  }
  impl_->run_loop();
  std::lock_guard lock(impl_->serve_mu);
  impl_->serving = false;
  impl_->serve_cv.notify_all();
}

void HttpListener::stop() {
  if (!impl_) return;
  std::unique_lock lock(impl_->serve_mu);
  impl_->stop_requested = true;
  impl_->stopping = true;
  if (!impl_->serving) return;
  impl_->wake();
  impl_->serve_cv.wait(lock, [&] { return !impl_->serving; });
}

size_t HttpListener::open_connections() const { return impl_->open.load(); }
size_t HttpListener::requests_in_flight() const { return impl_->unanswered.load(); }

}  // namespace dsocr::server::http

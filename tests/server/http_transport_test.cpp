// The HTTP/1.1 transport: request parsing rules (RFC 9112) and the listener's limits, pipelining,
// half-close and disconnect detection, on raw loopback sockets (an HTTP client library would
// normalise exactly the bytes these tests are about).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <thread>

#include "server/http/http_listener.h"
#include "server/http/request_parser.h"

namespace dsocr::server::http {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

HeadParseResult parse(const std::string& head, ParserLimits limits = {}) {
  return parse_request_head(head, limits);
}

int error_status(const std::string& head) {
  HeadParseResult r = parse(head);
  return r.kind == HeadParseResult::kError ? r.error.status : 0;
}

TEST_CASE("request head: fields, framing and persistence", "[http][parser]") {
  HeadParseResult r = parse(
      "\r\nPOST /v1/chat?x=1 HTTP/1.1\r\nHost: a\r\ncontent-length: 5\r\nX-A:  b c \r\n\r\nhello");
  REQUIRE(r.kind == HeadParseResult::kComplete);
  CHECK(r.head.request.method == "POST");
  CHECK(r.head.request.path == "/v1/chat");
  CHECK(r.head.request.query == "x=1");
  CHECK(r.head.request.header("x-a") == "b c");
  CHECK(r.head.framing == BodyFraming::kContentLength);
  CHECK(r.head.content_length == 5);
  CHECK(r.head.keep_alive);
  CHECK(r.consumed ==
        std::string(
            "\r\nPOST /v1/chat?x=1 HTTP/1.1\r\nHost: a\r\ncontent-length: 5\r\nX-A:  b c \r\n\r\n")
            .size());

  CHECK(parse("GET / HTTP/1.1\nHost: a\n\n").kind == HeadParseResult::kComplete);  // bare LF
  CHECK_FALSE(parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").head.keep_alive);
  CHECK_FALSE(parse("GET / HTTP/1.0\r\n\r\n").head.keep_alive);
  CHECK(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").head.keep_alive);
  CHECK(parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").head.framing ==
        BodyFraming::kChunked);
  CHECK(parse("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n")
            .head.content_length == 5);
  CHECK(parse("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
            .head.expect_continue);
  CHECK(parse("POST / HTTP/1.1\r\nContent-Encoding: gzip\r\n\r\n").head.coding ==
        ContentCoding::kGzip);
  CHECK(parse("GET / HTTP/1.1\r\nHost: a\r\n").kind == HeadParseResult::kIncomplete);
}

TEST_CASE("request head: ambiguous or hostile framing is refused", "[http][parser]") {
  // Smuggling: lengths that disagree, both framings, codings we cannot undo.
  CHECK(error_status("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n") == 400);
  CHECK(error_status("POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n") == 400);
  CHECK(error_status(
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n") == 400);
  CHECK(error_status("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n") == 400);
  CHECK(error_status("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n") == 400);
  CHECK(error_status("POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n") == 400);
  CHECK(error_status("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n") == 413);
  CHECK(error_status("POST / HTTP/1.1\r\nContent-Length: 67108865\r\n\r\n") == 413);
  CHECK(error_status("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n") == 501);
  CHECK(
      error_status(
          "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n") ==
      400);
  CHECK(error_status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n") == 400);
  CHECK(error_status("POST / HTTP/1.1\r\nContent-Encoding: br\r\n\r\n") == 415);
  CHECK(error_status("POST / HTTP/1.1\r\nExpect: magic\r\n\r\n") == 417);
  // Malformed heads.
  CHECK(error_status("GET / HTTP/1.1\r\nHost : a\r\n\r\n") == 400);
  CHECK(error_status("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n") == 400);
  CHECK(error_status("GET / HTTP/2.0\r\n\r\n") == 505);
  CHECK(error_status("GET /  HTTP/1.1\r\n\r\n") == 400);
  CHECK(error_status("G(T / HTTP/1.1\r\n\r\n") == 400);
  CHECK(error_status(std::string("GET / HTTP/1.1\r\nX: a") + '\0' + "b\r\n\r\n") == 400);
  // Sizes: a long request line (even unfinished), too many or too large header fields.
  CHECK(error_status("GET /" + std::string(9000, 'a')) == 414);
  std::string many = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 101; ++i) many += "X-" + std::to_string(i) + ": v\r\n";
  CHECK(error_status(many + "\r\n") == 431);
  CHECK(error_status("GET / HTTP/1.1\r\nX: " + std::string(70000, 'v')) == 431);
}

TEST_CASE("request body: Content-Length and chunked framing under a decoded-size limit",
          "[http][parser]") {
  BodyReader length(BodyFraming::kContentLength, 5, 100);
  CHECK(length.feed("hel") == 3);
  CHECK_FALSE(length.done());
  CHECK(length.feed("loGET / HTTP/1.1") == 2);  // the rest is the next request
  REQUIRE(length.done());
  CHECK(length.body() == "hello");

  BodyReader chunked(BodyFraming::kChunked, 0, 100);
  const std::string wire = "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
  size_t used = 0;
  for (char c : wire) used += chunked.feed(std::string_view(&c, 1));  // byte by byte
  REQUIRE(chunked.done());
  CHECK(chunked.body() == "hello world");
  CHECK(used == wire.size() - 4);

  BodyReader big(BodyFraming::kChunked, 0, 1000);
  std::string piece = "200\r\n" + std::string(512, 'x') + "\r\n";
  big.feed(piece);
  big.feed(piece);  // 1024 > 1000: refused before the bytes are kept
  REQUIRE(big.error());
  CHECK(big.error()->status == 413);
  CHECK(big.body().size() <= 1000);

  BodyReader bad(BodyFraming::kChunked, 0, 1000);
  bad.feed("zz\r\n");
  REQUIRE(bad.error());
  CHECK(bad.error()->status == 400);
  BodyReader overlong(BodyFraming::kChunked, 0, 1000);
  overlong.feed("2\r\nabc\r\n");
  REQUIRE(overlong.error());
  CHECK(overlong.error()->status == 400);
}

std::string gzip(const std::string& data, int window_bits = 16 + 15) {
  z_stream zs{};
  REQUIRE(deflateInit2(&zs, 9, Z_DEFLATED, window_bits, 9, Z_DEFAULT_STRATEGY) == Z_OK);
  std::string out(deflateBound(&zs, data.size()), '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  REQUIRE(deflate(&zs, Z_FINISH) == Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

TEST_CASE("request body: gzip and deflate inflate under the limit, bombs stop at it",
          "[http][parser]") {
  std::string body = gzip("{\"a\": 1}");
  CHECK_FALSE(decode_content(ContentCoding::kGzip, &body, 1000));
  CHECK(body == "{\"a\": 1}");
  for (int bits : {15, -15}) {  // zlib and raw deflate
    std::string d = gzip("deflated", bits);
    CHECK_FALSE(decode_content(ContentCoding::kDeflate, &d, 1000));
    CHECK(d == "deflated");
  }
  // 64 MiB of zeros compress to ~64 KB: refused when the output passes 1 MiB.
  std::string bomb = gzip(std::string(64 << 20, '\0'));
  CHECK(bomb.size() < (1 << 20));
  auto err = decode_content(ContentCoding::kGzip, &bomb, 1 << 20);
  REQUIRE(err);
  CHECK(err->status == 413);
  std::string corrupt = "not gzip at all";
  err = decode_content(ContentCoding::kGzip, &corrupt, 1000);
  REQUIRE(err);
  CHECK(err->status == 400);
  std::string truncated = gzip(std::string(10000, 'x'));
  truncated.resize(truncated.size() / 2);
  err = decode_content(ContentCoding::kGzip, &truncated, 100000);
  REQUIRE(err);
  CHECK(err->status == 400);
}

// --- The listener, on loopback --------------------------------------------------------------

int connect_to(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  return fd;
}

void send_text(int fd, const std::string& text) {
  REQUIRE(send(fd, text.data(), text.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(text.size()));
}

// Everything the server sends until it closes or `timeout` passes.
std::string read_until_close(int fd, std::chrono::milliseconds timeout = 5s) {
  std::string got;
  const auto deadline = Clock::now() + timeout;
  char buf[4096];
  while (Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 50};
    if (poll(&p, 1, 50) <= 0) continue;
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

// Reads until `count` occurrences of `marker` arrived (or the timeout).
std::string read_until(int fd, const std::string& marker, int count,
                       std::chrono::milliseconds timeout = 5s) {
  std::string got;
  const auto deadline = Clock::now() + timeout;
  char buf[4096];
  auto occurrences = [&] {
    int n = 0;
    for (size_t at = got.find(marker); at != std::string::npos; at = got.find(marker, at + 1)) ++n;
    return n;
  };
  while (Clock::now() < deadline && occurrences() < count) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) continue;
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

int count_of(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// A listener that echoes "METHOD PATH BODY" and can be made to wait for its client to leave.
struct EchoServer {
  ListenerOptions options;
  std::atomic<int> handled{0}, saw_gone{0};
  std::atomic<bool> wait_for_gone{false};
  std::chrono::milliseconds wait_time{5s};
  std::unique_ptr<HttpListener> listener;
  std::thread thread;

  explicit EchoServer(ListenerOptions o = {}) : options(std::move(o)) {
    HttpListener::Hooks hooks;
    hooks.filter = [](const HttpRequest& head) -> std::optional<HttpResponse> {
      if (head.path != "/private") return std::nullopt;
      HttpResponse r;
      r.status = 401;
      r.body = "{}";
      return r;
    };
    hooks.handler = [this](Exchange& ex) {
      ++handled;
      if (wait_for_gone) {
        const auto deadline = Clock::now() + wait_time;
        while (Clock::now() < deadline && !ex.client_gone()) std::this_thread::sleep_for(10ms);
        if (ex.client_gone()) ++saw_gone;
      }
      HttpResponse r;
      r.content_type = "text/plain";
      r.body = ex.request().method + " " + ex.request().path + " " + ex.request().body;
      ex.respond(r);
    };
    listener = std::make_unique<HttpListener>(options, hooks);
    REQUIRE(listener->bind().ok());
    thread = std::thread([this] { listener->serve(); });
  }
  ~EchoServer() {
    listener->stop();
    thread.join();
  }
  int port() const { return listener->port(); }
};

TEST_CASE("listener: pipelined requests are all answered, in order", "[http][listener]") {
  EchoServer s;
  int fd = connect_to(s.port());
  send_text(fd,
            "POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\none"
            "POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n"
            "POST /c HTTP/1.1\r\nContent-Length: 5\r\n\r\nthree");
  std::string got = read_until(fd, "HTTP/1.1 200", 3);
  got += read_until(fd, "three", 1, 1s);
  close(fd);
  const size_t a = got.find("POST /a one"), b = got.find("POST /b two"),
               c = got.find("POST /c three");
  REQUIRE(a != std::string::npos);
  REQUIRE(b != std::string::npos);
  REQUIRE(c != std::string::npos);
  CHECK(a < b);
  CHECK(b < c);
}

TEST_CASE("listener: a half-closed client gets its answer", "[http][listener]") {
  EchoServer s;
  SECTION("one request") {
    int fd = connect_to(s.port());
    send_text(fd, "POST /x HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi");
    shutdown(fd, SHUT_WR);
    std::string got = read_until_close(fd);
    close(fd);
    CHECK(got.find("200 OK") != std::string::npos);
    CHECK(got.find("POST /x hi") != std::string::npos);
  }
  SECTION("pipelined requests, then the half-close") {
    int fd = connect_to(s.port());
    send_text(fd, "GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n");
    shutdown(fd, SHUT_WR);
    std::string got = read_until_close(fd);
    close(fd);
    CHECK(count_of(got, "HTTP/1.1 200") == 3);
  }
}

TEST_CASE("listener: a request refused from its head does not poison the connection",
          "[http][listener]") {
  EchoServer s;
  int fd = connect_to(s.port());
  // The body is never read: the answer says "Connection: close" and the connection ends, so the
  // client's next request goes on a new connection instead of being parsed from the old body.
  send_text(fd,
            "POST /private HTTP/1.1\r\nContent-Length: 30\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n");
  std::string got = read_until_close(fd);
  close(fd);
  CHECK(got.find("HTTP/1.1 401") == 0);
  CHECK(got.find("Connection: close") != std::string::npos);
  CHECK(got.find("smuggled") == std::string::npos);
  CHECK(count_of(got, "HTTP/1.1") == 1);
  CHECK(s.handled == 0);
}

TEST_CASE("listener: protocol errors are answered, then the connection closes",
          "[http][listener]") {
  ListenerOptions o;
  o.limits.max_body_bytes = 1 << 20;
  EchoServer s(o);
  auto answer = [&](const std::string& request) {
    int fd = connect_to(s.port());
    send_text(fd, request);
    std::string got = read_until_close(fd);
    close(fd);
    return got.substr(0, 12);
  };
  CHECK(answer("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n") == "HTTP/1.1 400");
  CHECK(answer("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab") ==
        "HTTP/1.1 400");
  CHECK(
      answer(
          "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n") ==
      "HTTP/1.1 400");
  CHECK(answer("POST / HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n") == "HTTP/1.1 413");
  // A chunked body that never stops: refused at the limit while the client is still sending.
  int fd = connect_to(s.port());
  send_text(fd, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
  const std::string chunk = "10000\r\n" + std::string(0x10000, 'x') + "\r\n";
  for (int i = 0; i < 40; ++i)
    if (send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL) < 0) break;
  std::string got = read_until_close(fd);
  close(fd);
  CHECK(got.substr(0, 12) == "HTTP/1.1 413");
  // A gzip body that inflates past the limit.
  const std::string bomb = gzip(std::string(64 << 20, '\0'));
  CHECK(answer("POST / HTTP/1.1\r\nContent-Encoding: gzip\r\nContent-Length: " +
               std::to_string(bomb.size()) + "\r\n\r\n" + bomb) == "HTTP/1.1 413");
  CHECK(s.handled == 0);
}

TEST_CASE("listener: slow clients are cut off, idle ones cost no thread", "[http][listener]") {
  ListenerOptions o;
  o.header_timeout = 500ms;
  o.body_timeout = 500ms;
  o.spare_handler_threads = 1;
  EchoServer s(o);
  // Many connections trickling a head: none of them holds up a normal request.
  std::vector<int> slow;
  for (int i = 0; i < 200; ++i) {
    slow.push_back(connect_to(s.port()));
    send_text(slow.back(), "GET / HT");
  }
  int fd = connect_to(s.port());
  const auto started = Clock::now();
  send_text(fd, "GET /fast HTTP/1.1\r\n\r\n");
  std::string fast = read_until(fd, "GET /fast", 1);
  CHECK(Clock::now() - started < 1s);
  CHECK(fast.find("200 OK") != std::string::npos);
  close(fd);
  // The trickling heads get 408 once the header timeout passes.
  std::string timed_out = read_until_close(slow.front(), 3s);
  CHECK(timed_out.substr(0, 12) == "HTTP/1.1 408");
  for (int f : slow) close(f);
  // A body shorter than its Content-Length is answered 408 at the body timeout, not held.
  fd = connect_to(s.port());
  send_text(fd, "POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\nshort");
  const auto body_started = Clock::now();
  std::string got = read_until_close(fd, 5s);
  close(fd);
  CHECK(got.substr(0, 12) == "HTTP/1.1 408");
  CHECK(Clock::now() - body_started < 2s);
}

TEST_CASE("listener: past the connection cap new clients get 503 at once", "[http][listener]") {
  ListenerOptions o;
  o.max_connections = 8;
  EchoServer s(o);
  std::vector<int> held;
  for (int i = 0; i < 8; ++i) held.push_back(connect_to(s.port()));
  std::this_thread::sleep_for(100ms);  // all accepted
  int extra = connect_to(s.port());
  std::string got = read_until_close(extra, 3s);
  close(extra);
  CHECK(got.substr(0, 12) == "HTTP/1.1 503");
  CHECK(got.find("Retry-After: 1") != std::string::npos);
  for (int f : held) close(f);
  // Room again once they close.
  std::this_thread::sleep_for(200ms);
  int fd = connect_to(s.port());
  send_text(fd, "GET /again HTTP/1.1\r\nConnection: close\r\n\r\n");
  CHECK(read_until_close(fd).find("200 OK") != std::string::npos);
  close(fd);
}

TEST_CASE("listener: a client that resets or leaves is seen as gone", "[http][listener]") {
  EchoServer s;
  s.wait_for_gone = true;
  SECTION("reset") {
    int fd = connect_to(s.port());
    send_text(fd, "GET /wait HTTP/1.1\r\n\r\n");
    while (s.handled == 0) std::this_thread::sleep_for(5ms);
    linger l{1, 0};  // close with RST
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    close(fd);
  }
  SECTION("closed after its request was taken") {
    int fd = connect_to(s.port());
    send_text(fd, "GET /wait HTTP/1.1\r\n\r\n");
    while (s.handled == 0) std::this_thread::sleep_for(5ms);
    close(fd);
  }
  const auto deadline = Clock::now() + 3s;
  while (s.saw_gone == 0 && Clock::now() < deadline) std::this_thread::sleep_for(10ms);
  CHECK(s.saw_gone == 1);
}

}  // namespace
}  // namespace dsocr::server::http

namespace dsocr::server::http {
namespace {

TEST_CASE("listener: a half-closed client is asked, not taken for gone", "[http][listener]") {
  EchoServer s;
  s.wait_for_gone = true;
  s.wait_time = 2s;
  int fd = connect_to(s.port());
  send_text(fd, "POST /wait HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi");
  while (s.handled == 0) std::this_thread::sleep_for(5ms);
  std::this_thread::sleep_for(50ms);  // the request is being handled when the client half-closes
  shutdown(fd, SHUT_WR);
  std::string got = read_until_close(fd, 6s);
  close(fd);
  CHECK(s.saw_gone == 0);
  // The probe (an interim 100) comes first; the real answer follows.
  CHECK(got.find("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK") == 0);
  CHECK(got.find("POST /wait hi") != std::string::npos);
}

}  // namespace
}  // namespace dsocr::server::http

// ImageFetcher: data: URIs, SSRF address classification, local files, and http(s) fetches from an
// in-process loopback server (shared deadlines, cancellation, IPv6 literals, address pinning).
// Nothing here depends on /etc/hosts or DNS: hosts are numeric or answered by a test resolver.
#include "server/image_fetcher.h"

#include <httplib.h>

#include <array>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <thread>

namespace dsocr::server {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

const std::string kImage = "\x89PNG\r\n\x1a\n-test-image-bytes";

int64_t ms_since(Clock::time_point t) {
  return std::chrono::duration_cast<milliseconds>(Clock::now() - t).count();
}

// A loopback HTTP server on a free port, serving on its own thread.
//   /image              the image at once
//   /drip?ms=N          the image in 10 chunks spread over N ms (headers at once)
//   /stall              a first chunk, then nothing until the server stops
//   /hop?n=K&ms=N       waits N ms, then redirects to /hop?n=K-1; /hop?n=0 is /image
class TestImageServer {
 public:
  explicit TestImageServer(const std::string& host = "127.0.0.1") : host_(host) {
    server_.Get("/image", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(kImage, "image/png");
    });
    server_.Get("/drip", [this](const httplib::Request& req, httplib::Response& res) {
      const int total_ms = std::stoi(req.get_param_value("ms"));
      res.set_chunked_content_provider("image/png", [this, total_ms](size_t,
                                                                     httplib::DataSink& sink) {
        for (int chunk = 0; chunk < 10; ++chunk) {
          if (!pause(milliseconds(total_ms / 10))) return false;
          const size_t begin = kImage.size() * chunk / 10, end = kImage.size() * (chunk + 1) / 10;
          if (!sink.write(kImage.data() + begin, end - begin)) return false;
        }
        sink.done();
        return true;
      });
    });
    server_.Get("/stall", [this](const httplib::Request&, httplib::Response& res) {
      res.set_chunked_content_provider("image/png", [this](size_t, httplib::DataSink& sink) {
        if (!sink.write(kImage.data(), 4)) return false;
        pause(milliseconds(60'000));
        return false;
      });
    });
    server_.Get("/hop", [this](const httplib::Request& req, httplib::Response& res) {
      const int n = std::stoi(req.get_param_value("n"));
      if (n == 0) return res.set_content(kImage, "image/png");
      pause(milliseconds(std::stoi(req.get_param_value("ms"))));
      res.set_redirect("/hop?n=" + std::to_string(n - 1) + "&ms=" + req.get_param_value("ms"));
    });
    port_ = server_.bind_to_any_port(host_);
    if (port_ > 0) thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~TestImageServer() {
    stopping_ = true;
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }

  bool listening() const { return port_ > 0; }
  int port() const { return port_; }
  std::string url(const std::string& path) const {
    const bool v6 = host_.find(':') != std::string::npos;
    return "http://" + (v6 ? "[" + host_ + "]" : host_) + ":" + std::to_string(port_) + path;
  }

 private:
  // Sleeps in small steps so that stopping the server never waits for a slow handler.
  bool pause(milliseconds how_long) {
    const auto end = Clock::now() + how_long;
    while (Clock::now() < end) {
      if (stopping_) return false;
      std::this_thread::sleep_for(milliseconds(5));
    }
    return !stopping_;
  }

  std::string host_;
  httplib::Server server_;
  std::thread thread_;
  int port_ = -1;
  std::atomic<bool> stopping_{false};
};

ImageFetchOptions loopback_options() {
  ImageFetchOptions o;
  o.allow_private_addresses = true;
  return o;
}

// A resolver that knows a few made-up names (.test never resolves for real, RFC 6761).
HostResolver fixed_resolver(std::map<std::string, std::vector<std::string>> names) {
  return [names = std::move(names)](const std::string& host,
                                    const std::string&) -> StatusOr<std::vector<std::string>> {
    auto it = names.find(host);
    if (it == names.end()) return invalid_argument("unknown test host " + host);
    return it->second;
  };
}

// A resolver that takes `delay` to answer 127.0.0.1, like a DNS server that does not reply.
HostResolver slow_resolver(milliseconds delay) {
  return [delay](const std::string&, const std::string&) -> StatusOr<std::vector<std::string>> {
    std::this_thread::sleep_for(delay);
    return std::vector<std::string>{"127.0.0.1"};
  };
}

TEST_CASE("data: URIs", "[images]") {
  CHECK(*decode_data_uri("data:image/png;base64,aGVsbG8=", 100) == "hello");
  CHECK(*decode_data_uri("data:;base64,aGVs\nbG8", 100) == "hello");          // no padding, newline
  CHECK(*decode_data_uri("DATA:image/jpeg;base64,-_8=", 100) == "\xfb\xff");  // URL-safe
  CHECK(decode_data_uri("data:image/png,hello", 100).status().code() ==
        StatusCode::kInvalidArgument);  // not base64
  CHECK(decode_data_uri("data:text/html;base64,aGVsbG8=", 100).status().code() ==
        StatusCode::kInvalidArgument);
  CHECK(decode_data_uri("data:image/png;base64,a$b=", 100).status().code() ==
        StatusCode::kInvalidArgument);
  CHECK(decode_data_uri("data:image/png;base64,aGVsbG8=", 4).status().code() ==
        StatusCode::kPayloadTooLarge);
  // Refused from its length, before decoding.
  std::string huge = "data:image/png;base64," + std::string(4000, 'A');
  CHECK(decode_data_uri(huge, 1000).status().code() == StatusCode::kPayloadTooLarge);
}

TEST_CASE("is_public_address refuses every non-public range", "[images]") {
  for (const char* a : {"127.0.0.1",
                        "127.255.0.9",
                        "10.1.2.3",
                        "172.16.0.1",
                        "172.31.255.255",
                        "192.168.1.1",
                        "169.254.169.254",
                        "100.64.0.1",
                        "0.0.0.0",
                        "224.0.0.1",
                        "255.255.255.255",
                        "::1",
                        "::",
                        "fe80::1",
                        "fc00::1",
                        "fd00:ec2::254",
                        "::ffff:127.0.0.1",
                        "::ffff:169.254.169.254",
                        "64:ff9b::a9fe:a9fe",
                        "2002:7f00:1::",
                        "ff02::1",
                        "192.0.2.1",
                        "2001:db8::1",
                        "not-an-ip"}) {
    INFO(a);
    CHECK_FALSE(is_public_address(a));
  }
  for (const char* a :
       {"8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8"}) {
    INFO(a);
    CHECK(is_public_address(a));
  }
}

// Every IPv6 spelling that carries the IPv4 address a.b.c.d.
std::vector<std::string> ipv6_forms_embedding(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  auto hex16 = [](unsigned hi, unsigned lo) {
    char text[8];
    std::snprintf(text, sizeof(text), "%x", ((hi & 0xFF) << 8) | (lo & 0xFF));
    return std::string(text);
  };
  const std::string dotted = std::to_string(a) + "." + std::to_string(b) + "." + std::to_string(c) +
                             "." + std::to_string(d);
  const std::string high = hex16(a, b), low = hex16(c, d);
  const std::string teredo_client = hex16(~a, ~b) + ":" + hex16(~c, ~d);  // stored inverted
  return {
      "::ffff:" + dotted,                // mapped
      "::ffff:0:" + dotted,              // translated (RFC 2765)
      "::" + dotted,                     // compatible (deprecated)
      "64:ff9b::" + dotted,              // NAT64 well-known /96
      "64:ff9b:1::" + high + ":" + low,  // local-use NAT64, /96 inside
      "64:ff9b:1:" + high + ":" + hex16(0, c) + ":" + hex16(d, 0) + "::",  // local-use, /48
      "2002:" + high + ":" + low + "::1",                                  // 6to4
      "2001:0:" + high + ":" + low + ":0:0:f7f7:f7f7",  // Teredo server (client 8.8.8.8)
      "2001:0:808:808:0:0:" + teredo_client,            // Teredo client (server 8.8.8.8)
  };
}

TEST_CASE("is_public_address judges IPv6 forms by the IPv4 address they embed", "[images]") {
  for (auto [a, b, c, d] : {std::array<uint8_t, 4>{127, 0, 0, 1},
                            {10, 0, 0, 1},
                            {169, 254, 169, 254},
                            {192, 168, 0, 1},
                            {100, 64, 0, 1}}) {
    for (const std::string& form : ipv6_forms_embedding(a, b, c, d)) {
      INFO(form);
      CHECK_FALSE(is_public_address(form));
    }
  }
  // A public IPv4 address stays public in every form that is judged by it; the deprecated
  // compatible form and local-use NAT64 are refused whatever they carry.
  std::vector<std::string> public_forms = ipv6_forms_embedding(8, 8, 8, 8);
  CHECK_FALSE(is_public_address(public_forms[2]));
  CHECK_FALSE(is_public_address(public_forms[4]));
  CHECK_FALSE(is_public_address(public_forms[5]));
  for (size_t i : {0, 1, 3, 6, 7, 8}) {
    INFO(public_forms[i]);
    CHECK(is_public_address(public_forms[i]));
  }
}

TEST_CASE("ImageFetcher: schemes, SSRF refusal, local files", "[images]") {
  ImageFetcher strict({});
  CHECK(strict.fetch("ftp://example.com/a.png").status().code() == StatusCode::kInvalidArgument);
  CHECK(strict.fetch("gopher://x").status().code() == StatusCode::kInvalidArgument);
  auto loopback = strict.fetch("http://127.0.0.1:9/a.png");
  CHECK(loopback.status().code() == StatusCode::kInvalidArgument);
  CHECK(loopback.status().message().find("non-public") != std::string::npos);
  for (const char* url : {"http://[::1]:9/a.png", "http://[::ffff:0:127.0.0.1]:9/a.png",
                          "http://[::ffff:7f00:1]:9/a.png", "http://[64:ff9b::a9fe:a9fe]/a.png",
                          "http://2130706433:9/a.png", "http://0x7f.1:9/a.png"}) {
    INFO(url);
    auto refused = strict.fetch(url);
    CHECK(refused.status().code() == StatusCode::kInvalidArgument);
    CHECK(refused.status().message().find("non-public") != std::string::npos);
  }
  CHECK(strict.fetch("file:///etc/passwd").status().message().find("refused") != std::string::npos);

  // Names: every address a name resolves to must be public, not just the first.
  ImageFetchOptions named;
  named.resolver = fixed_resolver({{"private.test", {"10.0.0.1"}},
                                   {"mixed.test", {"8.8.8.8", "127.0.0.1"}},
                                   {"mixed6.test", {"2606:4700::1111", "::ffff:0:a00:1"}}});
  ImageFetcher strict_named(named);
  for (const char* url :
       {"http://private.test/a.png", "http://mixed.test/a.png", "https://mixed6.test/a.png"}) {
    INFO(url);
    CHECK(strict_named.fetch(url).status().message().find("non-public") != std::string::npos);
  }

  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / "dsocr_fetch_test";
  fs::create_directories(dir / "media");
  std::ofstream(dir / "media" / "a.png") << "PNGDATA";
  std::ofstream(dir / "secret.txt") << "SECRET";
  fs::remove(dir / "media" / "link");
  fs::create_symlink(dir / "secret.txt", dir / "media" / "link");
  ImageFetchOptions o;
  o.allowed_local_media_dir = (dir / "media").string();
  ImageFetcher local(o);
  CHECK(*local.fetch("file://" + (dir / "media" / "a.png").string()) == "PNGDATA");
  CHECK_FALSE(local.fetch("file://" + (dir / "media" / ".." / "secret.txt").string()).ok());
  CHECK_FALSE(local.fetch("file://" + (dir / "media" / "link").string()).ok());  // symlink out
  CHECK_FALSE(local.fetch("file://" + (dir / "media" / "missing.png").string()).ok());
  fs::remove_all(dir);
}

TEST_CASE("ImageFetcher: IPv4 and IPv6 literal URLs are fetched", "[images][http]") {
  ImageFetcher fetcher(loopback_options());
  TestImageServer v4;
  REQUIRE(v4.listening());
  auto got = fetcher.fetch(v4.url("/image"));
  REQUIRE(got.ok());
  CHECK(*got == kImage);

  TestImageServer v6("::1");
  if (!v6.listening()) {
    WARN("no IPv6 loopback on this machine; the IPv6 literal URL is not tested");
    return;
  }
  auto got6 = fetcher.fetch(v6.url("/image"));
  INFO(got6.status());
  REQUIRE(got6.ok());
  CHECK(*got6 == kImage);
  // The guard still applies to IPv6 literals when private addresses are not allowed.
  CHECK(ImageFetcher({}).fetch(v6.url("/image")).status().message().find("non-public") !=
        std::string::npos);
}

TEST_CASE("ImageFetcher: a name is fetched from the address that was checked", "[images][http]") {
  TestImageServer v4;
  REQUIRE(v4.listening());
  TestImageServer v6("::1");
  ImageFetchOptions o = loopback_options();
  o.resolver = fixed_resolver({{"images.test", {"127.0.0.1"}}, {"images6.test", {"::1"}}});
  ImageFetcher fetcher(o);
  // .test names exist only in the test resolver: curl reaching the server at all means it
  // connected to the pinned address instead of looking the name up again.
  auto got = fetcher.fetch("http://images.test:" + std::to_string(v4.port()) + "/image");
  INFO(got.status());
  REQUIRE(got.ok());
  CHECK(*got == kImage);
  if (v6.listening()) {
    auto got6 = fetcher.fetch("http://images6.test:" + std::to_string(v6.port()) + "/image");
    INFO(got6.status());
    REQUIRE(got6.ok());
    CHECK(*got6 == kImage);
  }
}

TEST_CASE("ImageFetcher: one deadline covers all of a request's images", "[images][http]") {
  TestImageServer server;
  REQUIRE(server.listening());
  ImageFetcher fetcher(loopback_options());  // 30 s per fetch: only the shared deadline binds
  const auto start = Clock::now();
  FetchControl control{.deadline = start + milliseconds(3000)};
  // Each image takes 1 s: the first two fit, the third would end at 3 s + and must be cut off.
  std::vector<StatusOr<std::string>> results;
  for (int i = 0; i < 3; ++i)
    results.push_back(fetcher.fetch(server.url("/drip?ms=1000"), control));
  const int64_t elapsed = ms_since(start);
  REQUIRE(results[0].ok());
  REQUIRE(results[1].ok());
  CHECK(*results[1] == kImage);
  INFO(results[2].status());
  CHECK(results[2].status().code() == StatusCode::kDeadlineExceeded);
  CHECK(elapsed >= 2900);
  CHECK(elapsed < 3500);
  // Past the deadline, a fetch fails at once. (curl's own timer may end the third fetch a
  // moment before the deadline; a fetch started then still had time, and got the image.)
  std::this_thread::sleep_until(control.deadline + milliseconds(1));
  const auto late = Clock::now();
  CHECK(fetcher.fetch(server.url("/image"), control).status().code() ==
        StatusCode::kDeadlineExceeded);
  CHECK(ms_since(late) < 100);
}

TEST_CASE("ImageFetcher: redirect hops share one time limit", "[images][http]") {
  TestImageServer server;
  REQUIRE(server.listening());
  ImageFetchOptions o = loopback_options();
  o.total_timeout_ms = 700;  // each hop takes 400 ms: alone each fits, together they do not
  ImageFetcher fetcher(o);
  auto start = Clock::now();
  auto one_hop = fetcher.fetch(server.url("/hop?n=1&ms=400"));
  INFO(one_hop.status());
  CHECK(one_hop.ok());
  start = Clock::now();
  auto two_hops = fetcher.fetch(server.url("/hop?n=2&ms=400"));
  const int64_t elapsed = ms_since(start);
  CHECK(two_hops.status().code() == StatusCode::kDeadlineExceeded);
  CHECK(elapsed >= 650);
  CHECK(elapsed < 1000);
}

TEST_CASE("ImageFetcher: cancellation stops a download within 200 ms", "[images][http]") {
  TestImageServer server;
  REQUIRE(server.listening());
  ImageFetcher fetcher(loopback_options());
  // A server that trickles bytes and one that stalls after the headers: curl is busy in one case
  // and idle in the other; both must notice the cancellation.
  for (const char* path : {"/drip?ms=10000", "/stall"}) {
    INFO(path);
    const auto start = Clock::now();
    const auto cancel_at = start + milliseconds(500);
    std::atomic<int> polls{0};
    FetchControl control{.cancelled = [&] {
      ++polls;
      return Clock::now() >= cancel_at;
    }};
    auto result = fetcher.fetch(server.url(path), control);
    const auto returned = Clock::now();
    CHECK(result.status().code() == StatusCode::kCancelled);
    const int64_t late_ms = std::chrono::duration_cast<milliseconds>(returned - cancel_at).count();
    CHECK(late_ms >= 0);
    CHECK(late_ms < 200);
    // Polled every ~50 ms, not in a busy loop.
    CHECK(polls.load() <= ms_since(start) / 50 + 2);
  }
}

TEST_CASE("ImageFetcher: a slow host lookup ends at the deadline or on cancellation",
          "[images][http]") {
  ImageFetchOptions o = loopback_options();
  o.resolver = slow_resolver(milliseconds(3000));
  ImageFetcher fetcher(o);

  auto start = Clock::now();
  auto timed_out =
      fetcher.fetch("http://slow.test/a.png", FetchControl{.deadline = start + milliseconds(300)});
  CHECK(timed_out.status().code() == StatusCode::kDeadlineExceeded);
  CHECK(ms_since(start) < 500);

  start = Clock::now();
  const auto cancel_at = start + milliseconds(300);
  auto cancelled =
      fetcher.fetch("http://slow.test/a.png",
                    FetchControl{.cancelled = [&] { return Clock::now() >= cancel_at; }});
  CHECK(cancelled.status().code() == StatusCode::kCancelled);
  CHECK(ms_since(start) < 500);

  // The one-argument fetch is bounded by total_timeout_ms, DNS included.
  o.total_timeout_ms = 300;
  start = Clock::now();
  CHECK(ImageFetcher(o).fetch("http://slow.test/a.png").status().code() ==
        StatusCode::kDeadlineExceeded);
  CHECK(ms_since(start) < 500);
}

TEST_CASE("ImageFetcher: abandoned host lookups are bounded", "[images][http]") {
  // Lookups that never answer until released: each fetch gives up at once and leaves its lookup
  // thread behind, until the fetcher refuses to start more.
  auto release = std::make_shared<std::promise<void>>();
  std::shared_future<void> released = release->get_future().share();
  ImageFetchOptions o = loopback_options();
  o.resolver = [released](const std::string&,
                          const std::string&) -> StatusOr<std::vector<std::string>> {
    released.wait();
    return invalid_argument("released");
  };
  ImageFetcher fetcher(o);
  int started = 0;
  bool refused = false;
  for (; started <= 100 && !refused; ++started) {
    auto r = fetcher.fetch("http://hung.test/a.png",
                           FetchControl{.deadline = Clock::now() + milliseconds(5)});
    refused = r.status().code() == StatusCode::kResourceExhausted;
    if (!refused) CHECK(r.status().code() == StatusCode::kDeadlineExceeded);
  }
  CHECK(refused);
  CHECK(started <= 65);
  release->set_value();
  // The threads end once their lookups return, and lookups work again.
  const auto start = Clock::now();
  StatusCode code = StatusCode::kResourceExhausted;
  while (code == StatusCode::kResourceExhausted && ms_since(start) < 5000) {
    code = fetcher.fetch("http://hung.test/a.png").status().code();
    if (code == StatusCode::kResourceExhausted) std::this_thread::sleep_for(milliseconds(10));
  }
  CHECK(code == StatusCode::kInvalidArgument);  // the resolver's answer came through
}

}  // namespace
}  // namespace dsocr::server

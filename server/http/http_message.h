// HttpRequest and HttpResponse: the values dsocr's HTTP/1.1 transport hands to route handlers and
// takes back from them (server/http/http_listener.h).
//
// Header names are kept as received; lookups are case-insensitive (RFC 9110 §5.1). The body of a
// request is its decoded content: chunked framing removed and gzip/deflate content coding undone,
// within the server's body limit.
//
// Thread-safety: plain values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dsocr::server::http {

using Headers = std::vector<std::pair<std::string, std::string>>;

// ASCII case-insensitive equality (header names, tokens such as "chunked").
bool iequals(std::string_view a, std::string_view b);

// The first header named `name`, or nullopt.
std::optional<std::string_view> find_header(const Headers& headers, std::string_view name);

// Whether a comma-separated header value (Connection, Transfer-Encoding) lists `token`.
bool header_lists_token(std::string_view value, std::string_view token);

struct HttpRequest {
  std::string method;     // "GET", "POST", ... as sent (methods are case-sensitive)
  std::string target;     // the request-target as sent: "/v1/models?x=1"
  std::string path;       // the target without its query
  std::string query;      // after '?', undecoded
  int minor_version = 1;  // HTTP/1.minor
  Headers headers;
  std::string body;
  std::string remote_addr;  // numeric peer address
  int remote_port = 0;

  std::string header(std::string_view name) const {
    auto v = find_header(headers, name);
    return v ? std::string(*v) : std::string();
  }
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  Headers headers;  // beyond Content-Type, Content-Length and Connection, which are set for you
  std::string body;

  void set_header(std::string name, std::string value);
};

// The reason phrase of a status code ("Not Found").
std::string_view status_reason(int status);

}  // namespace dsocr::server::http

// SseWriter: the server's one writer of server-sent events, on a chunked HTTP response.
//
//   data: <json>\n\n        one event per chat.completion.chunk (or error object)
//   : keep-alive\n\n        a comment while nothing happens (also the transport's liveness probe)
//   data: [DONE]\n\n        the end, as OpenAI's streams end
//
// Every method returns false once the client is gone (a failed write); the caller stops there.
//
// Thread-safety: one writer per response, used from the thread answering the request.
#pragma once

#include <string_view>

#include <nlohmann/json_fwd.hpp>

#include "server/http/http_listener.h"

namespace dsocr::server {

class SseWriter {
 public:
  static constexpr std::string_view kKeepAlive = ": keep-alive\n\n";

  explicit SseWriter(http::Exchange& exchange) : exchange_(exchange) {}

  // Sends the 200 head (text/event-stream, no caching or proxy buffering) plus `headers`.
  bool start(const http::Headers& headers);
  bool event(const nlohmann::json& data);
  bool keep_alive();
  bool done();
  // Ends the chunked body.
  bool end();

 private:
  http::Exchange& exchange_;
};

}  // namespace dsocr::server

#include "server/sse_writer.h"

#include <nlohmann/json.hpp>

namespace dsocr::server {

bool SseWriter::start(const http::Headers& headers) {
  http::Headers h = headers;
  h.emplace_back("Cache-Control", "no-cache");
  h.emplace_back("X-Accel-Buffering", "no");  // proxies must not hold events back
  exchange_.set_stream_probe(std::string(kKeepAlive));
  return exchange_.begin_stream(200, "text/event-stream", h);
}

bool SseWriter::event(const nlohmann::json& data) {
  return exchange_.write(
      "data: " + data.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n\n");
}

bool SseWriter::keep_alive() { return exchange_.write(kKeepAlive); }

bool SseWriter::done() { return exchange_.write("data: [DONE]\n\n"); }

bool SseWriter::end() { return exchange_.end_stream(); }

}  // namespace dsocr::server

// ConnectionProbe: "has the client hung up?" for a request being handled by cpp-httplib.
//
// cpp-httplib 0.11 (Debian 12) gives a handler no way to learn that its client disconnected
// while the handler is still working (later versions added Request::is_connection_closed). A
// non-streaming OCR request can generate for minutes, and its KV cache must be freed when the
// client goes away, so the probe finds the request's own socket: the one whose local and peer
// addresses equal the request's (unique among open sockets, and the socket stays open until the
// handler returns, so the descriptor cannot be reused meanwhile). peer_closed() then asks the
// kernel whether the peer has shut down, without consuming any data.
//
// Thread-safety: a value owned by one handler.
#pragma once

#include <optional>
#include <string>

namespace dsocr::server {

class ConnectionProbe {
 public:
  // nullopt when no open socket matches (then disconnects are noticed only on write).
  static std::optional<ConnectionProbe> find(const std::string& local_addr, int local_port,
                                             const std::string& remote_addr, int remote_port);
  // True once the client closed or reset the connection.
  bool peer_closed() const;
  int fd() const { return fd_; }

 private:
  explicit ConnectionProbe(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace dsocr::server

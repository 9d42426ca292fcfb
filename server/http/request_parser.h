// HTTP/1.1 request parsing (RFC 9112), strict where leniency lets requests be smuggled past a
// proxy or memory be exhausted, and bounded everywhere:
//
//   parse_request_head()  request line + header fields -> RequestHead, or a ProtocolError with the
//                         status to answer (400, 414, 431, 501, 505, 417, 415, 413).
//   BodyReader            the body by Content-Length or chunked framing, never more than the
//                         limit of decoded bytes, whatever the framing.
//   decode_content()      gzip / deflate content coding, inflated under the same limit.
//
// Rules that matter for safety: two Content-Length fields that differ, a negative or non-numeric
// Content-Length, Content-Length together with Transfer-Encoding, a transfer coding other than
// "chunked", whitespace before a field's colon and obsolete line folding are all errors, and the
// connection is closed after answering them (the transport does that for every ProtocolError).
// A single LF is accepted as a line end (RFC 9112 §2.2 allows it); empty lines before the
// request line are skipped.
//
// Thread-safety: free functions over values; a BodyReader is owned by one connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "server/http/http_message.h"

namespace dsocr::server::http {

struct ParserLimits {
  size_t max_request_line = 8 * 1024;   // 414 above
  size_t max_head_bytes = 64 * 1024;    // request line + fields; 431 above
  size_t max_headers = 100;             // 431 above
  int64_t max_body_bytes = 64ll << 20;  // decoded body; 413 above
};

// A request the transport answers itself with `status`, then closes the connection.
struct ProtocolError {
  int status = 400;
  std::string message;
};

enum class BodyFraming { kNone, kContentLength, kChunked };
enum class ContentCoding { kIdentity, kGzip, kDeflate };

struct RequestHead {
  HttpRequest request;  // everything but the body
  BodyFraming framing = BodyFraming::kNone;
  int64_t content_length = 0;  // with kContentLength
  ContentCoding coding = ContentCoding::kIdentity;
  bool keep_alive = true;        // HTTP/1.1 without "Connection: close", or 1.0 with keep-alive
  bool expect_continue = false;  // "Expect: 100-continue"
};

struct HeadParseResult {
  enum Kind { kIncomplete, kComplete, kError } kind = kIncomplete;
  size_t consumed = 0;  // bytes of the buffer the head took (kComplete)
  RequestHead head;     // kComplete
  ProtocolError error;  // kError
};

// Parses the request head at the front of `buffer` (which may hold more: a body, pipelined
// requests). kIncomplete means no error yet but the head has not ended: read more.
HeadParseResult parse_request_head(std::string_view buffer, const ParserLimits& limits);

// Reads one request body from a byte stream, fed in arbitrary pieces.
// Invariant: body().size() <= max_body_bytes at every moment.
class BodyReader {
 public:
  BodyReader(BodyFraming framing, int64_t content_length, int64_t max_body_bytes);

  // Takes what belongs to this body from the front of `data` and returns how many bytes it took;
  // the rest (a pipelined request) is left to the caller. Stops taking input once done() or
  // after an error.
  size_t feed(std::string_view data);
  bool done() const { return state_ == State::kDone; }
  const std::optional<ProtocolError>& error() const { return error_; }
  // Decoded body bytes so far (the whole body once done()).
  const std::string& body() const { return body_; }
  std::string take_body() { return std::move(body_); }

 private:
  enum class State { kData, kChunkSize, kChunkData, kChunkDataEnd, kTrailers, kDone, kError };
  size_t fail(int status, std::string message);
  // Reads one line (up to LF) into line_; true when complete.
  bool take_line(std::string_view data, size_t* pos, size_t max_line);

  State state_;
  int64_t remaining_ = 0;  // bytes left of the Content-Length body or of the current chunk
  int64_t max_body_bytes_;
  std::string body_;
  std::string line_;
  size_t trailer_bytes_ = 0;
  std::optional<ProtocolError> error_;
};

// Undoes a gzip or deflate (zlib, or raw deflate as some clients send) content coding in place.
// 413 when the inflated body would exceed max_body_bytes (checked while inflating: a bomb never
// takes more than the limit), 400 when the data is corrupt or truncated.
std::optional<ProtocolError> decode_content(ContentCoding coding, std::string* body,
                                            int64_t max_body_bytes);

}  // namespace dsocr::server::http

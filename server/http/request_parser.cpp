#include "server/http/request_parser.h"

#include <zlib.h>

#include <algorithm>
#include <array>

namespace dsocr::server::http {
namespace {

constexpr size_t kMaxChunkLine = 4096;      // chunk size + extensions
constexpr size_t kMaxTrailerBytes = 16384;  // all trailer fields together

// tchar of RFC 9110 §5.6.2.
bool is_tchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~':
      return true;
    default:
      return false;
  }
}

bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), is_tchar);
}

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Field values may hold visible characters, spaces, tabs and obs-text, never CR, LF or NUL.
bool is_valid_field_value(std::string_view v) {
  return std::none_of(v.begin(), v.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return (u < 0x20 && c != '\t') || u == 0x7f;
  });
}

// A line of the head, without its line end; false when no LF is in `buffer` from `pos`.
bool next_line(std::string_view buffer, size_t* pos, std::string_view* line) {
  const size_t lf = buffer.find('\n', *pos);
  if (lf == std::string_view::npos) return false;
  size_t end = lf;
  if (end > *pos && buffer[end - 1] == '\r') --end;
  *line = buffer.substr(*pos, end - *pos);
  *pos = lf + 1;
  return true;
}

HeadParseResult error(int status, std::string message) {
  HeadParseResult r;
  r.kind = HeadParseResult::kError;
  r.error = {status, std::move(message)};
  return r;
}

// Content-Length: one or more fields, each possibly a list ("5, 5"); every value must be the same
// non-negative decimal number. Returns nullopt with *err set on any disagreement.
std::optional<int64_t> content_length_of(const Headers& headers, const ParserLimits& limits,
                                         std::optional<ProtocolError>* err) {
  std::optional<int64_t> length;
  for (const auto& [name, value] : headers) {
    if (!iequals(name, "Content-Length")) continue;
    std::string_view rest = value;
    while (true) {
      const size_t comma = rest.find(',');
      std::string_view item = trim_ows(rest.substr(0, comma));
      if (item.empty() ||
          !std::all_of(item.begin(), item.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        *err = ProtocolError{400, "Content-Length must be a non-negative decimal number"};
        return std::nullopt;
      }
      int64_t v = 0;
      for (char c : item) {
        if (v > (INT64_MAX - 9) / 10) {
          *err = ProtocolError{413, "request body larger than the server's limit of " +
                                        std::to_string(limits.max_body_bytes) + " bytes"};
          return std::nullopt;
        }
        v = v * 10 + (c - '0');
      }
      if (length && *length != v) {
        *err = ProtocolError{400, "conflicting Content-Length values"};
        return std::nullopt;
      }
      length = v;
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  return length;
}

}  // namespace

HeadParseResult parse_request_head(std::string_view buffer, const ParserLimits& limits) {
  size_t pos = 0;
  // Empty lines before the request line are tolerated (RFC 9112 §2.2), a bounded number of them.
  while (pos < buffer.size() && pos < 64 && (buffer[pos] == '\r' || buffer[pos] == '\n')) ++pos;
  const size_t head_start = pos;
  std::string_view line;
  if (!next_line(buffer, &pos, &line)) {
    if (buffer.size() - head_start > limits.max_request_line)
      return error(
          414, "request line longer than " + std::to_string(limits.max_request_line) + " bytes");
    return {};
  }
  if (line.size() > limits.max_request_line)
    return error(414,
                 "request line longer than " + std::to_string(limits.max_request_line) + " bytes");

  HeadParseResult result;
  HttpRequest& req = result.head.request;
  // request-line = method SP request-target SP HTTP-version
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos)
    return error(400, "malformed request line");
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (!is_token(method)) return error(400, "malformed request method");
  if (target.empty() || std::any_of(target.begin(), target.end(), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return u <= 0x20 || u == 0x7f;
      })) {
    return error(400, "malformed request target");
  }
  if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[6] != '.' ||
      version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9') {
    return error(400, "malformed HTTP version");
  }
  if (version[5] != '1') return error(505, "only HTTP/1.0 and HTTP/1.1 are supported");
  req.method = std::string(method);
  req.target = std::string(target);
  req.minor_version = version[7] - '0';
  const size_t q = target.find('?');
  req.path = std::string(target.substr(0, q));
  if (q != std::string_view::npos) req.query = std::string(target.substr(q + 1));

  // Header fields, up to the empty line.
  while (true) {
    if (!next_line(buffer, &pos, &line)) {
      if (buffer.size() - head_start > limits.max_head_bytes)
        return error(431, "request header fields larger than " +
                              std::to_string(limits.max_head_bytes) + " bytes");
      return {};
    }
    if (pos - head_start > limits.max_head_bytes)
      return error(431, "request header fields larger than " +
                            std::to_string(limits.max_head_bytes) + " bytes");
    if (line.empty()) break;
    if (line.front() == ' ' || line.front() == '\t')
      return error(400, "obsolete line folding in header fields");
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) return error(400, "malformed header field");
    const std::string_view name = line.substr(0, colon);
    if (!is_token(name)) return error(400, "malformed header field name");
    const std::string_view value = trim_ows(line.substr(colon + 1));
    if (!is_valid_field_value(value)) return error(400, "invalid character in a header value");
    if (req.headers.size() >= limits.max_headers)
      return error(431, "more than " + std::to_string(limits.max_headers) + " header fields");
    req.headers.emplace_back(std::string(name), std::string(value));
  }
  result.consumed = pos;

  RequestHead& head = result.head;
  // Connection persistence (RFC 9112 §9.3).
  bool close = false, keep_alive = false;
  for (const auto& [name, value] : req.headers) {
    if (!iequals(name, "Connection")) continue;
    close = close || header_lists_token(value, "close");
    keep_alive = keep_alive || header_lists_token(value, "keep-alive");
  }
  head.keep_alive = !close && (req.minor_version >= 1 || keep_alive);

  // Body framing (RFC 9112 §6).
  std::optional<ProtocolError> err;
  const std::optional<int64_t> length = content_length_of(req.headers, limits, &err);
  if (err) return error(err->status, err->message);
  bool has_te = false;
  std::string_view te_value;
  for (const auto& [name, value] : req.headers) {
    if (!iequals(name, "Transfer-Encoding")) continue;
    if (has_te) return error(400, "more than one Transfer-Encoding field");
    has_te = true;
    te_value = value;
  }
  if (has_te) {
    if (length) return error(400, "both Content-Length and Transfer-Encoding are present");
    if (req.minor_version == 0) return error(400, "Transfer-Encoding in an HTTP/1.0 request");
    if (!iequals(trim_ows(te_value), "chunked"))
      return error(501,
                   "unsupported Transfer-Encoding '" + std::string(te_value) + "' (only chunked)");
    head.framing = BodyFraming::kChunked;
  } else if (length) {
    if (*length > limits.max_body_bytes)
      return error(413, "request body larger than the server's limit of " +
                            std::to_string(limits.max_body_bytes) + " bytes");
    head.framing = *length > 0 ? BodyFraming::kContentLength : BodyFraming::kNone;
    head.content_length = *length;
  }

  if (auto coding = find_header(req.headers, "Content-Encoding")) {
    const std::string_view c = trim_ows(*coding);
    if (c.empty() || iequals(c, "identity")) {
      head.coding = ContentCoding::kIdentity;
    } else if (iequals(c, "gzip") || iequals(c, "x-gzip")) {
      head.coding = ContentCoding::kGzip;
    } else if (iequals(c, "deflate")) {
      head.coding = ContentCoding::kDeflate;
    } else {
      return error(
          415, "unsupported Content-Encoding '" + std::string(c) + "' (identity, gzip or deflate)");
    }
  }
  if (auto expect = find_header(req.headers, "Expect")) {
    if (!iequals(trim_ows(*expect), "100-continue"))
      return error(417, "unsupported Expect '" + std::string(*expect) + "'");
    head.expect_continue = req.minor_version >= 1;
  }
  result.kind = HeadParseResult::kComplete;
  return result;
}

BodyReader::BodyReader(BodyFraming framing, int64_t content_length, int64_t max_body_bytes)
    : max_body_bytes_(max_body_bytes) {
  switch (framing) {
    case BodyFraming::kNone:
      state_ = State::kDone;
      break;
    case BodyFraming::kContentLength:
      state_ = content_length > 0 ? State::kData : State::kDone;
      remaining_ = content_length;
      body_.reserve(static_cast<size_t>(std::min<int64_t>(content_length, 1 << 20)));
      break;
    case BodyFraming::kChunked:
      state_ = State::kChunkSize;
      break;
  }
}

size_t BodyReader::fail(int status, std::string message) {
  state_ = State::kError;
  error_ = ProtocolError{status, std::move(message)};
  return 0;
}

bool BodyReader::take_line(std::string_view data, size_t* pos, size_t max_line) {
  const size_t lf = data.find('\n', *pos);
  const size_t end = lf == std::string_view::npos ? data.size() : lf;
  line_.append(data.substr(*pos, end - *pos));
  *pos = lf == std::string_view::npos ? data.size() : lf + 1;
  if (line_.size() > max_line) {
    fail(400, "chunk line too long");
    return false;
  }
  if (lf == std::string_view::npos) return false;
  if (!line_.empty() && line_.back() == '\r') line_.pop_back();
  return true;
}

size_t BodyReader::feed(std::string_view data) {
  size_t pos = 0;
  while (pos < data.size() && state_ != State::kDone && state_ != State::kError) {
    switch (state_) {
      case State::kData:
      case State::kChunkData: {
        const size_t n = static_cast<size_t>(
            std::min<int64_t>(remaining_, static_cast<int64_t>(data.size() - pos)));
        body_.append(data.substr(pos, n));
        pos += n;
        remaining_ -= static_cast<int64_t>(n);
        if (remaining_ == 0) state_ = state_ == State::kData ? State::kDone : State::kChunkDataEnd;
        break;
      }
      case State::kChunkSize: {
        if (!take_line(data, &pos, kMaxChunkLine)) break;
        // chunk-size [ chunk-ext ]: hex digits, then optionally ";ext" which we ignore.
        std::string_view size_text = line_;
        size_text = size_text.substr(0, size_text.find(';'));
        size_text = trim_ows(size_text);
        if (size_text.empty() || size_text.size() > 15)
          return pos + fail(400, "malformed chunk size");
        int64_t size = 0;
        for (char c : size_text) {
          int digit;
          if (c >= '0' && c <= '9')
            digit = c - '0';
          else if (c >= 'a' && c <= 'f')
            digit = c - 'a' + 10;
          else if (c >= 'A' && c <= 'F')
            digit = c - 'A' + 10;
          else
            return pos + fail(400, "malformed chunk size");
          size = size * 16 + digit;
        }
        line_.clear();
        if (size == 0) {
          state_ = State::kTrailers;
          break;
        }
        if (size > max_body_bytes_ - static_cast<int64_t>(body_.size()))
          return pos + fail(413, "request body larger than the server's limit of " +
                                     std::to_string(max_body_bytes_) + " bytes");
        remaining_ = size;
        state_ = State::kChunkData;
        break;
      }
      case State::kChunkDataEnd: {
        if (!take_line(data, &pos, 2)) break;
        if (!line_.empty()) return pos + fail(400, "chunk data longer than its size");
        state_ = State::kChunkSize;
        break;
      }
      case State::kTrailers: {
        const size_t before = pos;
        const bool complete = take_line(data, &pos, kMaxTrailerBytes);
        trailer_bytes_ += pos - before;
        if (trailer_bytes_ > kMaxTrailerBytes) return pos + fail(431, "chunked trailer too large");
        if (!complete) break;
        if (line_.empty()) state_ = State::kDone;  // trailer fields are read and dropped
        line_.clear();
        break;
      }
      case State::kDone:
      case State::kError:
        break;
    }
  }
  return pos;
}

std::optional<ProtocolError> decode_content(ContentCoding coding, std::string* body,
                                            int64_t max_body_bytes) {
  if (coding == ContentCoding::kIdentity) return std::nullopt;
  // windowBits: 16+15 gzip only; 15 zlib; -15 raw deflate ("deflate" is zlib by the RFC, but
  // some clients send raw deflate: retried as raw when the zlib header is absent).
  const bool zlib_header = body->size() >= 2 && ((static_cast<unsigned char>((*body)[0]) << 8) |
                                                 static_cast<unsigned char>((*body)[1])) %
                                                        31 ==
                                                    0;
  const int window_bits = coding == ContentCoding::kGzip ? 16 + 15 : zlib_header ? 15 : -15;
  z_stream zs{};
  if (inflateInit2(&zs, window_bits) != Z_OK)
    return ProtocolError{500, "cannot initialise the decompressor"};
  std::string out;
  std::array<char, 64 * 1024> chunk;
  zs.next_in = reinterpret_cast<Bytef*>(body->data());
  zs.avail_in = static_cast<uInt>(body->size());
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    zs.next_out = reinterpret_cast<Bytef*>(chunk.data());
    zs.avail_out = static_cast<uInt>(chunk.size());
    rc = inflate(&zs, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      inflateEnd(&zs);
      return ProtocolError{
          400, "the request body is not valid " +
                   std::string(coding == ContentCoding::kGzip ? "gzip" : "deflate") + " data"};
    }
    const size_t produced = chunk.size() - zs.avail_out;
    if (static_cast<int64_t>(out.size() + produced) > max_body_bytes) {
      inflateEnd(&zs);
      return ProtocolError{413, "decompressed request body larger than the server's limit of " +
                                    std::to_string(max_body_bytes) + " bytes"};
    }
    out.append(chunk.data(), produced);
    if (rc == Z_OK && zs.avail_in == 0 && produced == 0) {
      inflateEnd(&zs);
      return ProtocolError{400, "the compressed request body is truncated"};
    }
  }
  inflateEnd(&zs);
  *body = std::move(out);
  return std::nullopt;
}

}  // namespace dsocr::server::http

// libFuzzer target: the HTTP/1.1 request parser on arbitrary bytes, as the event thread feeds it
// (head, then the body in pieces, then the content decoding), with small limits so that the
// limit paths are reached often. Properties checked beyond "no crash, no leak": the body never
// exceeds its limit, and a parse never consumes more than it was given.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "server/http/request_parser.h"

using namespace dsocr::server::http;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  ParserLimits limits;
  limits.max_request_line = 256;
  limits.max_head_bytes = 2048;
  limits.max_headers = 16;
  limits.max_body_bytes = 4096;
  while (!input.empty()) {
    HeadParseResult head = parse_request_head(input, limits);
    if (head.kind != HeadParseResult::kComplete) return 0;
    if (head.consumed == 0 || head.consumed > input.size()) std::abort();
    input.remove_prefix(head.consumed);
    BodyReader body(head.head.framing, head.head.content_length, limits.max_body_bytes);
    // Feed in uneven pieces, as reads arrive.
    size_t piece = 1;
    while (!input.empty() && !body.done() && !body.error()) {
      const size_t n = std::min(piece, input.size());
      const size_t used = body.feed(input.substr(0, n));
      if (used > n) std::abort();
      if (body.body().size() > static_cast<size_t>(limits.max_body_bytes)) std::abort();
      input.remove_prefix(used);
      if (used < n) break;  // the rest belongs to the next request
      piece = piece * 3 + 1;
    }
    if (!body.done()) return 0;
    std::string content = body.take_body();
    if (!decode_content(head.head.coding, &content, limits.max_body_bytes) &&
        content.size() > static_cast<size_t>(limits.max_body_bytes)) {
      std::abort();
    }
  }
  return 0;
}

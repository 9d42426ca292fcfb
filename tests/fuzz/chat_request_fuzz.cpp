// libFuzzer target: the chat request parser and the data: URI decoder on arbitrary bytes. The
// first byte picks the operation:
//   even: the rest parsed as JSON (non-throwing); an object goes through parse_chat_request, an
//         accepted request through prompt_text(), and every data: image URL through
//         decode_data_uri. Errors must be Statuses with a message, never exceptions or crashes.
//   odd:  the rest given to decode_data_uri and is_public_address directly.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "server/chat_request.h"
#include "server/image_fetcher.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t op = data[0];
  std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  if (op & 1) {
    auto decoded = dsocr::server::decode_data_uri(rest, 1 << 16);
    if (decoded.ok() && decoded->size() > (1 << 16)) __builtin_trap();
    (void)dsocr::server::is_public_address(rest);
    return 0;
  }
  nlohmann::json body = nlohmann::json::parse(rest, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded() || !body.is_object()) return 0;
  dsocr::server::ChatLimits limits;
  dsocr::server::ChatRequest request;
  dsocr::server::ApiError error = dsocr::server::parse_chat_request(body, limits, &request);
  if (!error.ok()) {
    if (error.status.message().empty()) __builtin_trap();
    return 0;
  }
  if (static_cast<int64_t>(request.images.size()) > limits.max_images) __builtin_trap();
  (void)request.prompt_text();
  for (const auto& image : request.images) {
    if (image.url.rfind("data:", 0) == 0) (void)dsocr::server::decode_data_uri(image.url, 1 << 16);
  }
  return 0;
}

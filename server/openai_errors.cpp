#include "server/openai_errors.h"

#include <nlohmann/json.hpp>

namespace dsocr::server {

std::string_view openai_error_type(StatusCode code) {
  switch (code) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kFailedPrecondition:
    case StatusCode::kOutOfRange:
    case StatusCode::kPayloadTooLarge:
      return "invalid_request_error";
    case StatusCode::kUnauthenticated:
      return "authentication_error";
    case StatusCode::kPermissionDenied:
      return "permission_error";
    case StatusCode::kNotFound:
      return "not_found_error";
    case StatusCode::kResourceExhausted:
      return "rate_limit_error";
    case StatusCode::kUnimplemented:
      return "not_implemented_error";
    case StatusCode::kUnavailable:
      return "service_unavailable_error";
    case StatusCode::kDeadlineExceeded:
      return "timeout_error";
    default:
      return "server_error";
  }
}

std::string openai_error_body(const Status& status, std::string_view param, std::string_view code) {
  nlohmann::json error = {
      {"message", status.message()},
      {"type", openai_error_type(status.code())},
      {"param", param.empty() ? nlohmann::json(nullptr) : nlohmann::json(param)},
      {"code", code.empty() ? nlohmann::json(nullptr) : nlohmann::json(code)},
  };
  return nlohmann::json{{"error", error}}.dump(-1, ' ', false,
                                               nlohmann::json::error_handler_t::replace);
}

}  // namespace dsocr::server

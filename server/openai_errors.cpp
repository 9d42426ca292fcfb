#include "server/openai_errors.h"

#include <nlohmann/json.hpp>

#include "engine/engine.h"

namespace dsocr::server {

ApiError engine_failure_error(engine::FailureReason reason, const Status& error,
                              std::string_view request_id) {
  using engine::FailureReason;
  switch (reason) {
    case FailureReason::kInvalidInput:
      return {error, "messages", {}};
    case FailureReason::kContextLengthExceeded:
      return {invalid_argument(error.message()), "messages",
              std::string(engine::kContextLengthExceeded)};
    case FailureReason::kShuttingDown:
      return {unavailable("the server is shutting down; retry"), {}, {}};
    case FailureReason::kStepFailed:
      return {internal_error("the engine failed while running request " + std::string(request_id) +
                             "; the server keeps serving, retry it"),
              {},
              {}};
    case FailureReason::kExceedsKvCache:
    case FailureReason::kNone:
      break;
  }
  return {error, {}, {}};
}

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

StatusCode status_code_for_http(int http_status) {
  switch (http_status) {
    case 401:
      return StatusCode::kUnauthenticated;
    case 403:
      return StatusCode::kPermissionDenied;
    case 404:
      return StatusCode::kNotFound;
    case 413:
      return StatusCode::kPayloadTooLarge;
    case 429:
      return StatusCode::kResourceExhausted;
    case 499:
      return StatusCode::kCancelled;
    case 501:
    case 505:
      return StatusCode::kUnimplemented;
    case 503:
      return StatusCode::kUnavailable;
    case 504:
      return StatusCode::kDeadlineExceeded;
    default:
      return http_status < 500 ? StatusCode::kInvalidArgument : StatusCode::kInternal;
  }
}

http::HttpResponse error_response(const ApiError& error) {
  http::HttpResponse r;
  r.status = error.status.http_status();
  if (r.status == 429 || r.status == 503) r.set_header("Retry-After", "1");
  r.body = openai_error_body(error.status, error.param, error.code);
  return r;
}

http::HttpResponse error_response(const Status& status, std::string_view param,
                                  std::string_view code) {
  return error_response(ApiError{status, std::string(param), std::string(code)});
}

http::HttpResponse error_response(int http_status, std::string_view message) {
  http::HttpResponse r = error_response(
      ApiError{Status(status_code_for_http(http_status), std::string(message)), {}, {}});
  r.status = http_status;
  return r;
}

}  // namespace dsocr::server

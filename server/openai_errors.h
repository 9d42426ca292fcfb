// Errors, in one place: ApiError (what went wrong, for which field, with which OpenAI code), how a
// request the engine failed becomes one (from the engine's typed FailureReason, never from message
// text), and the OpenAI-shaped bodies and responses for it:
// {"error": {"message", "type", "param", "code"}}, the only error shape dsocr-server sends, so the
// OpenAI SDKs raise their usual exception classes.
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"
#include "engine/request_stream.h"
#include "server/http/http_message.h"

namespace dsocr::server {

// A client error: the status (its code gives the HTTP status), the request field at fault, and
// OpenAI's machine-readable code where one exists ("context_length_exceeded", "model_not_found").
struct ApiError {
  Status status;
  std::string param;
  std::string code;
  bool ok() const { return status.ok(); }
};

// The error for a request the engine ended with `error` for `reason` (StreamEvent::failure):
//   kInvalidInput           the engine's status (400 for an image that does not decode, a prompt
//                           with more <image> markers than images), param "messages"
//   kContextLengthExceeded  400, param "messages", code "context_length_exceeded"
//   kShuttingDown           503 "the server is shutting down; retry" (Retry-After)
//   kStepFailed             500 server_error naming `request_id`; the engine's message (the
//                           exception's text) is for the log, not the client
//   kExceedsKvCache, kNone  the engine's status as it is
ApiError engine_failure_error(engine::FailureReason reason, const Status& error,
                              std::string_view request_id);

// "invalid_request_error", "authentication_error", "not_found_error", "rate_limit_error",
// "server_error", ... chosen from the Status code.
std::string_view openai_error_type(StatusCode code);

// The JSON body for `status` (which must not be OK). `param` names the offending request field
// (null when empty); `code` is a machine-readable reason (null when empty).
std::string openai_error_body(const Status& status, std::string_view param = {},
                              std::string_view code = {});

// The Status code whose HTTP status and OpenAI type fit an HTTP error status the transport
// produces itself (408, 414, 431, 505...): kInvalidArgument for other 4xx, kInternal for other 5xx.
StatusCode status_code_for_http(int http_status);

// The whole answer for an error: its HTTP status, the body, and Retry-After on 429 and 503.
http::HttpResponse error_response(const ApiError& error);
// The same for a Status, with the field at fault and OpenAI's code where there are any.
http::HttpResponse error_response(const Status& status, std::string_view param = {},
                                  std::string_view code = {});
// The same for an HTTP error status without a Status of its own (the transport's 408, 414...).
http::HttpResponse error_response(int http_status, std::string_view message);

}  // namespace dsocr::server

// OpenAI-shaped error bodies: {"error": {"message", "type", "param", "code"}}, the only error
// shape dsocr-server sends, so the OpenAI SDKs raise their usual exception classes.
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace dsocr::server {

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

}  // namespace dsocr::server

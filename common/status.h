// Status and StatusOr<T>: the result of anything driven by external input (files, requests,
// weights, images). Broken internal invariants are not Statuses: they are DSOCR_CHECK failures.
//
// A Status is either OK or carries a code and a message meant for the person who caused it
// ("config.json: key 'hidden_size' must be a positive integer, got -3"). Codes map onto HTTP
// statuses in one place (http_status()), so every layer reports errors the same way.
//
// Thread-safety: plain values; const methods are safe to call concurrently.
#pragma once

#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace dsocr {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // the caller sent something malformed              -> 400
  kNotFound,            // a named thing (file, model, route) does not exist -> 404
  kAlreadyExists,       //                                                   -> 409
  kUnauthenticated,     // missing or wrong credentials                      -> 401
  kPermissionDenied,    // credentials fine, action not allowed              -> 403
  kPayloadTooLarge,     // a body or file over a configured limit            -> 413
  kResourceExhausted,   // a queue or capacity is full; retry later          -> 429
  kFailedPrecondition,  // the system is not in a state to do this           -> 400
  kOutOfRange,          // a value outside what is supported                 -> 400
  kCancelled,           // the caller went away                              -> 499
  kDeadlineExceeded,    // a timeout expired                                 -> 504
  kUnimplemented,       // not supported (yet)                               -> 501
  kUnavailable,         // loading, draining or unhealthy; retry later       -> 503
  kDataLoss,            // a file is truncated or corrupt                    -> 500
  kInternal,            // a bug or an unexpected library failure            -> 500
};

std::string_view status_code_name(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message);

  static Status ok_status() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // The HTTP status a server should answer with for this error (200 for OK).
  int http_status() const;

  // "INVALID_ARGUMENT: message", or "OK".
  std::string to_string() const;

  // Returns a copy whose message is "<context>: <message>"; OK stays OK.
  Status with_context(std::string_view context) const;

  friend bool operator==(const Status& a, const Status& b) {
    return a.code_ == b.code_ && a.message_ == b.message_;
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

std::ostream& operator<<(std::ostream& os, const Status& status);

// Shorthands that read well at call sites: return invalid_argument("bad header").
Status invalid_argument(std::string message);
Status not_found(std::string message);
Status unauthenticated(std::string message);
Status payload_too_large(std::string message);
Status resource_exhausted(std::string message);
Status failed_precondition(std::string message);
Status out_of_range(std::string message);
Status unimplemented(std::string message);
Status unavailable(std::string message);
Status data_loss(std::string message);
Status internal_error(std::string message);

// Either a value or a non-OK Status. Constructing one from an OK Status is a bug (it becomes an
// INTERNAL error rather than an object with neither).
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(T value) : state_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  StatusOr(Status status)                          // NOLINT(google-explicit-constructor)
      : state_(status.ok() ? internal_error("StatusOr constructed from an OK Status")
                           : std::move(status)) {}

  bool ok() const { return std::holds_alternative<T>(state_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(state_);
  }

  // Precondition: ok(). Checked: accessing the value of an error aborts with the error.
  T& value() & {
    check_ok();
    return std::get<T>(state_);
  }
  const T& value() const& {
    check_ok();
    return std::get<T>(state_);
  }
  T&& value() && {
    check_ok();
    return std::get<T>(std::move(state_));
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  void check_ok() const;
  std::variant<T, Status> state_;
};

[[noreturn]] void status_or_value_of_error(const Status& status);

template <typename T>
void StatusOr<T>::check_ok() const {
  if (!ok()) status_or_value_of_error(std::get<Status>(state_));
}

}  // namespace dsocr

#define DSOCR_STATUS_CONCAT_INNER_(a, b) a##b
#define DSOCR_STATUS_CONCAT_(a, b) DSOCR_STATUS_CONCAT_INNER_(a, b)

// Returns the Status from the enclosing function if `expr` is not OK.
#define DSOCR_RETURN_IF_ERROR(expr)                \
  do {                                             \
    ::dsocr::Status dsocr_status_ = (expr);        \
    if (!dsocr_status_.ok()) return dsocr_status_; \
  } while (false)

// DSOCR_ASSIGN_OR_RETURN(auto x, f()): declares x from a StatusOr, or returns its error.
#define DSOCR_ASSIGN_OR_RETURN(lhs, expr) \
  DSOCR_ASSIGN_OR_RETURN_IMPL_(DSOCR_STATUS_CONCAT_(dsocr_statusor_, __LINE__), lhs, expr)
#define DSOCR_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(tmp).value()

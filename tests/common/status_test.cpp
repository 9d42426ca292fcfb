#include "common/status.h"

#include <catch2/catch.hpp>

namespace dsocr {
namespace {

StatusOr<int> half(int x) {
  if (x % 2 != 0) return invalid_argument("odd: " + std::to_string(x));
  return x / 2;
}

StatusOr<int> quarter(int x) {
  DSOCR_ASSIGN_OR_RETURN(int h, half(x));
  DSOCR_ASSIGN_OR_RETURN(int q, half(h));
  return q;
}

Status check_positive(int x) {
  if (x <= 0) return out_of_range("not positive");
  return Status();
}

Status check_both(int a, int b) {
  DSOCR_RETURN_IF_ERROR(check_positive(a));
  DSOCR_RETURN_IF_ERROR(check_positive(b).with_context("b"));
  return Status();
}

TEST_CASE("Status: OK and errors", "[status]") {
  Status ok;
  CHECK(ok.ok());
  CHECK(ok.to_string() == "OK");
  CHECK(ok.http_status() == 200);
  Status bad = invalid_argument("field 'model' must be a string");
  CHECK_FALSE(bad.ok());
  CHECK(bad.code() == StatusCode::kInvalidArgument);
  CHECK(bad.to_string() == "INVALID_ARGUMENT: field 'model' must be a string");
  CHECK(bad.with_context("request").message() == "request: field 'model' must be a string");
  CHECK(Status(StatusCode::kOk, "ignored").message().empty());
}

TEST_CASE("Status: codes map onto HTTP statuses", "[status]") {
  CHECK(invalid_argument("").http_status() == 400);
  CHECK(unauthenticated("").http_status() == 401);
  CHECK(not_found("").http_status() == 404);
  CHECK(payload_too_large("").http_status() == 413);
  CHECK(resource_exhausted("").http_status() == 429);
  CHECK(internal_error("").http_status() == 500);
  CHECK(data_loss("").http_status() == 500);
  CHECK(unimplemented("").http_status() == 501);
  CHECK(unavailable("").http_status() == 503);
}

TEST_CASE("StatusOr and the propagation macros", "[status]") {
  auto q = quarter(12);
  REQUIRE(q.ok());
  CHECK(*q == 3);
  auto odd = quarter(6);  // 6 -> 3 -> odd
  REQUIRE_FALSE(odd.ok());
  CHECK(odd.status().message() == "odd: 3");
  CHECK(check_both(1, 1).ok());
  CHECK(check_both(-1, 1).message() == "not positive");
  CHECK(check_both(1, -1).message() == "b: not positive");
  StatusOr<std::string> from_ok_status{Status()};
  CHECK(from_ok_status.status().code() == StatusCode::kInternal);
  StatusOr<std::string> moved{std::string("abc")};
  std::string taken = std::move(moved).value();
  CHECK(taken == "abc");
}

}  // namespace
}  // namespace dsocr

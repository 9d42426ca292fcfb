#include "common/logging.h"

#include <spdlog/sinks/ostream_sink.h>

#include <catch2/catch.hpp>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

namespace dsocr {
namespace {

struct CapturedLog {
  std::ostringstream out;
  CapturedLog() { log::set_sink(std::make_shared<spdlog::sinks::ostream_sink_mt>(out)); }
  ~CapturedLog() {
    (void)log::configure({});
    log::set_sink(std::make_shared<spdlog::sinks::ostream_sink_mt>(std::cerr));
  }
};

TEST_CASE("Logging: text lines carry module and request id", "[logging]") {
  CapturedLog captured;
  REQUIRE(log::configure({.level = "info", .format = log::Format::kText}).ok());
  log::get("http")->info("outside");
  {
    log::ScopedRequestId outer("req-1");
    log::get("engine")->info("inside {}", 42);
    {
      log::ScopedRequestId inner("req-2");
      log::get("engine")->warn("nested");
    }
    CHECK(log::current_request_id() == "req-1");
  }
  CHECK(log::current_request_id().empty());
  log::get("http")->debug("hidden at info");
  std::string text = captured.out.str();
  CHECK(text.find("INFO  [http] outside\n") != std::string::npos);
  CHECK(text.find("INFO  [engine] [req=req-1] inside 42\n") != std::string::npos);
  CHECK(text.find("WARN  [engine] [req=req-2] nested\n") != std::string::npos);
  CHECK(text.find("hidden") == std::string::npos);
}

TEST_CASE("Logging: JSON lines are valid JSON, even with hostile bytes", "[logging]") {
  CapturedLog captured;
  REQUIRE(log::configure({.level = "debug", .format = log::Format::kJson}).ok());
  {
    log::ScopedRequestId id("abc");
    log::get("vision")->debug("quote \" newline \n invalid \xff byte");
  }
  log::get("vision")->info("plain");
  std::istringstream lines(captured.out.str());
  std::string line;
  std::vector<nlohmann::json> parsed;
  while (std::getline(lines, line)) parsed.push_back(nlohmann::json::parse(line));
  REQUIRE(parsed.size() == 2);
  CHECK(parsed[0]["level"] == "debug");
  CHECK(parsed[0]["logger"] == "vision");
  CHECK(parsed[0]["req"] == "abc");
  CHECK(parsed[0]["msg"].get<std::string>().find("newline \n invalid") != std::string::npos);
  CHECK(parsed[1]["msg"] == "plain");
  CHECK_FALSE(parsed[1].contains("req"));
  CHECK(parsed[1]["ts"].get<std::string>().size() == 24);  // 2026-11-23T16:40:00.123Z
}

TEST_CASE("Logging: request ids are per thread", "[logging]") {
  log::ScopedRequestId main_id("main");
  std::string seen_in_thread = "unset";
  std::thread t([&] { seen_in_thread = log::current_request_id(); });
  t.join();
  CHECK(seen_in_thread.empty());
  CHECK(log::current_request_id() == "main");
}

TEST_CASE("Logging: bad options are errors", "[logging]") {
  CHECK(log::configure({.level = "loud"}).code() == StatusCode::kInvalidArgument);
  CHECK(log::parse_format("json").value() == log::Format::kJson);
  CHECK_FALSE(log::parse_format("xml").ok());
  CHECK(log::configure({}).ok());
}

}  // namespace
}  // namespace dsocr

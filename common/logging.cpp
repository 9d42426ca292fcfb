#include "common/logging.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <chrono>
#include <ctime>
#include <mutex>
#include <unordered_map>

#include <nlohmann/json.hpp>

namespace dsocr::log {
namespace {

thread_local std::string t_request_id;

// "%R" in text patterns: "[req=<id>] " when the thread has a request id, nothing otherwise.
class RequestIdFlag : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg&, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    if (t_request_id.empty()) return;
    static constexpr std::string_view kOpen = "[req=";
    dest.append(kOpen.data(), kOpen.data() + kOpen.size());
    dest.append(t_request_id.data(), t_request_id.data() + t_request_id.size());
    dest.push_back(']');
    dest.push_back(' ');
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<RequestIdFlag>();
  }
};

// "%Q" in text patterns: the level in capitals, padded to one width so messages line up.
class UpperLevelFlag : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    static constexpr std::string_view kNames[] = {"TRACE", "DEBUG", "INFO ", "WARN ",
                                                  "ERROR", "CRIT ", "OFF  "};
    std::string_view name = kNames[static_cast<int>(msg.level)];
    dest.append(name.data(), name.data() + name.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<UpperLevelFlag>();
  }
};

// One JSON object per line; nlohmann does the escaping of arbitrary message bytes.
class JsonFormatter : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    using namespace std::chrono;
    auto since_epoch = msg.time.time_since_epoch();
    auto secs = duration_cast<seconds>(since_epoch);
    auto millis = duration_cast<milliseconds>(since_epoch - secs).count();
    std::time_t tt = secs.count();
    std::tm utc{};
    gmtime_r(&tt, &utc);
    char ts[40];
    size_t n = std::strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &utc);
    std::snprintf(ts + n, sizeof(ts) - n, ".%03dZ", static_cast<int>(millis));

    nlohmann::json line = {
        {"ts", ts},
        {"level", std::string(spdlog::level::to_string_view(msg.level).data(),
                              spdlog::level::to_string_view(msg.level).size())},
        {"logger", std::string(msg.logger_name.data(), msg.logger_name.size())},
        {"msg", std::string(msg.payload.data(), msg.payload.size())},
    };
    if (!t_request_id.empty()) line["req"] = t_request_id;
    std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    text.push_back('\n');
    dest.append(text.data(), text.data() + text.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

std::unique_ptr<spdlog::formatter> make_formatter(Format format) {
  if (format == Format::kJson) return std::make_unique<JsonFormatter>();
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  formatter->add_flag<RequestIdFlag>('R');
  formatter->add_flag<UpperLevelFlag>('Q');
  formatter->set_pattern("%Y-%m-%d %H:%M:%S.%e %Q [%n] %R%v");
  return formatter;
}

struct Registry {
  std::mutex mu;
  std::shared_ptr<spdlog::sinks::sink> sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  Options options;
  std::unordered_map<std::string, std::shared_ptr<spdlog::logger>> loggers;

  Registry() { sink->set_formatter(make_formatter(options.format)); }
};

Registry& registry() {
  static Registry* r = new Registry();  // never destroyed: loggers outlive static destructors
  return *r;
}

}  // namespace

StatusOr<Format> parse_format(std::string_view name) {
  if (name == "text") return Format::kText;
  if (name == "json") return Format::kJson;
  return invalid_argument("unknown log format '" + std::string(name) + "' (expected text or json)");
}

Status configure(const Options& options) {
  auto level = spdlog::level::from_str(options.level);
  if (level == spdlog::level::off && options.level != "off") {
    return invalid_argument("unknown log level '" + options.level +
                            "' (expected trace, debug, info, warn, error, critical or off)");
  }
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.options = options;
  r.sink->set_formatter(make_formatter(options.format));
  for (auto& [name, logger] : r.loggers) logger->set_level(level);
  return Status();
}

std::shared_ptr<spdlog::logger> get(std::string_view module) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.loggers.find(std::string(module));
  if (it != r.loggers.end()) return it->second;
  auto logger = std::make_shared<spdlog::logger>(std::string(module), r.sink);
  logger->set_level(spdlog::level::from_str(r.options.level));
  logger->flush_on(spdlog::level::warn);
  r.loggers.emplace(std::string(module), logger);
  return logger;
}

void set_sink(const std::shared_ptr<spdlog::sinks::sink>& sink) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  sink->set_formatter(make_formatter(r.options.format));
  r.sink = sink;
  for (auto& [name, logger] : r.loggers) logger->sinks() = {sink};
}

ScopedRequestId::ScopedRequestId(std::string request_id) : previous_(std::move(t_request_id)) {
  t_request_id = std::move(request_id);
}

ScopedRequestId::~ScopedRequestId() { t_request_id = std::move(previous_); }

const std::string& current_request_id() { return t_request_id; }

}  // namespace dsocr::log

#include "server/http_server.h"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <exception>
#include <random>

#include <nlohmann/json.hpp>

#include "common/logging.h"
#include "server/openai_errors.h"

namespace dsocr::server {
namespace {

using json = nlohmann::json;
constexpr const char* kJson = "application/json";

bool is_quiet_route(const std::string& path) { return path == "/health" || path == "/metrics"; }

void send_error(httplib::Response& res, const Status& status, std::string_view param = {}) {
  res.status = status.http_status();
  res.set_content(openai_error_body(status, param), kJson);
}

}  // namespace

std::string sanitize_or_generate_request_id(const std::string& candidate) {
  bool ok = !candidate.empty() && candidate.size() <= 128;
  for (char c : candidate) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '.' || c == '_' || c == '-');
  }
  if (ok) return candidate;
  thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(rng()));
  return buf;
}

struct HttpServer::Impl {
  ServerConfig config;
  ServedModel model;
  MetricsRegistry* metrics;
  httplib::Server http;
  int bound_port = -1;
  std::shared_ptr<spdlog::logger> logger = log::get("http");
  MetricFamily<Counter>& requests;
  std::chrono::system_clock::time_point started = std::chrono::system_clock::now();

  Impl(ServerConfig c, ServedModel m, MetricsRegistry* registry)
      : config(std::move(c)),
        model(std::move(m)),
        metrics(registry),
        requests(registry->counter("dsocr_http_requests_total",
                                   "HTTP requests answered, by route and status.",
                                   {"route", "status"})) {
    install_routes();
  }

  void install_routes() {
    http.new_task_queue = [n = config.http_threads] {
      return new httplib::ThreadPool(static_cast<size_t>(n));
    };
    http.set_payload_max_length(static_cast<size_t>(config.max_body_bytes));
    http.set_read_timeout(60, 0);
    http.set_write_timeout(60, 0);

    // Every request: id, then routing. The id is stored in a header of the response so that the
    // logger (which runs after the handler) can find it.
    http.set_pre_routing_handler([](const httplib::Request& req, httplib::Response& res) {
      res.set_header("X-Request-Id",
                     sanitize_or_generate_request_id(req.get_header_value("X-Request-Id")));
      return httplib::Server::HandlerResponse::Unhandled;
    });

    http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      json body = {{"status", "ok"}, {"model", model.id}};
      res.set_content(body.dump(), kJson);
    });

    http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      json entry = {{"id", model.id},
                    {"object", "model"},
                    {"created", std::chrono::system_clock::to_time_t(started)},
                    {"owned_by", "dsocr"}};
      res.set_content(json{{"object", "list"}, {"data", json::array({entry})}}.dump(), kJson);
    });

    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics->render(), "text/plain; version=0.0.4; charset=utf-8");
    });

    http.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
      json body = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
      if (body.is_discarded()) {
        return send_error(res, invalid_argument("the request body is not valid JSON"));
      }
      if (!body.is_object()) {
        return send_error(res, invalid_argument("the request body must be a JSON object"));
      }
      send_error(res, unimplemented("chat completions are not available in this build yet: the "
                                    "language model and engine have not landed (GET /health "
                                    "and /v1/models work)"));
    });

    http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      // Only statuses httplib produced itself reach here without a body (404 no route, 413, 400
      // unparseable request line); bodies our handlers set are kept.
      if (!res.body.empty()) return;
      if (res.status == 404) {
        send_error(res, not_found("no route " + req.method + " " + req.path));
      } else if (res.status == 413) {
        send_error(res, payload_too_large("request body larger than the server's limit"));
      } else if (res.status == 405) {
        send_error(res, Status(StatusCode::kInvalidArgument, "method not allowed"));
        res.status = 405;
      } else if (res.status >= 400 && res.status < 500) {
        int code = res.status;
        send_error(res, invalid_argument("malformed HTTP request"));
        res.status = code;
      }
    });

    http.set_exception_handler(
        [this](const httplib::Request& req, httplib::Response& res, const std::exception_ptr& ep) {
          std::string what = "unknown exception";
          try {
            if (ep) std::rethrow_exception(ep);
          } catch (const std::exception& e) {
            what = e.what();
          } catch (...) {
          }
          log::ScopedRequestId id(res.get_header_value("X-Request-Id"));
          logger->error("{} {}: internal error: {}", req.method, req.path, what);
          send_error(res, internal_error("internal server error"));
        });

    http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      std::string route = req.path;
      if (route != "/health" && route != "/metrics" && route != "/v1/models" &&
          route != "/v1/chat/completions") {
        route = "other";  // bounded label cardinality: never a client-chosen path
      }
      requests.labels({route, std::to_string(res.status)}).inc();
      if (is_quiet_route(req.path)) return;
      log::ScopedRequestId id(res.get_header_value("X-Request-Id"));
      logger->info("{} {} {} ({} bytes in, {} out) from {}", req.method, req.path, res.status,
                   req.body.size(), res.body.size(), req.remote_addr);
    });
  }
};

HttpServer::HttpServer(ServerConfig config, ServedModel model, MetricsRegistry* metrics)
    : impl_(std::make_unique<Impl>(std::move(config), std::move(model), metrics)) {}

HttpServer::~HttpServer() { stop(); }

Status HttpServer::bind() {
  const auto& c = impl_->config;
  int port = c.port == 0 ? impl_->http.bind_to_any_port(c.host)
                         : (impl_->http.bind_to_port(c.host, static_cast<int>(c.port))
                                ? static_cast<int>(c.port)
                                : -1);
  if (port < 0) {
    return unavailable("cannot listen on " + c.host + ":" + std::to_string(c.port) +
                       " (address in use, or not an address of this machine?)");
  }
  impl_->bound_port = port;
  return Status();
}

int HttpServer::port() const { return impl_->bound_port; }

void HttpServer::serve() { impl_->http.listen_after_bind(); }

void HttpServer::stop() {
  if (impl_) impl_->http.stop();
}

}  // namespace dsocr::server

#include "server/http_server.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>
#include <exception>
#include <mutex>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/logging.h"
#include "server/chat_handler.h"
#include "server/openai_errors.h"
#include "server/server_metrics.h"

namespace dsocr::server {
namespace {

using json = nlohmann::json;
constexpr const char* kJson = "application/json";

bool is_quiet_route(const std::string& path) { return path == "/health" || path == "/metrics"; }

void send_error(httplib::Response& res, const Status& status, std::string_view param = {},
                std::string_view code = {}) {
  send_api_error(res, {status, std::string(param), std::string(code)});
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

bool constant_time_equals(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

struct HttpServer::Impl {
  ServerConfig config;
  ServedModel model;
  MetricsRegistry* metrics;
  httplib::Server http;
  int bound_port = -1;
  std::shared_ptr<spdlog::logger> logger = log::get("http");
  MetricFamily<Counter>& requests;
  ServerMetrics server_metrics;
  std::chrono::system_clock::time_point started = std::chrono::system_clock::now();

  mutable std::mutex mu;
  std::shared_ptr<engine::Engine> engine;                 // guarded by mu
  std::shared_ptr<const tokenizer::Tokenizer> tokenizer;  // guarded by mu
  std::atomic<bool> draining{false};
  bool stop_requested = false;       // guarded by mu
  std::atomic<bool> serving{false};  // serve() is between its start and its return
  ChatHandler chat;

  Impl(ServerConfig c, ServedModel m, MetricsRegistry* registry)
      : config(std::move(c)),
        model(std::move(m)),
        metrics(registry),
        requests(registry->counter("dsocr_http_requests_total",
                                   "HTTP requests answered, by route and status.",
                                   {"route", "status"})),
        server_metrics(registry),
        chat(chat_options(), serving_state(), &server_metrics) {
    install_routes();
  }

  ChatHandlerOptions chat_options() const {
    ChatHandlerOptions o;
    o.model_id = model.id;
    o.limits.max_images = config.max_images_per_request;
    o.fetch.max_bytes = config.max_image_bytes;
    o.fetch.total_timeout_ms = config.image_fetch_timeout_s * 1000;
    o.fetch.max_redirects = config.image_max_redirects;
    o.fetch.allow_private_addresses = config.allow_private_image_urls;
    o.fetch.allowed_local_media_dir = config.allowed_local_media_path;
    o.keepalive_interval_ms = config.keepalive_interval_ms;
    return o;
  }

  ServingState serving_state() {
    return {.engine = [this] { return current_engine(); },
            .tokenizer = [this] { return current_tokenizer(); },
            .draining = [this] { return draining.load(); }};
  }

  std::shared_ptr<engine::Engine> current_engine() const {
    std::lock_guard lock(mu);
    return engine;
  }
  std::shared_ptr<const tokenizer::Tokenizer> current_tokenizer() const {
    std::lock_guard lock(mu);
    return tokenizer;
  }

  // "ok", "loading", "draining" or "unhealthy" (with a reason).
  std::pair<std::string, std::string> health() const {
    std::lock_guard lock(mu);
    if (draining) return {"draining", ""};
    if (!engine) return {"loading", ""};
    switch (engine->state()) {
      case engine::EngineState::kReady:
        return {"ok", ""};
      case engine::EngineState::kLoading:
        return {"loading", ""};
      case engine::EngineState::kDraining:
      case engine::EngineState::kStopped:
        return {"draining", ""};
      case engine::EngineState::kUnhealthy:
        return {"unhealthy", "the engine failed"};
    }
    return {"unhealthy", ""};
  }

  bool authorized(const httplib::Request& req) const {
    if (config.api_key.empty()) return true;
    const std::string header = req.get_header_value("Authorization");
    constexpr std::string_view kBearer = "Bearer ";
    if (header.size() <= kBearer.size() || header.compare(0, kBearer.size(), kBearer) != 0) {
      return false;
    }
    return constant_time_equals(std::string_view(header).substr(kBearer.size()), config.api_key);
  }

  void install_routes() {
    http.new_task_queue = [n = config.http_threads] {
      return new httplib::ThreadPool(static_cast<size_t>(n));
    };
    http.set_payload_max_length(static_cast<size_t>(config.max_body_bytes));
    http.set_read_timeout(60, 0);
    http.set_write_timeout(60, 0);

    // Every request: id, authentication, then routing. The id is stored in a header of the
    // response so that the logger (which runs after the handler) can find it.
    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      res.set_header("X-Request-Id",
                     sanitize_or_generate_request_id(req.get_header_value("X-Request-Id")));
      if (!is_quiet_route(req.path) && !authorized(req)) {
        send_error(res,
                   unauthenticated("missing or wrong API key (send 'Authorization: Bearer KEY')"),
                   {}, "invalid_api_key");
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });

    http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      auto [status, reason] = health();
      json body = {{"status", status}, {"model", model.id}};
      if (!reason.empty()) body["reason"] = reason;
      res.status = status == "ok" ? 200 : 503;
      if (res.status == 503) res.set_header("Retry-After", "5");
      res.set_content(body.dump(), kJson);
    });

    http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      json entry = {{"id", model.id},
                    {"object", "model"},
                    {"created", std::chrono::system_clock::to_time_t(started)},
                    {"owned_by", "dsocr"}};
      if (auto e = current_engine()) entry["max_model_len"] = e->max_model_len();
      res.set_content(json{{"object", "list"}, {"data", json::array({entry})}}.dump(), kJson);
    });

    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      if (auto e = current_engine()) {
        engine::EngineStats stats = e->stats();
        server_metrics.refresh(&stats);
      } else {
        server_metrics.refresh(nullptr);
      }
      res.set_content(metrics->render(), "text/plain; version=0.0.4; charset=utf-8");
    });

    http.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
      chat.handle(req, res);
    });

    http.Post("/tokenize", [this](const httplib::Request& req, httplib::Response& res) {
      auto tok = current_tokenizer();
      if (!tok) return send_error(res, unavailable("the model is still loading"));
      json body = json::parse(req.body, nullptr, false);
      if (body.is_discarded() || !body.is_object()) {
        return send_error(res, invalid_argument("the body must be a JSON object"));
      }
      auto prompt = body.find("prompt");
      if (prompt == body.end() || !prompt->is_string()) {
        return send_error(res, invalid_argument("prompt: must be a string"), "prompt");
      }
      std::vector<int32_t> ids = tok->encode(prompt->get<std::string>());
      json out = {{"tokens", ids}, {"count", ids.size()}};
      if (auto e = current_engine()) out["max_model_len"] = e->max_model_len();
      res.set_content(out.dump(), kJson);
    });

    http.Post("/detokenize", [this](const httplib::Request& req, httplib::Response& res) {
      auto tok = current_tokenizer();
      if (!tok) return send_error(res, unavailable("the model is still loading"));
      json body = json::parse(req.body, nullptr, false);
      if (body.is_discarded() || !body.is_object()) {
        return send_error(res, invalid_argument("the body must be a JSON object"));
      }
      auto tokens = body.find("tokens");
      if (tokens == body.end() || !tokens->is_array()) {
        return send_error(res, invalid_argument("tokens: must be an array of token ids"), "tokens");
      }
      std::vector<int32_t> ids;
      for (const json& t : *tokens) {
        if (!t.is_number_integer() || t.get<int64_t>() < 0 ||
            t.get<int64_t>() >= tok->vocab_size()) {
          return send_error(res,
                            invalid_argument("tokens: every id must be an integer in [0, " +
                                             std::to_string(tok->vocab_size()) + ")"),
                            "tokens");
        }
        ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
      }
      json out = {{"prompt", tok->decode(ids)}};
      res.set_content(out.dump(-1, ' ', false, json::error_handler_t::replace), kJson);
    });

    http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      // Only statuses httplib produced itself reach here without a body (404 no route, 413, 400
      // unparseable request line); bodies our handlers set are kept.
      if (!res.body.empty() || res.status == 499) return;
      if (res.status == 404) {
        send_error(res, not_found("no route " + req.method + " " + req.path));
      } else if (res.status == 413) {
        // cpp-httplib caps form-encoded bodies far below our limit: curl -d without a
        // Content-Type header sends exactly that.
        const bool form =
            req.get_header_value("Content-Type") == "application/x-www-form-urlencoded";
        send_error(res, payload_too_large(
                            form ? "form-encoded request bodies are limited to 8 KiB; send JSON "
                                   "with 'Content-Type: application/json'"
                                 : "request body larger than the server's limit"));
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
          route != "/v1/chat/completions" && route != "/tokenize" && route != "/detokenize") {
        route = "other";  // bounded label cardinality: never a client-chosen path
      }
      requests.labels({route, std::to_string(res.status)}).inc();
      // Chat requests log their own, richer summary line (server/chat_handler.cpp).
      if (is_quiet_route(req.path) || req.path == "/v1/chat/completions") return;
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

void HttpServer::serve() {
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->stop_requested) return;
    impl_->serving = true;
  }
  impl_->http.listen_after_bind();
  impl_->serving = false;
}

void HttpServer::stop() {
  if (!impl_) return;
  {
    std::lock_guard lock(impl_->mu);
    impl_->stop_requested = true;
    if (!impl_->serving) return;
  }
  // serve() is inside listen_after_bind(), or about to enter it: httplib's stop() does nothing
  // until the listener runs, so repeat it until serve() has returned.
  while (impl_->serving) {
    impl_->http.stop();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void HttpServer::set_engine(std::shared_ptr<engine::Engine> engine,
                            std::shared_ptr<const tokenizer::Tokenizer> tokenizer) {
  std::lock_guard lock(impl_->mu);
  impl_->engine = std::move(engine);
  impl_->tokenizer = std::move(tokenizer);
}

void HttpServer::begin_drain() { impl_->draining = true; }

int64_t HttpServer::active_chat_requests() const { return impl_->chat.active(); }

}  // namespace dsocr::server

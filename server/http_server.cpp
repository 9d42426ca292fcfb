#include "server/http_server.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>
#include <functional>
#include <mutex>
#include <random>

#include "common/logging.h"
#include "server/chat_handler.h"
#include "server/http/http_listener.h"
#include "server/openai_errors.h"
#include "server/playground.h"
#include "server/routes.h"
#include "server/server_metrics.h"

namespace dsocr::server {
namespace {

using http::Exchange;
using http::HttpRequest;
using http::HttpResponse;

bool is_quiet_route(const std::string& path) { return path == "/health" || path == "/metrics"; }

// The playground's files are public: the browser needs the page before the user can type the key
// into it. They hold nothing but the static page; its API calls carry the key.
bool is_playground_route(const std::string& path) {
  for (const PlaygroundAsset& asset : playground_assets())
    if (asset.path == path) return true;
  return false;
}

bool needs_api_key(const std::string& path) {
  return !is_quiet_route(path) && !is_playground_route(path);
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
  // A route's answer: a plain response, or (chat) one written through the exchange itself.
  using RouteHandler = std::function<void(Exchange&, const std::string& request_id)>;
  struct Route {
    std::string method;
    std::string path;
    RouteHandler handler;
  };

  ServerConfig config;
  ServedModel model;
  MetricsRegistry* metrics;
  std::shared_ptr<spdlog::logger> logger = log::get("http");
  MetricFamily<Counter>& requests;
  Gauge& open_connections;
  Gauge& requests_in_flight;
  ServerMetrics server_metrics;
  std::chrono::system_clock::time_point started = std::chrono::system_clock::now();

  mutable std::mutex mu;
  std::shared_ptr<engine::Engine> engine;  // guarded by mu; null until the model has loaded
  std::atomic<bool> draining{false};
  ChatHandler chat;
  std::vector<Route> routes;
  std::unique_ptr<http::HttpListener> listener;

  Impl(ServerConfig c, ServedModel m, MetricsRegistry* registry)
      : config(std::move(c)),
        model(std::move(m)),
        metrics(registry),
        requests(registry->counter("dsocr_http_requests_total",
                                   "HTTP requests answered, by route and status.",
                                   {"route", "status"})),
        open_connections(registry
                             ->gauge("dsocr_http_open_connections",
                                     "Open client connections (idle keep-alive ones included).")
                             .labels({})),
        requests_in_flight(registry
                               ->gauge("dsocr_http_requests_in_flight",
                                       "HTTP requests being answered (streams included).")
                               .labels({})),
        server_metrics(registry),
        chat(chat_options(), serving_state(), &server_metrics) {
    add_routes();
    listener = std::make_unique<http::HttpListener>(
        listener_options(), http::HttpListener::Hooks{
                                .filter = [this](const HttpRequest& head) { return filter(head); },
                                .handler = [this](Exchange& ex) { handle(ex); },
                                .error_response =
                                    [](int status, std::string_view message) {
                                      return server::error_response(status, message);
                                    },
                                .on_rejected =
                                    [this](int status, std::string_view message) {
                                      requests.labels({"other", std::to_string(status)}).inc();
                                      logger->info("rejected with {}: {}", status, message);
                                    }});
  }

  http::ListenerOptions listener_options() const {
    http::ListenerOptions o;
    o.host = config.host;
    o.port = static_cast<int>(config.port);
    o.max_connections = static_cast<size_t>(config.max_connections);
    o.header_timeout = std::chrono::milliseconds(config.header_timeout_s * 1000);
    o.body_timeout = std::chrono::milliseconds(config.body_timeout_s * 1000);
    o.idle_timeout = std::chrono::milliseconds(config.idle_timeout_s * 1000);
    o.write_timeout = std::chrono::milliseconds(config.write_timeout_s * 1000);
    o.max_buffered_body_bytes = config.max_buffered_body_bytes;
    o.spare_handler_threads = static_cast<size_t>(config.http_threads);
    o.limits.max_body_bytes = config.max_body_bytes;
    return o;
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
    o.document.max_bytes = config.max_image_bytes;
    o.document.max_pages = static_cast<int>(config.max_pdf_pages);
    o.document.render_timeout = std::chrono::seconds(config.pdf_render_timeout_s);
    o.max_pages_in_flight = config.max_pages_in_flight;
    return o;
  }

  ServingState serving_state() {
    return {.engine = [this] { return current_engine(); },
            .draining = [this] { return draining.load(); }};
  }

  std::shared_ptr<engine::Engine> current_engine() const {
    std::lock_guard lock(mu);
    return engine;
  }
  ServingSnapshot snapshot() const {
    return {.model = &model,
            .started = started,
            .engine = current_engine(),
            .draining = draining.load()};
  }

  bool authorized(const HttpRequest& req) const {
    if (config.api_key.empty()) return true;
    const std::string header = req.header("Authorization");
    constexpr std::string_view kBearer = "Bearer ";
    if (header.size() <= kBearer.size() || header.compare(0, kBearer.size(), kBearer) != 0) {
      return false;
    }
    return constant_time_equals(std::string_view(header).substr(kBearer.size()), config.api_key);
  }

  const Route* find_route(const std::string& method, const std::string& path) const {
    // HEAD is answered like GET, without the body.
    const std::string& m = method == "HEAD" ? std::string("GET") : method;
    for (const Route& r : routes)
      if (r.path == path && r.method == m) return &r;
    return nullptr;
  }

  // Label for metrics: a known route or "other", never a client-chosen path.
  std::string route_label(const std::string& path) const {
    for (const Route& r : routes)
      if (r.path == path) return r.path;
    return "other";
  }

  // Requests answered from their head alone: authentication, unknown routes and methods.
  std::optional<HttpResponse> filter(const HttpRequest& head) {
    std::optional<HttpResponse> answer;
    if (needs_api_key(head.path) && !authorized(head)) {
      answer = error_response(
          unauthenticated("missing or wrong API key (send 'Authorization: Bearer KEY')"), {},
          "invalid_api_key");
    } else if (!find_route(head.method, head.path)) {
      const bool path_known = route_label(head.path) != "other";
      answer = path_known ? server::error_response(
                                405, "method " + head.method + " not allowed on " + head.path)
                          : error_response(not_found("no route " + head.method + " " + head.path));
    }
    if (answer) {
      const std::string id = sanitize_or_generate_request_id(head.header("X-Request-Id"));
      answer->set_header("X-Request-Id", id);
      requests.labels({route_label(head.path), std::to_string(answer->status)}).inc();
      if (!is_quiet_route(head.path)) {
        log::ScopedRequestId scoped(id);
        logger->info("{} {} {} (answered before the body) from {}", head.method, head.path,
                     answer->status, head.remote_addr);
      }
    }
    return answer;
  }

  void handle(Exchange& ex) {
    const HttpRequest& req = ex.request();
    const std::string id = sanitize_or_generate_request_id(req.header("X-Request-Id"));
    log::ScopedRequestId scoped(id);
    const Route* route = find_route(req.method, req.path);
    if (route == nullptr) {  // the filter answers these; kept for safety
      reply(ex, id, error_response(not_found("no route " + req.method + " " + req.path)));
    } else {
      try {
        route->handler(ex, id);
      } catch (const std::exception& e) {
        logger->error("{} {}: internal error: {}", req.method, req.path, e.what());
        if (!ex.answered()) reply(ex, id, error_response(internal_error("internal server error")));
      }
    }
    if (!ex.answered()) reply(ex, id, error_response(internal_error("internal server error")));
    // Whole responses were counted by reply(), before they were sent; chat writes its own.
    if (req.path == "/v1/chat/completions")
      requests.labels({route_label(req.path), std::to_string(ex.status())}).inc();
    // Chat requests log their own, richer summary line (server/chat_handler.cpp).
    if (is_quiet_route(req.path) || req.path == "/v1/chat/completions") return;
    logger->info("{} {} {} ({} bytes in, {} out) from {}", req.method, req.path, ex.status(),
                 req.body.size(), ex.bytes_sent(), req.remote_addr);
  }

  // Counted before it is sent, so that a client holding the answer reads metrics that count it.
  void reply(Exchange& ex, const std::string& id, HttpResponse response) {
    response.set_header("X-Request-Id", id);
    requests.labels({route_label(ex.request().path), std::to_string(response.status)}).inc();
    ex.respond(response);
  }

  void add_routes() {
    // A route answered by one whole response, from what the server knows when it arrives.
    auto whole = [this](
                     std::string method, std::string path,
                     std::function<HttpResponse(const ServingSnapshot&, const HttpRequest&)> fn) {
      routes.push_back({std::move(method), std::move(path),
                        [this, fn = std::move(fn)](Exchange& ex, const std::string& id) {
                          reply(ex, id, fn(snapshot(), ex.request()));
                        }});
    };
    whole("GET", "/health",
          [](const ServingSnapshot& now, const HttpRequest&) { return health_route(now); });
    whole("GET", "/v1/models",
          [](const ServingSnapshot& now, const HttpRequest&) { return models_route(now); });
    whole("GET", "/metrics", [this](const ServingSnapshot& now, const HttpRequest&) {
      open_connections.set(static_cast<double>(listener->open_connections()));
      requests_in_flight.set(static_cast<double>(listener->requests_in_flight()));
      return metrics_route(now, &server_metrics, *metrics);
    });
    routes.push_back({"POST", "/v1/chat/completions",
                      [this](Exchange& ex, const std::string& id) { chat.handle(ex, id); }});
    whole("POST", "/tokenize", tokenize_route);
    whole("POST", "/detokenize", detokenize_route);
    for (const PlaygroundAsset& asset : playground_assets()) {
      whole("GET", asset.path, [&asset](const ServingSnapshot&, const HttpRequest&) {
        return playground_response(asset);
      });
    }
  }
};

HttpServer::HttpServer(ServerConfig config, ServedModel model, MetricsRegistry* metrics)
    : impl_(std::make_unique<Impl>(std::move(config), std::move(model), metrics)) {}

HttpServer::~HttpServer() { stop(); }

Status HttpServer::bind() { return impl_->listener->bind(); }

int HttpServer::port() const { return impl_->listener->port(); }

void HttpServer::serve() { impl_->listener->serve(); }

void HttpServer::stop() {
  if (impl_) impl_->listener->stop();
}

void HttpServer::set_engine(std::shared_ptr<engine::Engine> engine) {
  std::lock_guard lock(impl_->mu);
  impl_->engine = std::move(engine);
}

void HttpServer::begin_drain() { impl_->draining = true; }

int64_t HttpServer::active_chat_requests() const { return impl_->chat.active(); }

size_t HttpServer::open_connections() const { return impl_->listener->open_connections(); }

}  // namespace dsocr::server

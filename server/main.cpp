// dsocr-server: parse flags, resolve the model, start the HTTP server, stop cleanly on SIGINT or
// SIGTERM (exit 0).
#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <thread>

#include "common/logging.h"
#include "common/metrics.h"
#include "common/version.h"
#include "engine/device.h"
#include "engine/engine.h"
#include "engine/model_resolution.h"
#include "server/http_server.h"
#include "server/server_config.h"

namespace {

// Every connection is a descriptor: raise the soft limit to the hard one, and keep the connection
// cap below what that allows (images, weights and the engine need descriptors too).
void fit_connection_cap_to_descriptors(dsocr::server::ServerConfig* config,
                                       const std::shared_ptr<spdlog::logger>& logger) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    getrlimit(RLIMIT_NOFILE, &limit);
  }
  constexpr int64_t kReserved = 256;
  const int64_t usable = static_cast<int64_t>(limit.rlim_cur) - kReserved;
  if (limit.rlim_cur != RLIM_INFINITY && config->max_connections > usable) {
    logger->warn(
        "--max-connections {} lowered to {}: the process may open {} descriptors "
        "(raise it with ulimit -n)",
        config->max_connections, std::max<int64_t>(usable, 16), limit.rlim_cur);
    config->max_connections = std::max<int64_t>(usable, 16);
  }
}

int run(int argc, char** argv) {
  using namespace dsocr;
  // Block the stop signals in every thread; one thread waits for them with sigwait, so shutdown
  // runs as ordinary code instead of inside a signal handler.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);  // a client that went away is an error code, not a crash

  std::string help;
  auto config = server::parse_server_config(argc, argv, &help);
  if (!config.ok()) {
    std::cerr << "dsocr-server: " << config.status().message() << "\n";
    return 2;
  }
  if (!help.empty()) {
    std::cout << help;
    return 0;
  }
  Status logging = log::configure(
      {.level = config->log_level, .format = *log::parse_format(config->log_format)});
  if (!logging.ok()) {
    std::cerr << "dsocr-server: " << logging.message() << "\n";
    return 2;
  }
  auto logger = log::get("server");
  logger->info("{}", build_summary());
  fit_connection_cap_to_descriptors(&*config, logger);

  engine::DeviceInfo devices = engine::probe_devices();
  logger->info("compute: {}", devices.summary());
  auto device = engine::resolve_device(config->engine.device, devices);
  if (!device.ok()) {
    logger->error("--device: {}", device.status().message());
    return 2;
  }

  // A model that cannot be found is a usage error (2); the demo model failing to build is not (1).
  auto resolved = engine::resolve_model(config->engine.model);
  if (!resolved.ok()) {
    logger->error("{}", resolved.status().message());
    return engine::is_demo_model(config->engine.model) ? 1 : 2;
  }
  auto shape = engine::read_model_shape(resolved->dir);
  if (!shape.ok()) {
    logger->error("{}", shape.status().message());
    return 2;
  }
  server::ServedModel model{
      .id = config->served_model_name.empty() ? resolved->name : config->served_model_name,
      .description = resolved->dir.string()};
  logger->info("model '{}' ({}{} language layers, hidden {}) from {} on {}", model.id,
               resolved->kind == engine::ModelKind::kDemo ? "demo, random weights, " : "",
               shape->language_layers, shape->hidden_size, model.description, *device);

  // Listen first, so that probes see "loading" (503) instead of a refused connection while the
  // weights load.
  MetricsRegistry metrics;
  server::HttpServer http(*config, model, &metrics);
  if (Status bound = http.bind(); !bound.ok()) {
    logger->error("{}", bound.message());
    return 1;
  }
  logger->info("listening on http://{}:{} (loading the model)", config->host, http.port());
  std::thread http_thread([&] { http.serve(); });

  // The engine loads the tokenizer too; the routes use its copy (Engine::tokenizer()).
  engine::EngineOptions options = config->engine.to_options(resolved->dir);
  options.device = *device;
  auto created = engine::Engine::create(options);
  if (!created.ok()) {
    logger->error("cannot start the engine: {}", created.status().message());
    http.stop();
    http_thread.join();
    return 1;
  }
  std::shared_ptr<engine::Engine> engine = std::move(created).value();
  http.set_engine(engine);
  logger->info("ready: POST http://{}:{}/v1/chat/completions with model '{}'", config->host,
               http.port(), model.id);

  // SIGTERM/SIGINT: stop taking requests, let in-flight ones finish (up to --drain-timeout),
  // then stop the listener and exit 0.
  int sig = 0;
  while (sig != SIGINT && sig != SIGTERM) sig = sigwaitinfo(&stop_signals, nullptr);
  logger->info("received {}, draining (up to {} s)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
               config->drain_timeout_s);
  http.begin_drain();
  engine->drain(std::chrono::seconds(config->drain_timeout_s));
  // The engine has sent every stream its final event; give the HTTP threads a moment to write
  // them out before the listener closes the connections.
  const auto flush_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (http.active_chat_requests() > 0 && std::chrono::steady_clock::now() < flush_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  http.stop();
  http_thread.join();
  engine.reset();
  logger->info("stopped");
  logger->flush();
  std::fflush(nullptr);
  // Every client has its answer and nothing is left to save. Exit now rather than through the
  // destructors: drain does not wait for a model step in progress (a batch of pages on a busy CPU
  // can take tens of seconds), and destroying the engine would join it.
  std::_Exit(0);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dsocr-server: fatal: %s\n", e.what());
    return 1;
  }
}

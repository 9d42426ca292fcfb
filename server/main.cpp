// dsocr-server: parse flags, resolve the model, start the HTTP server, stop cleanly on SIGINT or
// SIGTERM (exit 0).
#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <thread>

#include "common/logging.h"
#include "common/metrics.h"
#include "common/version.h"
#include "engine/device.h"
#include "server/http_server.h"
#include "server/server_config.h"
#include "weights/model_source.h"

namespace {

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

  engine::DeviceInfo devices = engine::probe_devices();
  logger->info("compute: {}", devices.summary());
  auto device = engine::resolve_device(config->device, devices);
  if (!device.ok()) {
    logger->error("--device: {}", device.status().message());
    return 2;
  }

  auto source = weights::resolve_model_source(config->model, weights::hub_cache_dir());
  if (!source.ok()) {
    logger->error("{}", source.status().message());
    return 2;
  }
  server::ServedModel model{
      .id = config->served_model_name.empty() ? source->name : config->served_model_name,
      .description = source->kind == weights::ModelSource::Kind::kDemo ? "built-in demo model"
                                                                       : source->dir.string()};
  logger->info(
      "model '{}' from {} on {}; serving /health, /v1/models and /metrics "
      "(generation lands with the engine)",
      model.id, model.description, *device);

  MetricsRegistry metrics;
  server::HttpServer http(*config, model, &metrics);
  if (Status bound = http.bind(); !bound.ok()) {
    logger->error("{}", bound.message());
    return 1;
  }
  logger->info("listening on http://{}:{}", config->host, http.port());

  std::atomic<bool> serving{true};
  std::thread signal_waiter([&] {
    // Polls with a timeout so that it also ends when serve() returns on its own.
    const timespec poll_interval{0, 200 * 1000 * 1000};
    while (serving) {
      int sig = sigtimedwait(&stop_signals, nullptr, &poll_interval);
      if (sig == SIGINT || sig == SIGTERM) {
        logger->info("received {}, shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        http.stop();
        return;
      }
    }
  });
  http.serve();
  serving = false;
  signal_waiter.join();
  logger->info("stopped");
  return 0;
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

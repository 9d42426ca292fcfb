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
#include "server/http_server.h"
#include "server/server_config.h"
#include "tokenizer/tokenizer.h"
#include "weights/hub_client.h"
#include "weights/make_model.h"
#include "weights/model_config.h"
#include "weights/model_source.h"

namespace {

// Where dsocr keeps what it generates (the demo model): $DSOCR_CACHE_DIR, else
// $XDG_CACHE_HOME/dsocr, else ~/.cache/dsocr.
std::filesystem::path dsocr_cache_dir() {
  if (const char* d = std::getenv("DSOCR_CACHE_DIR"); d && *d) return d;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
    return std::filesystem::path(x) / "dsocr";
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home && *home ? home : "/tmp") / ".cache" / "dsocr";
}

// DeepSeek-OCR-2's tokenizer and config files: $DSOCR_MODEL_FILES_DIR, else the copy in the build.
std::filesystem::path model_files_dir() {
  if (const char* d = std::getenv("DSOCR_MODEL_FILES_DIR"); d && *d) return d;
  return dsocr::built_model_files_dir();
}

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
  auto device = engine::resolve_device(config->device, devices);
  if (!device.ok()) {
    logger->error("--device: {}", device.status().message());
    return 2;
  }

  auto hub = weights::HubOptions::from_environment();
  hub.progress = weights::terminal_progress_reporter();
  auto source = weights::resolve_or_download_model(config->model, hub);
  if (!source.ok()) {
    logger->error("{}", source.status().message());
    return 2;
  }
  std::filesystem::path model_dir = source->dir;
  if (source->kind == weights::ModelSource::Kind::kDemo) {
    auto demo = weights::ensure_demo_model(dsocr_cache_dir(), model_files_dir());
    if (!demo.ok()) {
      logger->error("{}", demo.status().message());
      return 1;
    }
    model_dir = *demo;
  }
  auto model_config = weights::ModelConfig::from_file(model_dir / "config.json");
  if (!model_config.ok()) {
    logger->error("{}", model_config.status().message());
    return 2;
  }
  server::ServedModel model{
      .id = config->served_model_name.empty() ? source->name : config->served_model_name,
      .description = model_dir.string()};
  logger->info("model '{}' ({}{} language layers, hidden {}) from {} on {}", model.id,
               source->kind == weights::ModelSource::Kind::kDemo ? "demo, random weights, " : "",
               model_config->language.num_hidden_layers, model_config->language.hidden_size,
               model.description, *device);

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

  std::shared_ptr<engine::Engine> engine;
  {
    auto tokenizer = tokenizer::Tokenizer::from_file(model_dir / "tokenizer.json");
    if (!tokenizer.ok()) {
      logger->error("{}", tokenizer.status().message());
      http.stop();
      http_thread.join();
      return 2;
    }
    engine::EngineOptions options;
    options.model_dir = model_dir;
    options.device = *device;
    options.dtype = config->dtype;
    options.num_kv_blocks = config->num_kv_blocks;
    options.kv_memory_fraction = config->kv_memory_fraction;
    options.prefix_caching = config->prefix_caching;
    options.scheduler.max_model_len = config->max_model_len;
    options.scheduler.max_num_seqs = config->max_num_seqs;
    options.scheduler.max_num_batched_tokens = config->max_num_batched_tokens;
    options.vision_threads = static_cast<size_t>(config->vision_threads);
    options.max_queued_requests = static_cast<size_t>(config->max_queued_requests);
    options.max_pending_image_bytes = config->max_pending_image_bytes;
    options.idle_memory_release_ms = config->idle_memory_release_ms;
    options.torch_threads = static_cast<int>(config->torch_threads);
    auto created = engine::Engine::create(options);
    if (!created.ok()) {
      logger->error("cannot start the engine: {}", created.status().message());
      http.stop();
      http_thread.join();
      return 1;
    }
    engine = std::move(created).value();
    http.set_engine(engine, *tokenizer);
  }
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

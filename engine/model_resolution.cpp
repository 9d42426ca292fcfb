#include "engine/model_resolution.h"

#include <cstdlib>
#include <system_error>

#include "common/version.h"
#include "weights/hub_client.h"
#include "weights/make_model.h"
#include "weights/model_config.h"
#include "weights/model_source.h"

namespace dsocr::engine {
namespace {

ModelKind kind_of(weights::ModelSource::Kind kind) {
  switch (kind) {
    case weights::ModelSource::Kind::kDemo:
      return ModelKind::kDemo;
    case weights::ModelSource::Kind::kLocalDir:
      return ModelKind::kLocalDir;
    case weights::ModelSource::Kind::kHubCache:
      return ModelKind::kHub;
  }
  return ModelKind::kLocalDir;
}

ResolvedModel from_source(const weights::ModelSource& source) {
  return {
      .kind = kind_of(source.kind), .spec = source.spec, .name = source.name, .dir = source.dir};
}

}  // namespace

bool is_demo_model(std::string_view spec) { return spec == weights::kDemoModel; }

std::filesystem::path dsocr_cache_dir() {
  if (const char* d = std::getenv("DSOCR_CACHE_DIR"); d && *d) return d;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
    return std::filesystem::path(x) / "dsocr";
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home && *home ? home : "/tmp") / ".cache" / "dsocr";
}

std::filesystem::path model_files_dir() {
  if (const char* d = std::getenv("DSOCR_MODEL_FILES_DIR"); d && *d) return d;
  return built_model_files_dir();
}

StatusOr<ResolvedModel> locate_model(std::string_view spec) {
  DSOCR_ASSIGN_OR_RETURN(weights::ModelSource source,
                         weights::resolve_model_source(spec, weights::hub_cache_dir()));
  return from_source(source);
}

StatusOr<ResolvedModel> resolve_model(std::string_view spec,
                                      const ModelResolutionOptions& options) {
  if (options.tokenizer_only) {
    // A tokenizer needs no config.json: any directory holding tokenizer.json will do, and the
    // demo model's tokenizer is the bundled one it is made with.
    std::error_code ec;
    if (std::filesystem::is_directory(std::filesystem::path(spec), ec)) {
      return ResolvedModel{.kind = ModelKind::kLocalDir,
                           .spec = std::string(spec),
                           .name = std::filesystem::path(spec).filename().string(),
                           .dir = std::filesystem::path(spec)};
    }
    if (is_demo_model(spec)) {
      return ResolvedModel{.kind = ModelKind::kDemo,
                           .spec = std::string(spec),
                           .name = std::string(spec),
                           .dir = model_files_dir()};
    }
  }
  auto hub = weights::HubOptions::from_environment();
  hub.progress = weights::terminal_progress_reporter();
  DSOCR_ASSIGN_OR_RETURN(
      weights::ModelSource source,
      weights::resolve_or_download_model(
          spec, hub,
          options.tokenizer_only ? weights::is_tokenizer_file : weights::is_wanted_model_file));
  ResolvedModel model = from_source(source);
  if (model.kind == ModelKind::kDemo) {
    DSOCR_ASSIGN_OR_RETURN(model.dir,
                           weights::ensure_demo_model(dsocr_cache_dir(), model_files_dir()));
  }
  return model;
}

StatusOr<ModelShape> read_model_shape(const std::filesystem::path& dir) {
  DSOCR_ASSIGN_OR_RETURN(weights::ModelConfig config,
                         weights::ModelConfig::from_file(dir / "config.json"));
  return ModelShape{.language_layers = config.language.num_hidden_layers,
                    .hidden_size = config.language.hidden_size};
}

}  // namespace dsocr::engine

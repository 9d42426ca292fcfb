#include "weights/model_source.h"

#include <cstdlib>
#include <fstream>
#include <system_error>

namespace dsocr::weights {
namespace fs = std::filesystem;
namespace {

// Hub repository names: letters, digits, '-', '_', '.'; no "..", no leading/trailing '-' or '.'.
bool valid_repo_part(std::string_view part) {
  if (part.empty() || part.size() > 96) return false;
  if (part.front() == '-' || part.front() == '.' || part.back() == '-' || part.back() == '.') {
    return false;
  }
  if (part.find("..") != std::string_view::npos || part.find("--") != std::string_view::npos) {
    return false;
  }
  for (char c : part) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

bool is_commit_hash(std::string_view rev) {
  if (rev.size() != 40) return false;
  for (char c : rev) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

StatusOr<HubRepoId> parse_hub_repo_id(std::string_view spec) {
  HubRepoId id;
  std::string_view repo = spec;
  if (auto at = spec.find('@'); at != std::string_view::npos) {
    repo = spec.substr(0, at);
    id.revision = std::string(spec.substr(at + 1));
    if (id.revision.empty() || id.revision.find("..") != std::string::npos ||
        id.revision.front() == '/') {
      return invalid_argument("model '" + std::string(spec) + "': bad revision after '@'");
    }
  }
  auto slash = repo.find('/');
  if (slash == std::string_view::npos || repo.find('/', slash + 1) != std::string_view::npos) {
    return invalid_argument("model '" + std::string(spec) +
                            "' is not 'org/name[@revision]', a local directory, or 'demo'");
  }
  id.org = std::string(repo.substr(0, slash));
  id.name = std::string(repo.substr(slash + 1));
  if (!valid_repo_part(id.org) || !valid_repo_part(id.name)) {
    return invalid_argument("model '" + std::string(spec) + "': invalid hub repository name");
  }
  return id;
}

fs::path hub_cache_dir() {
  if (const char* cache = std::getenv("HF_HUB_CACHE"); cache && *cache) return cache;
  if (const char* home = std::getenv("HF_HOME"); home && *home) return fs::path(home) / "hub";
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) {
    return fs::path(xdg) / "huggingface" / "hub";
  }
  const char* user_home = std::getenv("HOME");
  return fs::path(user_home && *user_home ? user_home : "/root") / ".cache" / "huggingface" / "hub";
}

fs::path hub_repo_dir(const fs::path& cache_dir, const HubRepoId& id) {
  return cache_dir / ("models--" + id.org + "--" + id.name);
}

std::optional<fs::path> find_cached_snapshot(const fs::path& cache_dir, const HubRepoId& id) {
  fs::path repo_dir = hub_repo_dir(cache_dir, id);
  std::string commit;
  if (is_commit_hash(id.revision)) {
    commit = id.revision;
  } else {
    std::ifstream ref(repo_dir / "refs" / id.revision);
    if (!ref || !std::getline(ref, commit)) return std::nullopt;
    while (!commit.empty() &&
           (commit.back() == '\n' || commit.back() == '\r' || commit.back() == ' ')) {
      commit.pop_back();
    }
    if (!is_commit_hash(commit)) return std::nullopt;
  }
  fs::path snapshot = repo_dir / "snapshots" / commit;
  std::error_code ec;
  if (!fs::is_regular_file(snapshot / "config.json", ec)) return std::nullopt;
  return snapshot;
}

StatusOr<ModelSource> resolve_model_source(std::string_view spec, const fs::path& cache_dir) {
  ModelSource source;
  source.spec = std::string(spec);
  if (spec == kDemoModel) {
    source.kind = ModelSource::Kind::kDemo;
    source.name = std::string(kDemoModel);
    return source;
  }
  std::error_code ec;
  fs::path as_path(spec);
  bool looks_like_path = spec.starts_with("/") || spec.starts_with("./") ||
                         spec.starts_with("../") || spec.starts_with("~") ||
                         fs::is_directory(as_path, ec);
  if (looks_like_path) {
    if (!fs::is_directory(as_path, ec)) {
      return not_found("model directory '" + std::string(spec) + "' does not exist");
    }
    if (!fs::is_regular_file(as_path / "config.json", ec)) {
      return invalid_argument("model directory '" + std::string(spec) +
                              "' has no config.json (is it a model directory?)");
    }
    source.kind = ModelSource::Kind::kLocalDir;
    source.dir = fs::absolute(as_path, ec);
    source.name = source.dir.filename().string();
    if (source.name.empty()) source.name = source.dir.parent_path().filename().string();
    return source;
  }
  DSOCR_ASSIGN_OR_RETURN(HubRepoId id, parse_hub_repo_id(spec));
  std::optional<fs::path> snapshot = find_cached_snapshot(cache_dir, id);
  if (!snapshot) {
    return not_found("model '" + std::string(spec) + "' is not in the local hub cache (" +
                     hub_repo_dir(cache_dir, id).string() +
                     "). Download it (dsocr download, or huggingface_hub), pass a local "
                     "directory, or try --model demo (tiny random weights, runs anywhere).");
  }
  source.kind = ModelSource::Kind::kHubCache;
  source.dir = *snapshot;
  source.name = id.repo();
  return source;
}

}  // namespace dsocr::weights

// Hugging Face hub downloads with libcurl into the cache layout `huggingface_hub` uses, so a model
// fetched by either tool is found by both:
//   <cache>/models--org--name/refs/<revision>          the commit a branch or tag points to
//   <cache>/models--org--name/blobs/<etag>             file contents, named by ETag (sha256 for
//   LFS) <cache>/models--org--name/snapshots/<commit>/<f>   relative symlinks into blobs/
//
// snapshot: GET {endpoint}/api/models/{repo}/revision/{rev} lists the files and the commit; each
// wanted file (*.json, *.safetensors) gets a HEAD for its ETag and size, and, unless its blob is
// already there, a GET (redirects followed) into blobs/<etag>.incomplete, resumed with a Range
// request after a dropped connection or a 5xx (bounded retries with backoff), verified against
// the ETag when it is a sha256 (LFS files), then renamed into place and linked.
//
// Environment (HubOptions::from_environment): HF_ENDPOINT, HF_TOKEN (sent only to the endpoint's
// host), HF_HUB_OFFLINE=1 (no network: the cache or an error), HF_HUB_CACHE / HF_HOME.
// Errors: 401/403 -> UNAUTHENTICATED (mentions HF_TOKEN), 404 -> NOT_FOUND, network and 5xx after
// retries -> UNAVAILABLE, checksum mismatch -> DATA_LOSS.
//
// Thread-safety: functions without shared state; two processes downloading the same file each
// write their own .incomplete and the second rename wins harmlessly.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "common/status.h"
#include "weights/model_source.h"

namespace dsocr::weights {

struct DownloadProgress {
  std::string file;
  uint64_t done = 0;
  uint64_t total = 0;  // 0 when unknown
};

struct HubOptions {
  std::string endpoint = "https://huggingface.co";
  std::string token;
  bool offline = false;
  std::filesystem::path cache_dir;
  int max_retries = 4;
  long connect_timeout_s = 15;
  long low_speed_timeout_s = 60;  // abort a transfer slower than 1 KB/s for this long (retried)
  std::function<void(const DownloadProgress&)> progress;

  static HubOptions from_environment();
};

// Files of a repository the server needs: configs, tokenizer files and weights.
bool is_wanted_model_file(std::string_view name);
// Only what a tokenizer needs (plus config.json).
bool is_tokenizer_file(std::string_view name);

// Downloads the files of `id` that `wanted` selects (those already in the cache are not fetched
// again) and returns the snapshot directory.
StatusOr<std::filesystem::path> download_snapshot(
    const HubRepoId& id, const HubOptions& options,
    const std::function<bool(std::string_view)>& wanted = is_wanted_model_file);

// resolve_model_source(), downloading a hub model that is not cached (unless offline).
StatusOr<ModelSource> resolve_or_download_model(
    std::string_view spec, const HubOptions& options,
    const std::function<bool(std::string_view)>& wanted = is_wanted_model_file);

// A progress reporter for command-line tools: a bar on a TTY, a line every few seconds otherwise.
std::function<void(const DownloadProgress&)> terminal_progress_reporter();

}  // namespace dsocr::weights

// VisionWorkers: a small pool of CPU threads that decode and preprocess images (and hash them)
// off the engine thread, with a bounded queue: a full queue answers at once ("busy"), it never
// grows without limit.
//
// Each worker does one image at a time single-threaded; OpenCV's own thread pool is switched off
// (cv::setNumThreads(0)) so that N workers use N cores, not N x cores. The engine's torch
// intra-op threads are sized by the engine with the workers' count in mind.
//
// Thread-safety: try_submit() may be called from any thread; results arrive through futures.
#pragma once

#include <cstddef>
#include <future>
#include <optional>
#include <string>

#include "common/status.h"
#include "common/thread_pool.h"
#include "vision/image_decoder.h"
#include "vision/preprocess.h"

namespace dsocr::vision {

struct VisionWorkersOptions {
  size_t threads = 1;
  size_t queue_capacity = 64;
  DecodeLimits limits;
};

// Decode + preprocess in one call (what a worker runs).
StatusOr<PreprocessedImage> decode_and_preprocess(std::string_view bytes,
                                                  const DecodeLimits& limits);

class VisionWorkers {
 public:
  explicit VisionWorkers(const VisionWorkersOptions& options);

  // nullopt when the queue is full. The bytes are moved into the task.
  std::optional<std::future<StatusOr<PreprocessedImage>>> try_submit(std::string bytes);
  // Runs any preparation task on the workers (e.g. a whole request: its images, then its
  // prompt); false when the queue is full.
  bool try_post(std::function<void()> task) { return pool_.try_submit(std::move(task)); }

  size_t queued() const { return pool_.queued(); }
  size_t threads() const { return pool_.num_threads(); }

 private:
  DecodeLimits limits_;
  ThreadPool pool_;
};

}  // namespace dsocr::vision

#include "vision/vision_workers.h"

#include <opencv2/core.hpp>
#include <utility>

namespace dsocr::vision {

StatusOr<PreprocessedImage> decode_and_preprocess(std::string_view bytes,
                                                  const DecodeLimits& limits) {
  DSOCR_ASSIGN_OR_RETURN(RgbImage image, decode_image(bytes, limits));
  return preprocess(image);
}

VisionWorkers::VisionWorkers(const VisionWorkersOptions& options)
    : limits_(options.limits),
      pool_("vision", std::max<size_t>(1, options.threads),
            std::max<size_t>(1, options.queue_capacity)) {
  cv::setNumThreads(0);  // one core per worker: OpenCV's parallel_for would oversubscribe
}

std::optional<std::future<StatusOr<PreprocessedImage>>> VisionWorkers::try_submit(
    std::string bytes) {
  return pool_.try_async([bytes = std::move(bytes), limits = limits_]() {
    return decode_and_preprocess(bytes, limits);
  });
}

}  // namespace dsocr::vision

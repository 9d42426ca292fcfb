#include "server/cli/vision_tools.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "common/files.h"
#include "vision/image_decoder.h"
#include "vision/preprocess.h"

namespace dsocr::cli {
using vision::decode_image;
using vision::preprocess;
using vision::PreprocessedImage;
using vision::RgbImage;
using vision::TilePlan;

namespace {

Status write_png(const RgbImage& image, const std::filesystem::path& path) {
  cv::Mat rgb(image.height, image.width, CV_8UC3, const_cast<uint8_t*>(image.pixels.data()));
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  if (!cv::imwrite(path.string(), bgr))
    return Status(StatusCode::kInternal, "cannot write " + path.string());
  return Status();
}

}  // namespace

Status write_preprocess_dump(const std::filesystem::path& image_path,
                             const std::filesystem::path& out_dir, bool write_decoded) {
  DSOCR_ASSIGN_OR_RETURN(std::string bytes, read_file_bytes(image_path));
  DSOCR_ASSIGN_OR_RETURN(RgbImage image, decode_image(bytes));
  PreprocessedImage pre = preprocess(image);
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec)
    return Status(StatusCode::kInternal, "cannot create " + out_dir.string() + ": " + ec.message());
  const TilePlan& p = pre.plan;
  char hash[17];
  std::snprintf(hash, sizeof(hash), "%016llx", static_cast<unsigned long long>(pre.content_hash));
  nlohmann::json plan = {{"width", p.width},
                         {"height", p.height},
                         {"grid", {p.grid_cols, p.grid_rows}},
                         {"tiles", p.tiles},
                         {"image_tokens", p.image_tokens},
                         {"global_size", {p.global_width, p.global_height}},
                         {"paste_offset", {p.paste_x, p.paste_y}},
                         {"content_hash", hash}};
  std::ofstream(out_dir / "plan.json") << plan.dump(2) << "\n";
  DSOCR_RETURN_IF_ERROR(write_png(pre.global_view, out_dir / "global.png"));
  if (write_decoded) DSOCR_RETURN_IF_ERROR(write_png(image, out_dir / "decoded.png"));
  for (size_t k = 0; k < pre.tiles.size(); ++k)
    DSOCR_RETURN_IF_ERROR(
        write_png(pre.tiles[k], out_dir / ("tile_" + std::to_string(k) + ".png")));
  return Status();
}

}  // namespace dsocr::cli

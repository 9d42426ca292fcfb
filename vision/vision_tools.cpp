#include "vision/vision_tools.h"

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>

#include "common/memory.h"
#include "vision/image_decoder.h"
#include "vision/pixel_values.h"
#include "vision/preprocess.h"
#include "vision/vision_model.h"
#include "weights/cpu_allocator.h"
#include "weights/loader.h"
#include "weights/model_config.h"
#include "weights/safetensors.h"

namespace dsocr::vision {
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

StatusOr<std::string> read_file_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found("cannot open " + path.string());
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

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

Status write_vision_dump(const VisionDumpOptions& options) {
  use_mmap_for_large_allocations();
  weights::install_caching_cpu_allocator();
  DSOCR_ASSIGN_OR_RETURN(at::ScalarType dtype, weights::parse_compute_dtype(options.dtype));
  at::Device device(options.device);
  DSOCR_ASSIGN_OR_RETURN(auto config,
                         weights::ModelConfig::from_file(options.model_dir / "config.json"));
  DSOCR_ASSIGN_OR_RETURN(auto state, weights::StateDict::open(options.model_dir));
  VisionModel model(config);
  DSOCR_RETURN_IF_ERROR(model->load(state, dtype, device));

  std::vector<PreprocessedImage> images;
  for (const auto& path : options.images) {
    DSOCR_ASSIGN_OR_RETURN(std::string bytes, read_file_bytes(path));
    StatusOr<RgbImage> image = decode_image(bytes);
    if (!image.ok()) return image.status().with_context(path.string());
    images.push_back(preprocess(*image));
  }
  std::vector<const PreprocessedImage*> pointers;
  for (const auto& image : images) pointers.push_back(&image);
  PixelBatch batch = make_pixel_batch(pointers, dtype, device);
  VisionTaps taps;
  std::vector<at::Tensor> blocks = model->encode(batch, &taps);

  std::map<std::string, at::Tensor> out;
  auto put = [&](const std::string& name, const at::Tensor& t) {
    if (t.defined()) out[name] = t.to(at::kCPU, at::kFloat).contiguous();
  };
  put("pixel_values", batch.global_views);
  put("pixel_values_local", batch.tiles);
  std::vector<int64_t> counts(batch.tiles_per_image.begin(), batch.tiles_per_image.end());
  out["num_local_patches"] = at::tensor(counts, at::kLong);
  put("sam_global", taps.sam_global);
  put("sam_tiles", taps.sam_tiles);
  put("encoder_global", taps.encoder_global);
  put("encoder_tiles", taps.encoder_tiles);
  put("projector_global", taps.projector_global);
  put("projector_tiles", taps.projector_tiles);
  for (size_t i = 0; i < blocks.size(); ++i) put("block_" + std::to_string(i), blocks[i]);
  return weights::write_safetensors(options.out_file, out, {{"dtype", options.dtype}});
}

}  // namespace dsocr::vision

#include "engine/model/vision_dump.h"

#include <map>

#include "common/files.h"
#include "common/memory.h"
#include "engine/model/pixel_values.h"
#include "engine/model/vision_model.h"
#include "vision/image_decoder.h"
#include "vision/preprocess.h"
#include "weights/cpu_allocator.h"
#include "weights/loader.h"
#include "weights/model_config.h"
#include "weights/safetensors.h"

namespace dsocr::model {

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

  std::vector<vision::PreprocessedImage> images;
  for (const auto& path : options.images) {
    DSOCR_ASSIGN_OR_RETURN(std::string bytes, read_file_bytes(path));
    StatusOr<vision::RgbImage> image = vision::decode_image(bytes);
    if (!image.ok()) return image.status().with_context(path.string());
    images.push_back(vision::preprocess(*image));
  }
  std::vector<const vision::PreprocessedImage*> pointers;
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

}  // namespace dsocr::model

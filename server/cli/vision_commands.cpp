// dsocr preprocess, dsocr encode: what the vision side makes of images, for parity tests and
// debugging.
#include <iostream>

#include "engine/model/vision_dump.h"
#include "server/cli/commands.h"
#include "server/cli/vision_tools.h"

namespace dsocr::cli {

// Writes what the model sees for one image (server/cli/vision_tools.h).
int cmd_preprocess(int argc, const char* const* argv) {
  std::string out;
  bool decoded = false;
  FlagSet flags("dsocr preprocess",
                "Decode and preprocess IMAGE as the official pipeline does; write DIR/plan.json, "
                "DIR/global.png and DIR/tile_{k}.png.");
  flags.add_string("out", &out, "output directory");
  flags.add_bool("decoded", &decoded, "also write decoded.png (after EXIF and RGB conversion)");
  if (auto rc = parse_command_flags(flags, argc, argv)) return *rc;
  if (out.empty() || flags.positionals().size() != 1) {
    std::cerr << "dsocr preprocess: usage: dsocr preprocess IMAGE --out DIR\n";
    return 2;
  }
  if (Status s = cli::write_preprocess_dump(flags.positionals()[0], out, decoded); !s.ok()) {
    std::cerr << "dsocr preprocess: " << s.message() << "\n";
    return 1;
  }
  return 0;
}

// Runs the vision encoder and writes every stage (parity tests, debugging).
int cmd_encode(int argc, const char* const* argv) {
  model::VisionDumpOptions options;
  std::string model, out;
  FlagSet flags("dsocr encode",
                "Run the vision encoder on IMAGE... and write pixel inputs, SAM, encoder and "
                "projector outputs and the assembled image blocks to one safetensors file.");
  flags.add_string("model", &model, "model directory");
  flags.add_string("out", &out, "output .safetensors file");
  flags.add_string("dtype", &options.dtype, "float32 or bfloat16");
  flags.add_string("device", &options.device, "cpu or cuda[:N]");
  if (auto rc = parse_command_flags(flags, argc, argv)) return *rc;
  if (model.empty() || out.empty() || flags.positionals().empty()) {
    std::cerr << "dsocr encode: usage: dsocr encode --model DIR --out FILE IMAGE...\n";
    return 2;
  }
  options.model_dir = model;
  options.out_file = out;
  for (const auto& p : flags.positionals()) options.images.emplace_back(p);
  if (Status s = model::write_vision_dump(options); !s.ok()) {
    std::cerr << "dsocr encode: " << s.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace dsocr::cli

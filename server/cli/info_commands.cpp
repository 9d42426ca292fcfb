// dsocr version, dsocr info: what this build is, what it runs on, and where --model resolves.
#include <iostream>

#include <nlohmann/json.hpp>

#include "common/version.h"
#include "engine/device.h"
#include "engine/model_resolution.h"
#include "server/cli/commands.h"

namespace dsocr::cli {

int cmd_version(int, const char* const*) {
  std::cout << build_summary() << "\n";
  return 0;
}

int cmd_info(int argc, const char* const* argv) {
  std::string model;
  bool as_json = false;
  FlagSet flags("dsocr info", "Print the build, libtorch, compute devices and model location.");
  flags.add_string("model", &model, "also resolve this --model value");
  flags.add_bool("json", &as_json, "print one JSON object");
  if (auto rc = parse_command_flags(flags, argc, argv)) return *rc;
  engine::DeviceInfo info = engine::probe_devices();
  nlohmann::json out = {{"version", version()},
                        {"build", build_summary()},
                        {"torch_version", info.torch_version},
                        {"torch_has_cuda", info.torch_has_cuda},
                        {"dsocr_cuda_kernels", info.dsocr_cuda_kernels},
                        {"intra_op_threads", info.intra_op_threads},
                        {"cuda_devices", nlohmann::json::array()}};
  for (const auto& d : info.cuda_devices) {
    out["cuda_devices"].push_back({{"index", d.index},
                                   {"name", d.name},
                                   {"compute_capability", std::to_string(d.compute_major) + "." +
                                                              std::to_string(d.compute_minor)},
                                   {"total_memory_bytes", d.total_memory_bytes}});
  }
  int rc = 0;
  if (!model.empty()) {
    // Only looks: nothing is downloaded or built to answer.
    auto located = engine::locate_model(model);
    if (located.ok()) {
      out["model"] = {
          {"spec", located->spec}, {"name", located->name}, {"dir", located->dir.string()}};
    } else {
      out["model"] = {{"spec", model}, {"error", located.status().message()}};
      rc = 1;
    }
  }
  if (as_json) {
    std::cout << out.dump(2) << "\n";
  } else {
    std::cout << info.summary() << "\n" << build_summary() << "\n";
    if (out.contains("model")) {
      const auto& m = out["model"];
      std::cout << "model " << model << ": "
                << (m.contains("error")                   ? m["error"].get<std::string>()
                    : m["dir"].get<std::string>().empty() ? std::string("built-in demo model")
                                                          : m["dir"].get<std::string>())
                << "\n";
    }
  }
  return rc;
}

}  // namespace dsocr::cli

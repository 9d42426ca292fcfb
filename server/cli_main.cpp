// dsocr: the command-line tool. One binary, subcommands:
//   dsocr info [--model M] [--json]   build, libtorch, devices, and where --model resolves
//   dsocr version
// Later issues add make-model, tokenize, preprocess, generate, ocr and bench here, each as one
// entry of kCommands.
#include <cstdio>
#include <functional>
#include <iostream>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/flags.h"
#include "common/version.h"
#include "engine/device.h"
#include "weights/model_source.h"

namespace {

using namespace dsocr;

int cmd_version(int argc, const char* const* argv) {
  std::cout << build_summary() << "\n";
  return 0;
}

int cmd_info(int argc, const char* const* argv) {
  std::string model;
  bool as_json = false;
  FlagSet flags("dsocr info", "Print the build, libtorch, compute devices and model location.");
  flags.add_string("model", &model, "also resolve this --model value");
  flags.add_bool("json", &as_json, "print one JSON object");
  if (Status s = flags.parse(argc, argv, 2); !s.ok()) {
    std::cerr << "dsocr info: " << s.message() << "\n";
    return 2;
  }
  if (flags.help_requested()) {
    std::cout << flags.usage();
    return 0;
  }
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
    auto source = weights::resolve_model_source(model, weights::hub_cache_dir());
    if (source.ok()) {
      out["model"] = {
          {"spec", source->spec}, {"name", source->name}, {"dir", source->dir.string()}};
    } else {
      out["model"] = {{"spec", model}, {"error", source.status().message()}};
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

struct Command {
  std::string_view name;
  std::string_view summary;
  std::function<int(int, const char* const*)> run;
};

const Command kCommands[] = {
    {"info", "build, libtorch, compute devices, model location", cmd_info},
    {"version", "print the version", cmd_version},
};

void print_usage(std::FILE* to) {
  std::fprintf(to,
               "Usage: dsocr <command> [flags]   (dsocr <command> --help for its flags)\n\n"
               "Commands:\n");
  for (const auto& c : kCommands) {
    std::fprintf(to, "  %-10.*s %.*s\n", static_cast<int>(c.name.size()), c.name.data(),
                 static_cast<int>(c.summary.size()), c.summary.data());
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    print_usage(stderr);
    return 2;
  }
  std::string_view name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    print_usage(stdout);
    return 0;
  }
  if (name == "--version") return cmd_version(argc, argv);
  for (const auto& c : kCommands) {
    if (c.name == name) {
      try {
        return c.run(argc, argv);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "dsocr %s: fatal: %s\n", argv[1], e.what());
        return 1;
      }
    }
  }
  std::fprintf(stderr, "dsocr: unknown command '%s'\n\n", argv[1]);
  print_usage(stderr);
  return 2;
}

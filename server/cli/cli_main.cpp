// dsocr: the command-line tool. One binary, subcommands:
//   dsocr info [--model M] [--json]   build, libtorch, devices, and where --model resolves
//   dsocr tokenize --model M [--decode]   JSON Lines: strings -> id arrays (or back)
//   dsocr make-model --preset P --out DIR [--seed N] [--dtype bf16|f32] [--tokenizer-dir D]
//   dsocr preprocess IMAGE --out DIR   what the model sees: plan.json, global.png, tile_k.png
//   dsocr encode --model DIR --out FILE IMAGE...   vision encoder stages as safetensors
//   dsocr generate --model M [--image FILE]... --prompt TEXT [...]   one offline request
//   dsocr bench --model M [--image FILE]... --requests N --concurrency C --max-tokens M [--json]
//   dsocr ocr FILE.pdf|IMAGE... --out DIR [--server URL] [--concurrency N]   documents to markdown
//   dsocr download ORG/NAME[@REV] [--tokenizer-only]
//   dsocr version
// Each subcommand is one entry of kCommands; its code is in the file server/cli/commands.h names.
// --model takes what dsocr-server's does (demo, a directory, a hub id: engine/model_resolution.h),
// except for `encode`, which reads a model directory.
#include <cstdio>
#include <functional>
#include <iostream>
#include <optional>
#include <string_view>

#include "server/cli/commands.h"

namespace dsocr::cli {

std::optional<int> parse_command_flags(FlagSet& flags, int argc, const char* const* argv,
                                       const char* extra_help) {
  if (Status s = flags.parse(argc, argv, 2); !s.ok()) {
    std::cerr << "dsocr " << argv[1] << ": " << s.message() << "\n";
    return 2;
  }
  if (flags.help_requested()) {
    std::cout << flags.usage() << extra_help;
    return 0;
  }
  return std::nullopt;
}

}  // namespace dsocr::cli

namespace {

using namespace dsocr::cli;

struct Command {
  std::string_view name;
  std::string_view summary;
  std::function<int(int, const char* const*)> run;
};

const Command kCommands[] = {
    {"bench", "offline engine throughput: pages/s, tokens/s, TTFT, ITL", cmd_bench},
    {"download", "fetch a model from the Hugging Face hub into its cache", cmd_download},
    {"encode", "run the vision encoder, dump every stage (safetensors)", cmd_encode},
    {"generate", "one offline request through the engine (greedy by default)", cmd_generate},
    {"info", "build, libtorch, compute devices, model location", cmd_info},
    {"make-model", "write a random-weight checkpoint (tiny, small, full)", cmd_make_model},
    {"ocr", "PDFs and images to markdown, boxes and page files (resumable)", cmd_ocr},
    {"preprocess", "show what the model sees of an image (plan.json + PNGs)", cmd_preprocess},
    {"tokenize", "JSON Lines text <-> token ids with a model's tokenizer", cmd_tokenize},
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

// dsocr download, dsocr make-model, dsocr tokenize: getting a model's files, making random-weight
// checkpoints, and its tokenizer on JSON Lines.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "common/version.h"
#include "engine/model_resolution.h"
#include "server/cli/commands.h"
#include "tokenizer/tokenizer.h"
#include "weights/hub_client.h"
#include "weights/make_model.h"
#include "weights/model_source.h"

namespace dsocr::cli {

// Reads JSON Lines from stdin: each line a JSON string, answered by the JSON array of its ids
// (no special tokens added); with --decode each line an array of ids, answered by the decoded
// string (special tokens kept). A malformed line stops with its line number (exit 1).
int cmd_tokenize(int argc, const char* const* argv) {
  std::string model;
  bool decode = false;
  FlagSet flags(
      "dsocr tokenize",
      "Tokenize JSON Lines from stdin with a model's tokenizer.json (no weights needed).");
  flags.add_string("model", &model,
                   "a directory holding tokenizer.json, a hub id (its tokenizer files are "
                   "downloaded when not cached) or 'demo'");
  flags.add_bool("decode", &decode, "read id arrays, write strings");
  if (auto rc = parse_command_flags(flags, argc, argv)) return *rc;
  if (model.empty()) {
    std::cerr << "dsocr tokenize: --model is required\n";
    return 2;
  }
  auto resolved = engine::resolve_model(model, {.tokenizer_only = true});
  if (!resolved.ok()) {
    std::cerr << "dsocr tokenize: " << resolved.status().message() << "\n";
    return 1;
  }
  auto tokenizer = tokenizer::Tokenizer::from_file(resolved->dir / "tokenizer.json");
  if (!tokenizer.ok()) {
    std::cerr << "dsocr tokenize: " << tokenizer.status().message() << "\n";
    return 1;
  }
  std::ios::sync_with_stdio(false);
  std::string line, out;
  for (size_t line_no = 1; std::getline(std::cin, line); ++line_no) {
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    out.clear();
    if (!decode && j.is_string()) {
      std::vector<int32_t> ids = (*tokenizer)->encode(j.get_ref<const std::string&>());
      out.push_back('[');
      for (size_t i = 0; i < ids.size(); ++i) {
        if (i) out.push_back(',');
        out += std::to_string(ids[i]);
      }
      out.push_back(']');
    } else if (decode && j.is_array() && std::all_of(j.begin(), j.end(), [](const auto& v) {
                 return v.is_number_integer();
               })) {
      std::vector<int32_t> ids = j.get<std::vector<int32_t>>();
      // ASCII-only output: no consumer can mistake U+2028 or U+0085 in the text for a line end.
      out = nlohmann::json((*tokenizer)->decode(ids)).dump(-1, ' ', /*ensure_ascii=*/true);
    } else {
      std::cerr << "dsocr tokenize: line " << line_no << ": expected "
                << (decode ? "a JSON array of integer ids" : "a JSON string") << "\n";
      return 1;
    }
    out.push_back('\n');
    std::cout << out;
  }
  std::cout.flush();
  return 0;
}

// Writes a random-weight checkpoint with the official structure (weights/make_model.h).
int cmd_make_model(int argc, const char* const* argv) {
  weights::MakeModelOptions options;
  std::string out, dtype = "bf16", tokenizer_dir = engine::model_files_dir().string();
  int64_t seed = 0;
  FlagSet flags(
      "dsocr make-model",
      "Write a random-weight DeepSeek-OCR-2 checkpoint (official tensor names and layout).");
  flags.add_string("preset", &options.preset, "tiny (unit tests), small (CPU benchmarks) or full");
  flags.add_int("seed", &seed, "random seed (same seed, same bytes)");
  flags.add_string("dtype", &dtype, "bf16 or f32");
  flags.add_string("out", &out, "output directory");
  flags.add_string("tokenizer-dir", &tokenizer_dir,
                   "directory whose tokenizer.json (and config files) are copied; empty: none");
  if (auto rc = parse_command_flags(flags, argc, argv)) return *rc;
  if (out.empty()) {
    std::cerr << "dsocr make-model: --out is required\n";
    return 2;
  }
  if (dtype != "bf16" && dtype != "f32") {
    std::cerr << "dsocr make-model: --dtype must be bf16 or f32\n";
    return 2;
  }
  options.seed = static_cast<uint64_t>(seed);
  options.dtype = dtype == "bf16" ? weights::DType::kBF16 : weights::DType::kF32;
  options.out = out;
  options.tokenizer_dir = tokenizer_dir;
  const bool tty = isatty(STDERR_FILENO);
  auto last_report = std::chrono::steady_clock::now();
  auto progress = [&](uint64_t done, uint64_t total, const std::string& name) {
    auto now = std::chrono::steady_clock::now();
    if (done != total && now - last_report < std::chrono::milliseconds(tty ? 100 : 5000)) return;
    last_report = now;
    int pct = total ? static_cast<int>(100 * done / total) : 100;
    if (tty) {
      int bar = pct * 30 / 100;
      std::fprintf(stderr, "\r[%-30s] %3d%%  %.2f / %.2f GB", std::string(bar, '#').c_str(), pct,
                   done / 1e9, total / 1e9);
      if (done == total) std::fprintf(stderr, "\n");
    } else {
      std::fprintf(stderr, "make-model: %d%% (%.2f / %.2f GB), at %s\n", pct, done / 1e9,
                   total / 1e9, name.c_str());
    }
  };
  if (Status s = weights::make_model(options, progress); !s.ok()) {
    std::cerr << "dsocr make-model: " << s.message() << "\n";
    return 1;
  }
  std::cout << "wrote " << options.preset << " model (seed " << seed << ", " << dtype << ") to "
            << out << "\n";
  return 0;
}

// Fetches a hub model into the Hugging Face cache and prints its snapshot directory.
int cmd_download(int argc, const char* const* argv) {
  bool tokenizer_only = false;
  FlagSet flags("dsocr download", "Download a model (org/name[@revision]) into the hub cache.");
  flags.add_bool("tokenizer-only", &tokenizer_only, "only config.json and the tokenizer files");
  if (auto rc = parse_command_flags(
          flags, argc, argv,
          "Environment: HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE, HF_HOME, HF_HUB_CACHE\n"))
    return *rc;
  if (flags.positionals().size() != 1) {
    std::cerr << "dsocr download: give exactly one model id (org/name[@revision])\n";
    return 2;
  }
  auto id = weights::parse_hub_repo_id(flags.positionals()[0]);
  if (!id.ok()) {
    std::cerr << "dsocr download: " << id.status().message() << "\n";
    return 2;
  }
  auto hub = weights::HubOptions::from_environment();
  hub.progress = weights::terminal_progress_reporter();
  auto dir = weights::download_snapshot(
      *id, hub, tokenizer_only ? weights::is_tokenizer_file : weights::is_wanted_model_file);
  if (!dir.ok()) {
    std::cerr << "dsocr download: " << dir.status().message() << "\n";
    return 1;
  }
  std::cout << dir->string() << "\n";
  return 0;
}

}  // namespace dsocr::cli

// dsocr: the command-line tool. One binary, subcommands:
//   dsocr info [--model M] [--json]   build, libtorch, devices, and where --model resolves
//   dsocr tokenize --model M [--decode]   JSON Lines: strings -> id arrays (or back)
//   dsocr make-model --preset P --out DIR [--seed N] [--dtype bf16|f32] [--tokenizer-dir D]
//   dsocr preprocess IMAGE --out DIR   what the model sees: plan.json, global.png, tile_k.png
//   dsocr encode --model DIR --out FILE IMAGE...   vision encoder stages as safetensors
//   dsocr generate --model DIR [--image FILE]... --prompt TEXT [...]   one offline request
//   dsocr bench --model DIR [--image FILE]... --requests N --concurrency C --max-tokens M [--json]
//   dsocr version
// Each subcommand is one entry of kCommands.
#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>
#include <optional>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/flags.h"
#include "common/version.h"
#include "engine/device.h"
#include "engine/engine.h"
#include "tokenizer/tokenizer.h"
#include "common/files.h"
#include "engine/model/vision_dump.h"
#include "server/cli/vision_tools.h"
#include "weights/hub_client.h"
#include "weights/make_model.h"
#include "weights/model_source.h"
#include "weights/safetensors_format.h"

namespace {

using namespace dsocr;

// Parses a subcommand's flags. Returns the exit code when the command should stop here (--help:
// 0, bad flags: 2), nullopt when it should run.
std::optional<int> parse_command_flags(FlagSet& flags, int argc, const char* const* argv,
                                       const char* extra_help = "") {
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

// Reads JSON Lines from stdin: each line a JSON string, answered by the JSON array of its ids
// (no special tokens added); with --decode each line an array of ids, answered by the decoded
// string (special tokens kept). A malformed line stops with its line number (exit 1).
int cmd_tokenize(int argc, const char* const* argv) {
  std::string model;
  bool decode = false;
  FlagSet flags(
      "dsocr tokenize",
      "Tokenize JSON Lines from stdin with a model's tokenizer.json (no weights needed).");
  flags.add_string("model", &model, "a directory holding tokenizer.json, or a cached hub id");
  flags.add_bool("decode", &decode, "read id arrays, write strings");
  if (auto rc = parse_command_flags(flags, argc, argv)) return *rc;
  if (model.empty()) {
    std::cerr << "dsocr tokenize: --model is required\n";
    return 2;
  }
  std::filesystem::path dir = model;
  if (!std::filesystem::is_directory(dir)) {
    auto hub = weights::HubOptions::from_environment();
    hub.progress = weights::terminal_progress_reporter();
    auto source = weights::resolve_or_download_model(model, hub, weights::is_tokenizer_file);
    if (!source.ok()) {
      std::cerr << "dsocr tokenize: " << source.status().message() << "\n";
      return 1;
    }
    dir = source->dir;
  }
  auto tokenizer = tokenizer::Tokenizer::from_file(dir / "tokenizer.json");
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
  std::string out, dtype = "bf16", tokenizer_dir = dsocr::built_model_files_dir();
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

// Writes `rows` float32 logits rows as one safetensors tensor "logits" [rows, vocab].
Status write_logits(const std::string& path, const std::vector<float>& data, int64_t rows) {
  std::vector<weights::TensorInfo> tensors(1);
  tensors[0].name = "logits";
  tensors[0].dtype = weights::DType::kF32;
  tensors[0].shape = {rows, rows ? static_cast<int64_t>(data.size()) / rows : 0};
  std::string header = weights::make_safetensors_header(&tensors, {});
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return not_found("cannot create " + path);
  bool ok = std::fwrite(header.data(), 1, header.size(), f) == header.size() &&
            std::fwrite(data.data(), sizeof(float), data.size(), f) == data.size();
  ok = (std::fclose(f) == 0) && ok;
  return ok ? Status() : Status(StatusCode::kInternal, "cannot write " + path);
}

// Appends each file's bytes to `out`; false (after saying why) when one cannot be read.
bool read_images(const char* command, const std::vector<std::string>& paths,
                 std::vector<std::string>* out) {
  for (const auto& path : paths) {
    auto bytes = read_file_bytes(path);
    if (!bytes.ok()) {
      std::cerr << "dsocr " << command << ": " << bytes.status().message() << "\n";
      return false;
    }
    out->push_back(std::move(bytes).value());
  }
  return true;
}

// One offline request through the engine (the code path the server uses).
int cmd_generate(int argc, const char* const* argv) {
  engine::EngineOptions options;
  engine::GenerateRequest request;
  std::string model, dump_logits;
  std::vector<std::string> images;
  int64_t max_tokens = 0, top_k = 0, ngram_size = 20, ngram_window = 90, seed = -1, blocks = 0;
  double temperature = 0.0, top_p = 1.0;
  bool no_ngram = false, as_json = false;
  options.dtype = "auto";
  FlagSet flags(
      "dsocr generate",
      "Run one request (prompt + images) through the engine and print the generated text.");
  flags.add_string("model", &model, "model directory");
  flags.add_repeated("image", &images, "image file (repeatable, in prompt order)");
  flags.add_string("prompt", &request.prompt,
                   "prompt text, taken literally ('<image>' marks images)");
  flags.add_int("max-tokens", &max_tokens, "generation limit (0: up to the context length)");
  flags.add_string("dtype", &options.dtype,
                   "auto (float32 on CPU, bfloat16 on GPU), float32, bfloat16");
  flags.add_string("device", &options.device, "auto, cpu, cuda or cuda:N");
  flags.add_bool("no-ngram", &no_ngram, "disable the no-repeat n-gram processor");
  flags.add_int("ngram-size", &ngram_size, "no-repeat n-gram size");
  flags.add_int("ngram-window", &ngram_window, "no-repeat n-gram window");
  flags.add_double("temperature", &temperature, "0 = greedy");
  flags.add_double("top-p", &top_p, "nucleus sampling");
  flags.add_int("top-k", &top_k, "top-k sampling (0: off)");
  flags.add_int("seed", &seed, "sampling seed (-1: random)");
  flags.add_int("num-kv-blocks", &blocks,
                "KV cache blocks (0: enough for one full-length request)");
  flags.add_bool("json", &as_json,
                 "print one JSON object (text, ids, prompt_ids, image_tokens, finish_reason)");
  flags.add_string("dump-logits", &dump_logits,
                   "write the raw logits of every generated token (safetensors)");
  if (auto rc = parse_command_flags(flags, argc, argv)) return *rc;
  if (model.empty()) {
    std::cerr << "dsocr generate: --model is required\n";
    return 2;
  }
  options.model_dir = model;
  options.vision_threads = 1;
  options.scheduler.max_num_seqs = 1;
  options.num_kv_blocks = blocks;
  if (blocks == 0)
    options.num_kv_blocks =
        (options.scheduler.max_model_len + options.block_size - 1) / options.block_size;
  auto& sp = request.sampling;
  sp.max_tokens = max_tokens;
  sp.temperature = temperature;
  sp.top_p = top_p;
  sp.top_k = top_k;
  if (seed >= 0) sp.seed = static_cast<uint64_t>(seed);
  sp.ngram_size = no_ngram ? 0 : ngram_size;
  sp.ngram_window = ngram_window;
  request.return_logits = !dump_logits.empty();
  request.request_id = "generate";
  if (!read_images("generate", images, &request.images)) return 1;
  auto engine = engine::Engine::create(options);
  if (!engine.ok()) {
    std::cerr << "dsocr generate: " << engine.status().message() << "\n";
    return 1;
  }
  auto stream = (*engine)->submit(std::move(request));
  if (!stream.ok()) {
    std::cerr << "dsocr generate: " << stream.status().message() << "\n";
    return 1;
  }
  std::vector<int32_t> ids;
  std::vector<float> logits;
  engine::StreamEvent last;
  while (true) {
    auto event = (*stream)->next(std::chrono::milliseconds(1000));
    if (!event) continue;
    ids.insert(ids.end(), event->token_ids.begin(), event->token_ids.end());
    logits.insert(logits.end(), event->logits.begin(), event->logits.end());
    if (event->finished) {
      last = std::move(*event);
      break;
    }
  }
  if (!last.error.ok()) {
    std::cerr << "dsocr generate: " << last.error.message() << "\n";
    return 1;
  }
  std::vector<int32_t> text_ids = ids;
  if (last.finish_reason == engine::FinishReason::kStop && !text_ids.empty()) text_ids.pop_back();
  const std::string text = (*engine)->detokenize(text_ids);
  if (!dump_logits.empty()) {
    if (Status s = write_logits(dump_logits, logits, static_cast<int64_t>(ids.size())); !s.ok()) {
      std::cerr << "dsocr generate: " << s.message() << "\n";
      return 1;
    }
  }
  const std::string reason(engine::finish_reason_name(last.finish_reason));
  if (as_json) {
    nlohmann::json out = {{"text", text},
                          {"ids", ids},
                          {"prompt_ids", last.prompt_ids},
                          {"image_tokens", last.usage.image_tokens},
                          {"finish_reason", reason}};
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else {
    std::cout << text << "\n";
  }
  return 0;
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5))];
}

// Offline throughput through the engine's public API: N requests cycling over the images, at most
// C in flight, each generating exactly max-tokens tokens (EOS ignored).
int cmd_bench(int argc, const char* const* argv) {
  engine::EngineOptions options;
  std::string model, prompt = "<|grounding|>Convert the document to markdown.";
  std::vector<std::string> images;
  int64_t requests = 16, concurrency = 16, max_tokens = 64, batched_tokens = 2048, blocks = 0;
  bool as_json = false, prefix_caching = true;
  FlagSet flags("dsocr bench", "Offline throughput of the engine (pages/s, tokens/s, TTFT, ITL).");
  flags.add_string("model", &model, "model directory");
  flags.add_repeated("image", &images, "page image (repeatable; requests cycle over them)");
  flags.add_string("prompt", &prompt, "prompt text (the image markers are added)");
  flags.add_int("requests", &requests, "number of requests");
  flags.add_int("concurrency", &concurrency, "requests in flight at most");
  flags.add_int("max-tokens", &max_tokens, "tokens generated per request");
  flags.add_int("max-num-batched-tokens", &batched_tokens, "scheduler token budget per step");
  flags.add_int("num-kv-blocks", &blocks, "KV cache blocks (0: sized from memory)");
  flags.add_string("dtype", &options.dtype, "auto, float32, bfloat16");
  flags.add_string("device", &options.device, "auto, cpu, cuda[:N]");
  flags.add_bool("prefix-caching", &prefix_caching, "share KV of identical prompt prefixes");
  flags.add_bool("json", &as_json, "print one JSON object");
  if (auto rc = parse_command_flags(flags, argc, argv)) return *rc;
  if (model.empty() || requests < 1 || concurrency < 1 || max_tokens < 1) {
    std::cerr << "dsocr bench: --model, --requests >= 1, --concurrency >= 1, --max-tokens >= 1\n";
    return 2;
  }
  std::vector<std::string> pages;
  if (!read_images("bench", images, &pages)) return 1;
  options.model_dir = model;
  options.num_kv_blocks = blocks;
  options.prefix_caching = prefix_caching;
  options.scheduler.max_num_seqs = concurrency;
  options.scheduler.max_num_batched_tokens = batched_tokens;
  auto engine = engine::Engine::create(options);
  if (!engine.ok()) {
    std::cerr << "dsocr bench: " << engine.status().message() << "\n";
    return 1;
  }
  using Clock = std::chrono::steady_clock;
  struct Live {
    std::shared_ptr<engine::RequestStream> stream;
    Clock::time_point start, last;
    bool first = true;
  };
  std::vector<double> ttft, itl;
  int64_t submitted = 0, finished = 0, output_tokens = 0, prompt_tokens = 0;
  std::vector<Live> live;
  const auto t0 = Clock::now();
  while (finished < requests) {
    while (static_cast<int64_t>(live.size()) < concurrency && submitted < requests) {
      engine::GenerateRequest r;
      r.request_id = "bench-" + std::to_string(submitted);
      r.prompt = prompt;
      if (!pages.empty()) r.images.push_back(pages[submitted % pages.size()]);
      r.sampling.max_tokens = max_tokens;
      r.sampling.ignore_eos = true;
      auto s = (*engine)->submit(std::move(r));
      if (!s.ok()) {
        std::cerr << "dsocr bench: " << s.status().message() << "\n";
        return 1;
      }
      live.push_back({*s, Clock::now(), {}, true});
      ++submitted;
    }
    for (size_t i = 0; i < live.size();) {
      auto e = live[i].stream->next(std::chrono::milliseconds(1));
      if (e) {
        const auto now = Clock::now();
        if (!e->token_ids.empty()) {
          const double ms = std::chrono::duration<double, std::milli>(
                                now - (live[i].first ? live[i].start : live[i].last))
                                .count();
          (live[i].first ? ttft : itl).push_back(ms);
          live[i].first = false;
          live[i].last = now;
          output_tokens += static_cast<int64_t>(e->token_ids.size());
        }
        if (e->finished) {
          if (!e->error.ok()) {
            std::cerr << "dsocr bench: " << e->error.message() << "\n";
            return 1;
          }
          prompt_tokens += e->usage.prompt_tokens;
          ++finished;
          live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
          continue;
        }
      }
      ++i;
    }
  }
  const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
  nlohmann::json out = {{"requests", requests},
                        {"concurrency", concurrency},
                        {"wall_s", wall},
                        {"pages_per_s", requests / wall},
                        {"output_tokens_per_s", output_tokens / wall},
                        {"prompt_tokens", prompt_tokens},
                        {"ttft_ms",
                         {{"p50", percentile(ttft, 0.5)},
                          {"p90", percentile(ttft, 0.9)},
                          {"p99", percentile(ttft, 0.99)}}},
                        {"itl_ms",
                         {{"p50", percentile(itl, 0.5)},
                          {"p90", percentile(itl, 0.9)},
                          {"p99", percentile(itl, 0.99)}}}};
  if (as_json) {
    std::cout << out.dump() << "\n";
  } else {
    std::cout << out.dump(2) << "\n";
  }
  return 0;
}

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

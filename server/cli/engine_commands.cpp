// dsocr generate, dsocr bench: requests through the engine's public API, as the server sends them
// (generate: one request, its text or JSON; bench: offline throughput).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <optional>

#include <nlohmann/json.hpp>

#include "common/files.h"
#include "engine/engine.h"
#include "engine/engine_flags.h"
#include "engine/model_resolution.h"
#include "server/cli/commands.h"
#include "weights/safetensors_format.h"

namespace dsocr::cli {
namespace {

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

// The engine options for `flags`, with --model resolved (downloaded or built when needed); exits
// like the command should on failure (nullopt after saying why).
std::optional<engine::EngineOptions> engine_options(const char* command,
                                                    const engine::EngineFlags& flags) {
  auto model = engine::resolve_model(flags.model);
  if (!model.ok()) {
    std::cerr << "dsocr " << command << ": " << model.status().message() << "\n";
    return std::nullopt;
  }
  return flags.to_options(model->dir);
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5))];
}

}  // namespace

// One offline request through the engine (the code path the server uses).
int cmd_generate(int argc, const char* const* argv) {
  using engine::EngineFlag;
  engine::EngineFlags engine_flags;
  engine_flags.model.clear();  // required
  engine::GenerateRequest request;
  std::string dump_logits;
  std::vector<std::string> images;
  int64_t max_tokens = 0, top_k = 0, ngram_size = 20, ngram_window = 90, seed = -1;
  double temperature = 0.0, top_p = 1.0;
  bool no_ngram = false, as_json = false;
  FlagSet flags(
      "dsocr generate",
      "Run one request (prompt + images) through the engine and print the generated text.");
  add_engine_flags(&flags, &engine_flags, {EngineFlag::kModel}, engine::EngineFlagEnv::kWithout);
  flags.add_repeated("image", &images, "image file (repeatable, in prompt order)");
  flags.add_string("prompt", &request.prompt,
                   "prompt text, taken literally ('<image>' marks images)");
  flags.add_int("max-tokens", &max_tokens, "generation limit (0: up to the context length)");
  add_engine_flags(&flags, &engine_flags,
                   {EngineFlag::kDtype, EngineFlag::kWeights, EngineFlag::kKvCacheDtype,
                    EngineFlag::kDevice, EngineFlag::kCudaGraphs},
                   engine::EngineFlagEnv::kWithout);
  flags.add_bool("no-ngram", &no_ngram, "disable the no-repeat n-gram processor");
  flags.add_int("ngram-size", &ngram_size, "no-repeat n-gram size");
  flags.add_int("ngram-window", &ngram_window, "no-repeat n-gram window");
  flags.add_double("temperature", &temperature, "0 = greedy");
  flags.add_double("top-p", &top_p, "nucleus sampling");
  flags.add_int("top-k", &top_k, "top-k sampling (0: off)");
  flags.add_int("seed", &seed, "sampling seed (-1: random)");
  add_engine_flags(
      &flags, &engine_flags,
      {{EngineFlag::kNumKvBlocks, "KV cache blocks (0: enough for one full-length request)"},
       EngineFlag::kCpuMemoryBudget},
      engine::EngineFlagEnv::kWithout);
  flags.add_bool("json", &as_json,
                 "print one JSON object (text, ids, prompt_ids, image_tokens, finish_reason)");
  flags.add_string("dump-logits", &dump_logits,
                   "write the raw logits of every generated token (safetensors)");
  if (auto rc = parse_command_flags(flags, argc, argv)) return *rc;
  if (engine_flags.model.empty()) {
    std::cerr << "dsocr generate: --model is required\n";
    return 2;
  }
  // One request at a time: one sequence, one vision thread, and (by default) just the KV cache a
  // full-length request needs instead of a share of free memory.
  engine_flags.max_num_seqs = 1;
  engine_flags.vision_threads = 1;
  auto options = engine_options("generate", engine_flags);
  if (!options) return 1;
  if (options->num_kv_blocks == 0)
    options->num_kv_blocks =
        (options->scheduler.max_model_len + options->block_size - 1) / options->block_size;
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
  std::vector<std::string> image_bytes;
  if (!read_images("generate", images, &image_bytes)) return 1;
  request.images.assign(std::make_move_iterator(image_bytes.begin()),
                        std::make_move_iterator(image_bytes.end()));
  auto engine = engine::Engine::create(*options);
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

// Where the timed part of a bench run went, from the engine's counters (after - before).
nlohmann::json engine_stats_json(const engine::EngineStats& before,
                                 const engine::EngineStats& after, double wall_s) {
  const uint64_t steps = after.steps - before.steps;
  return {{"steps", steps},
          {"ms_per_step", steps > 0 ? 1000.0 * wall_s / static_cast<double>(steps) : 0},
          {"images_encoded", after.images_encoded - before.images_encoded},
          {"image_cache_hits", after.image_cache_hits - before.image_cache_hits},
          {"vision_encode_s", after.vision_encode_seconds - before.vision_encode_seconds},
          {"kv_blocks", after.kv_blocks},
          {"step_failures", after.step_failures - before.step_failures}};
}

// Offline throughput through the engine's public API: N requests cycling over the images, at most
// C in flight, each generating max-tokens tokens (EOS ignored unless --ignore-eos=false).
int cmd_bench(int argc, const char* const* argv) {
  using engine::EngineFlag;
  engine::EngineFlags engine_flags;
  engine_flags.model.clear();  // required
  std::string prompt = "<|grounding|>Convert the document to markdown.";
  std::vector<std::string> images;
  int64_t requests = 16, concurrency = 16, max_tokens = 64;
  bool as_json = false;
  bool ignore_eos = true;
  FlagSet flags("dsocr bench", "Offline throughput of the engine (pages/s, tokens/s, TTFT, ITL).");
  add_engine_flags(&flags, &engine_flags, {EngineFlag::kModel}, engine::EngineFlagEnv::kWithout);
  flags.add_repeated("image", &images, "page image (repeatable; requests cycle over them)");
  std::vector<std::string> warmup_images;
  flags.add_repeated("warmup-image", &warmup_images,
                     "a page run to the end before timing starts, so start-up costs (first "
                     "kernels, library handles) stay out of the numbers; not cached for the timed "
                     "requests unless it equals one of them (repeatable)");
  flags.add_string("prompt", &prompt, "prompt text (the image markers are added)");
  flags.add_int("requests", &requests, "number of requests");
  flags.add_int("concurrency", &concurrency, "requests in flight at most");
  flags.add_int("max-tokens", &max_tokens, "tokens generated per request");
  add_engine_flags(
      &flags, &engine_flags,
      {EngineFlag::kMaxNumBatchedTokens, EngineFlag::kNumKvBlocks, EngineFlag::kDtype,
       EngineFlag::kWeights, EngineFlag::kKvCacheDtype, EngineFlag::kDevice,
       EngineFlag::kCudaGraphs, EngineFlag::kPrefixCaching, EngineFlag::kCpuMemoryBudget},
      engine::EngineFlagEnv::kWithout);
  flags.add_bool(
      "ignore-eos", &ignore_eos,
      "generate --max-tokens tokens whatever the model emits (false: EOS ends a request, "
      "as in service)");
  flags.add_bool("json", &as_json, "print one JSON object");
  if (auto rc = parse_command_flags(flags, argc, argv)) return *rc;
  if (engine_flags.model.empty() || requests < 1 || concurrency < 1 || max_tokens < 1) {
    std::cerr << "dsocr bench: --model, --requests >= 1, --concurrency >= 1, --max-tokens >= 1\n";
    return 2;
  }
  std::vector<std::string> pages;
  if (!read_images("bench", images, &pages)) return 1;
  std::vector<std::string> warmup_pages;
  if (!read_images("bench", warmup_images, &warmup_pages)) return 1;
  engine_flags.max_num_seqs = concurrency;
  auto options = engine_options("bench", engine_flags);
  if (!options) return 1;
  auto engine = engine::Engine::create(*options);
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
  for (size_t i = 0; i < warmup_pages.size(); ++i) {
    engine::GenerateRequest r;
    r.request_id = "warmup-" + std::to_string(i);
    r.prompt = prompt;
    r.images.push_back(warmup_pages[i]);
    r.sampling.max_tokens = std::min<int64_t>(max_tokens, 32);
    r.sampling.ignore_eos = true;
    auto s = (*engine)->submit(std::move(r));
    if (!s.ok()) {
      std::cerr << "dsocr bench: warm-up: " << s.status().message() << "\n";
      return 1;
    }
    for (;;) {
      auto e = (*s)->next(std::chrono::milliseconds(100));
      if (!e || !e->finished) continue;
      if (!e->error.ok()) {
        std::cerr << "dsocr bench: warm-up: " << e->error.message() << "\n";
        return 1;
      }
      break;
    }
  }
  const engine::EngineStats before = (*engine)->stats();
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
      r.sampling.ignore_eos = ignore_eos;
      auto s = (*engine)->submit(std::move(r));
      // The engine's queue or pending-image budget is full: submit again once requests finish
      // (a client would retry the same way).
      if (!s.ok() && s.status().code() == StatusCode::kResourceExhausted) break;
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
                        {"output_tokens", output_tokens},
                        {"prompt_tokens", prompt_tokens},
                        {"ttft_ms",
                         {{"p50", percentile(ttft, 0.5)},
                          {"p90", percentile(ttft, 0.9)},
                          {"p99", percentile(ttft, 0.99)}}},
                        {"itl_ms",
                         {{"p50", percentile(itl, 0.5)},
                          {"p90", percentile(itl, 0.9)},
                          {"p99", percentile(itl, 0.99)}}},
                        {"warmup_requests", warmup_pages.size()},
                        {"engine", engine_stats_json(before, (*engine)->stats(), wall)}};
  if (as_json) {
    std::cout << out.dump() << "\n";
  } else {
    std::cout << out.dump(2) << "\n";
  }
  return 0;
}

}  // namespace dsocr::cli

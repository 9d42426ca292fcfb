// Engine flags: the command-line face of EngineOptions. One table of flag names, defaults, help
// texts, ranges and DSOCR_* environment variables, shared by dsocr-server and the `dsocr` commands
// that run the engine (generate, bench).
//
//   EngineFlags engine;                                  // dsocr-server's defaults
//   add_engine_flags(&flags, &engine, {EngineFlag::kModel, EngineFlag::kDevice},
//                    EngineFlagEnv::kWith);
//   ... flags.parse(argc, argv) ...
//   DSOCR_RETURN_IF_ERROR(engine.validate());
//   EngineOptions options = engine.to_options(resolved_model_dir);
//
// A command registers the flags it offers, in the order its --help lists them, and may give a flag
// another default by setting the field before registering it (--help shows the value the field
// holds then). Fields of flags a command does not offer keep their defaults, which are
// EngineOptions' own. `--model` is resolved by engine/model_resolution.h.
//
// Thread-safety: none needed; used from one thread at start-up.
#pragma once

#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <string>
#include <string_view>

#include "common/flags.h"
#include "common/status.h"
#include "engine/engine.h"
#include "engine/model_resolution.h"

namespace dsocr::engine {

// The engine flags' values.
struct EngineFlags {
  std::string model{kDefaultModelSpec};
  std::string device = "auto";
  std::string dtype = "auto";
  std::string weights = "auto";
  std::string kv_cache_dtype = "auto";
  int64_t max_model_len = 8192;
  int64_t max_num_seqs = 64;
  int64_t max_num_batched_tokens = 2048;
  int64_t max_queued_requests = 256;
  int64_t max_pending_image_bytes = 1ll << 30;  // 0: no limit
  int64_t idle_memory_release_ms = 2'000;       // 0: never
  int64_t num_kv_blocks = 0;                    // 0: from free memory
  double kv_memory_fraction = 0.9;
  bool prefix_caching = true;
  bool cuda_graphs = true;
  int64_t vision_threads = 1;
  int64_t torch_threads = 0;
  std::string cpu_memory_budget = "auto";  // bytes ("12G", "12884901888") or auto

  // Ranges and choices, each error naming its flag ("--max-model-len must be in 16..1048576,
  // got 4"). `--device` is checked where it is resolved against the devices present.
  Status validate() const;
  // The options for Engine::create(), the model being at `model_dir` (`model` resolved).
  EngineOptions to_options(const std::filesystem::path& model_dir) const;
};

enum class EngineFlag {
  kModel,
  kDevice,
  kDtype,
  kWeights,
  kKvCacheDtype,
  kMaxModelLen,
  kMaxNumSeqs,
  kMaxNumBatchedTokens,
  kMaxQueuedRequests,
  kMaxPendingImageBytes,
  kIdleMemoryReleaseMs,
  kNumKvBlocks,
  kKvMemoryFraction,
  kPrefixCaching,
  kCudaGraphs,
  kVisionThreads,
  kTorchThreads,
  kCpuMemoryBudget,
};

// A flag a command offers. `help`, when set, replaces the shared text, for a command that gives the
// flag a meaning of its own (`dsocr generate --num-kv-blocks 0`: one full-length request's worth).
struct EngineFlagUse {
  EngineFlagUse(EngineFlag f) : flag(f) {}  // NOLINT(google-explicit-constructor): lists read best
  EngineFlagUse(EngineFlag f, std::string_view h) : flag(f), help(h) {}
  EngineFlag flag;
  std::string_view help;
};

// Whether the flags fall back to their DSOCR_* environment variables. The server's do; the
// one-shot commands' do not, so that a server's environment does not change what they run.
enum class EngineFlagEnv { kWith, kWithout };

// Registers `use` on `flags`, each writing into its field of `values` (which must outlive the
// parse).
void add_engine_flags(FlagSet* flags, EngineFlags* values, std::initializer_list<EngineFlagUse> use,
                      EngineFlagEnv env);

}  // namespace dsocr::engine

#include "weights/make_model.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "weights/checkpoint_layout.h"
#include "weights/safetensors.h"

namespace dsocr::weights {
namespace fs = std::filesystem;

StatusOr<ModelConfig> preset_config(std::string_view preset) {
  ModelConfig c;  // defaults: the official sizes
  if (preset == "full") return c;
  auto& l = c.language;
  auto& s = c.sam;
  auto& e = c.encoder;
  if (preset == "tiny") {
    l.hidden_size = 64, l.num_hidden_layers = 3, l.num_attention_heads = 4,
    l.num_key_value_heads = 4;
    l.intermediate_size = 128, l.moe_intermediate_size = 32, l.n_routed_experts = 8;
    l.n_shared_experts = 2, l.num_experts_per_tok = 2;
    s.width = 32, s.layers = 4, s.heads = 2, s.mlp_dim = 64, s.global_attn_indexes = {1, 3};
    s.out_chans = 16, s.downsample_channels = {24, 32};
    e.hidden_size = 32, e.layers = 2, e.heads = 4, e.kv_heads = 2, e.intermediate_size = 64;
  } else if (preset == "small") {
    l.hidden_size = 512, l.num_hidden_layers = 4, l.num_attention_heads = 8,
    l.num_key_value_heads = 8;
    l.intermediate_size = 1536, l.moe_intermediate_size = 256, l.n_routed_experts = 16;
    l.n_shared_experts = 2, l.num_experts_per_tok = 6;
    s.width = 192, s.layers = 6, s.heads = 6, s.mlp_dim = 768, s.global_attn_indexes = {2, 5};
    s.out_chans = 128, s.downsample_channels = {192, 256};
    e.hidden_size = 256, e.layers = 6, e.heads = 8, e.kv_heads = 2, e.intermediate_size = 1024;
  } else {
    return invalid_argument("unknown preset '" + std::string(preset) + "' (tiny, small or full)");
  }
  c.projector_input_dim = e.hidden_size;
  c.projector_output_dim = l.hidden_size;
  DSOCR_RETURN_IF_ERROR(c.validate());
  return c;
}

namespace {

uint64_t tensor_seed(uint64_t seed, const std::string& name) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a of the name, mixed with the seed (splitmix64)
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  uint64_t z = seed + 0x9E3779B97F4A7C15ull + h;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

Status write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.close();
  if (!out) return unavailable("cannot write " + path.string());
  return Status();
}

}  // namespace

Status make_model(const MakeModelOptions& options, const MakeModelProgress& progress) {
  if (options.dtype != DType::kBF16 && options.dtype != DType::kF32) {
    return invalid_argument("make-model writes bf16 or f32 checkpoints");
  }
  DSOCR_ASSIGN_OR_RETURN(ModelConfig config, preset_config(options.preset));
  config.torch_dtype = options.dtype == DType::kBF16 ? "bfloat16" : "float32";
  std::error_code ec;
  fs::create_directories(options.out, ec);
  if (ec) return unavailable("cannot create " + options.out.string() + ": " + ec.message());

  const std::vector<TensorSpec> specs = deepseek_ocr2_tensors(config);
  std::vector<TensorInfo> infos;
  uint64_t total_bytes = 0;
  for (const auto& s : specs) {
    infos.push_back({s.name, options.dtype, s.shape});
    total_bytes += static_cast<uint64_t>(infos.back().numel() * dtype_size(options.dtype));
  }
  const std::string shard = "model-00001-of-000001.safetensors";
  std::map<std::string, std::string> metadata = {{"format", "pt"},
                                                 {"dsocr_preset", options.preset},
                                                 {"dsocr_seed", std::to_string(options.seed)}};
  DSOCR_ASSIGN_OR_RETURN(auto writer,
                         SafetensorsWriter::create(options.out / shard, infos, metadata));
  uint64_t done = 0;
  for (const auto& s : specs) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(tensor_seed(options.seed, s.name));
    at::Tensor t = at::empty(s.shape, at::kFloat).normal_(s.mean, s.std, gen);
    DSOCR_RETURN_IF_ERROR(writer->write(t.to(to_scalar_type(options.dtype))));
    done += static_cast<uint64_t>(t.numel() * dtype_size(options.dtype));
    if (progress) progress(done, total_bytes, s.name);
  }
  DSOCR_RETURN_IF_ERROR(writer->finish());

  nlohmann::json index = {{"metadata", {{"total_size", total_bytes}}},
                          {"weight_map", nlohmann::json::object()}};
  for (const auto& s : specs) index["weight_map"][s.name] = shard;
  DSOCR_RETURN_IF_ERROR(
      write_text(options.out / "model.safetensors.index.json", index.dump(2) + "\n"));
  DSOCR_RETURN_IF_ERROR(write_text(options.out / "config.json", config.to_json().dump(2) + "\n"));
  if (!options.tokenizer_dir.empty()) {
    if (!fs::exists(options.tokenizer_dir / "tokenizer.json", ec)) {
      return not_found("no tokenizer.json in " + options.tokenizer_dir.string());
    }
    for (const char* name : kTokenizerFiles) {
      if (!fs::exists(options.tokenizer_dir / name, ec)) continue;
      fs::copy_file(options.tokenizer_dir / name, options.out / name,
                    fs::copy_options::overwrite_existing, ec);
      if (ec) return unavailable("cannot copy " + std::string(name) + ": " + ec.message());
      // Copies of read-only sources stay writable, so a later make-model can overwrite them.
      fs::permissions(options.out / name, fs::perms::owner_write, fs::perm_options::add, ec);
    }
  }
  return Status();
}

StatusOr<fs::path> ensure_demo_model(const fs::path& cache_dir, const fs::path& tokenizer_dir) {
  const fs::path dir = cache_dir / "demo-tiny-seed0-f32-v1";
  std::error_code ec;
  if (fs::exists(dir / "config.json", ec)) return dir;
  fs::create_directories(cache_dir, ec);
  if (ec) return unavailable("cannot create " + cache_dir.string() + ": " + ec.message());
  // The scratch directory's name must be unique across every process sharing the cache, not
  // only on this host: containers sharing a cache volume all run the server as PID 1, so a
  // name built from the process id made replicas write into (and delete) each other's scratch
  // directory. mkdtemp() picks a random name and creates it atomically.
  std::string scratch = (cache_dir / ".demo-XXXXXX").string();
  if (::mkdtemp(scratch.data()) == nullptr) {
    return unavailable("cannot create a directory in " + cache_dir.string() + ": " +
                       std::strerror(errno));
  }
  const fs::path tmp = scratch;
  // mkdtemp() makes it owner-only; the model is shared like any other cache entry.
  fs::permissions(tmp,
                  fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                      fs::perms::others_read | fs::perms::others_exec,
                  ec);
  MakeModelOptions options{.preset = "tiny",
                           .seed = 0,
                           .dtype = DType::kF32,
                           .out = tmp,
                           .tokenizer_dir = tokenizer_dir};
  if (Status s = make_model(options); !s.ok()) {
    fs::remove_all(tmp, ec);
    return s.with_context("making the demo model");
  }
  // rename(2) of a directory onto a non-empty one fails, so the first complete copy to land
  // stays in place, whole, and the losers discard theirs.
  fs::rename(tmp, dir, ec);
  if (ec) {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
    if (!fs::exists(dir / "config.json", ignored)) {
      return unavailable("cannot place the demo model in " + dir.string() + ": " + ec.message());
    }
  }
  return dir;
}

}  // namespace dsocr::weights

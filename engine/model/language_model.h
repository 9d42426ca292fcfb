// The DeepSeek-V2-style MoE language model of DeepSeek-OCR-2 (spec §9) over the paged KV cache.
//
// Modules carry the checkpoint's names: model.embed_tokens, model.layers.{i}.{input_layernorm,
// self_attn.{q,k,v,o}_proj, post_attention_layernorm, mlp.*}, model.norm, lm_head. Layers
// < first_k_dense_replace have a dense SwiGLU MLP; the others an MoE: a float32 softmax router
// over n_routed_experts, top-k (not renormalised) times routed_scaling_factor, each expert run
// once over all of its tokens, plus the shared experts (one MLP of n_shared * moe_intermediate).
// After loading, each layer's expert weights are stacked into [E, ...] tensors that the
// per-expert parameters view, so no memory is duplicated.
//
// On the CPU the weight matrices (attention and MLP projections, the experts, lm_head) can be kept
// narrow, as StoredWeight (stored_weight.h), while activations and arithmetic stay in the compute
// dtype: load(..., stored = kBFloat16 or kInt8). The modules' own weight parameters are then
// emptied after loading (strict loading has checked their names and shapes) and the embedding
// table stays bfloat16.
//
// forward() takes a flattened batch (forward_batch.h): image embedding rows replace the
// placeholder rows, K/V of every row go to the cache, and logits come out only for the rows that
// need sampling.
//
// Thread-safety: one forward at a time per KV cache (the engine thread).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include <optional>
#include <string_view>

#include "common/status.h"
#include "engine/kernels/forward_batch.h"
#include "engine/kernels/kv_cache.h"
#include "engine/kernels/paged_attention.h"
#include "engine/model/stored_weight.h"
#include "weights/model_config.h"
#include "weights/safetensors.h"

namespace dsocr::model {

// A bias-free linear layer (the checkpoint's "<name>.weight", [out, in]) whose weight is only a
// shape (one float seen [out, in] times) until it is loaded: constructing the model allocates nothing, where
// torch::nn::Linear allocated and initialised every matrix (for the full model 11.6 GB of float32
// random values, which set the peak memory of loading).
class ProjectionImpl : public torch::nn::Module {
 public:
  ProjectionImpl(int64_t in, int64_t out);
  at::Tensor forward(const at::Tensor& x) { return at::linear(x, weight); }
  at::Tensor weight;
};
TORCH_MODULE(Projection);

// Which weights a stored-weight load keeps narrow, and where the pages of converted ones go.
struct WeightStore {
  engine::cpu::WeightFormat format = engine::cpu::WeightFormat::kFloat32;
  const weights::StateDict* state = nullptr;  // whose mapped pages are released once copied
  int64_t* non_finite = nullptr;              // adds up StoredWeight::non_finite()

  // The linear's weight as a StoredWeight; the parameter is emptied.
  StoredWeight take(Projection& linear) const;
  // Several linears' weights stacked into one StoredWeight; the parameters are emptied.
  StoredWeight take_stacked(const std::vector<Projection*>& linears) const;

 private:
  // Releases the file's pages of each block of source rows once converted; counts non-finite.
  StoredWeight::RowsDone release_converted() const;
  void count_non_finite(const StoredWeight& stored) const;
};

// x·Wᵀ by the stored weight when there is one, else by the module.
inline at::Tensor project(Projection& linear, const StoredWeight& stored,
                          const at::Tensor& x) {
  return stored.defined() ? stored.forward(x) : linear->forward(x);
}

class SwiGluMlpImpl : public torch::nn::Module {
 public:
  SwiGluMlpImpl(int64_t hidden, int64_t intermediate);
  at::Tensor forward(const at::Tensor& x);
  void store(const WeightStore& store);
  Projection gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};

 private:
  StoredWeight gate_, up_, down_;
};
TORCH_MODULE(SwiGluMlp);

class MoeImpl : public torch::nn::Module {
 public:
  explicit MoeImpl(const weights::LanguageConfig& config);
  // How the routed experts run: kAuto picks by device (the CPU kernel for decode-sized batches on
  // the CPU, grouped GEMMs on CUDA); tests force the others to compare them.
  enum class Route { kAuto, kReference, kGrouped };
  // [T, hidden].
  at::Tensor forward(const at::Tensor& x, Route route = Route::kAuto);
  at::Tensor forward(const at::Tensor& x, bool reference) {
    return forward(x, reference ? Route::kReference : Route::kAuto);
  }
  // Stacks the experts' weights (call once after loading); on CUDA gate and up as one
  // [E, 2I, H] tensor for the grouped path (w_gate_ and w_up_ then view its halves).
  void pack_experts();
  // Instead of pack_experts(): every matrix becomes a StoredWeight (the routed experts stacked).
  void store(const WeightStore& store);

 private:
  at::Tensor routed_cpu(const at::Tensor& x, const at::Tensor& experts, const at::Tensor& weights);
  at::Tensor routed_reference(const at::Tensor& x, const at::Tensor& experts,
                              const at::Tensor& weights);
  at::Tensor routed_grouped(const at::Tensor& x, const at::Tensor& experts,
                            const at::Tensor& weights);

  weights::LanguageConfig config_;
  at::Tensor gate_weight_;  // router [E, hidden]
  std::vector<SwiGluMlp> experts_;
  SwiGluMlp shared_experts_{nullptr};
  at::Tensor w_gate_, w_up_, w_down_;  // [E, I, H], [E, I, H], [E, H, I]
  at::Tensor w_gate_up_;  // [E, 2I, H]: gate rows then up rows; set when the weights are on CUDA
  StoredWeight stored_gate_, stored_up_, stored_down_;  // [E * I, H], [E * I, H], [E * H, I]
};
TORCH_MODULE(Moe);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const weights::LanguageConfig& config, int64_t index);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                     at::Tensor& key_cache, at::Tensor& value_cache, const engine::ForwardBatch& batch,
                     const engine::AttentionPlan& attention);
  void pack_experts();
  void store(const WeightStore& store);

 private:
  weights::LanguageConfig config_;
  at::Tensor input_layernorm_, post_attention_layernorm_;
  Projection q_proj_{nullptr}, k_proj_{nullptr}, v_proj_{nullptr}, o_proj_{nullptr};
  StoredWeight q_, k_, v_, o_;
  SwiGluMlp dense_mlp_{nullptr};
  Moe moe_{nullptr};
};
TORCH_MODULE(DecoderLayer);

class LanguageModelImpl : public torch::nn::Module {
 public:
  explicit LanguageModelImpl(const weights::LanguageConfig& config);

  // Strict load of the language-model tensors (the vision ones are left to VisionModel). With
  // `stored` (CPU only), the weight matrices are kept in that format (see above); loading then
  // never holds a matrix both as the file's pages and as its narrow copy.
  Status load(const weights::StateDict& weights, at::ScalarType dtype, at::Device device,
              std::optional<engine::cpu::WeightFormat> stored = std::nullopt);
  // Whether a stored-weight load keeps checkpoint tensor `name` in the stored format (the weight
  // matrices), and the embedding table (bfloat16 unless the format is float32).
  static bool is_stored_matrix(std::string_view name);
  static bool is_embedding(std::string_view name) { return name == "model.embed_tokens.weight"; }

  // Logits [S, vocab] in float32 for batch.logits_rows.
  at::Tensor forward(const engine::ForwardBatch& batch, engine::KvCache& cache);
  // The attention plan forward() makes for a batch (host work, once per step).
  engine::AttentionPlan plan_attention(const engine::ForwardBatch& batch,
                                       engine::KvCache& cache) const;
  // forward() with the plan made beforehand: only device work on the current stream, so a
  // decode step can be captured in a CUDA graph (batch.sequences is not read).
  at::Tensor forward(const engine::ForwardBatch& batch, engine::KvCache& cache,
                     const engine::AttentionPlan& attention);

  // lm_head over final-normed rows [S, hidden] -> float32 [S, vocab]. On the CPU in float32 the
  // weight is packed into panels at load (cpu_kernels.h: matmul_panels, ~2x MKL at decode sizes).
  at::Tensor logits(const at::Tensor& rows);

  const weights::LanguageConfig& config() const { return config_; }
  at::ScalarType dtype() const { return norm_.scalar_type(); }
  at::Device device() const { return norm_.device(); }

 private:
  void pack_lm_head();

  weights::LanguageConfig config_;
  at::Tensor embed_tokens_;  // model.embed_tokens.weight [vocab, hidden]
  std::vector<DecoderLayer> layers_;
  at::Tensor norm_;
  Projection lm_head_{nullptr};
  StoredWeight stored_lm_head_;
  at::Tensor lm_head_panels_;  // CPU float32: [ceil(vocab / 16), hidden, 16], see pack_lm_head()
};
TORCH_MODULE(LanguageModel);

}  // namespace dsocr::model

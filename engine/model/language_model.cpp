#include "engine/model/language_model.h"

#include <cmath>

#include "common/check.h"
#include "engine/kernels/cpu_kernels.h"
#include "engine/kernels/kv_cache_ops.h"
#include "engine/model/layers.h"
#include "weights/loader.h"

namespace dsocr::model {

namespace {

// A parameter of `sizes` that takes no memory until loading replaces it: every element is one
// float (all strides 0). Not a meta tensor: Tensor::set_data (how loading assigns) refuses to
// replace a meta tensor's data with a dense one.
at::Tensor shape_only_parameter(torch::nn::Module& module, const char* name,
                                at::IntArrayRef sizes) {
  const std::vector<int64_t> strides(sizes.size(), 0);
  return module.register_parameter(name, at::empty_strided(sizes, strides).zero_());
}

at::Tensor norm_weight(torch::nn::Module& parent, const char* name, int64_t dim) {
  auto holder = parent.register_module(name, std::make_shared<torch::nn::Module>());
  return holder->register_parameter("weight", at::ones({dim}));
}

// A stacked [E, rows, cols] float32 or bfloat16 tensor as the kernels' [E * rows, cols] matrix.
engine::cpu::WeightMatrix stacked_matrix(const at::Tensor& w) {
  engine::cpu::WeightMatrix m;
  m.data = w.data_ptr();
  m.format = w.scalar_type() == at::kBFloat16 ? engine::cpu::WeightFormat::kBFloat16
                                              : engine::cpu::WeightFormat::kFloat32;
  m.rows = w.size(0) * w.size(1);
  m.cols = w.size(2);
  return m;
}

void empty_parameter(at::Tensor& parameter) {
  at::NoGradGuard no_grad;
  parameter.set_data(at::empty({0}, parameter.options()));
}

}  // namespace

ProjectionImpl::ProjectionImpl(int64_t in, int64_t out) {
  weight = shape_only_parameter(*this, "weight", {out, in});
}

StoredWeight::RowsDone WeightStore::release_converted() const {
  return [this](const at::Tensor& rows) {
    if (state != nullptr) state->release_pages(rows);
  };
}

void WeightStore::count_non_finite(const StoredWeight& stored) const {
  if (non_finite != nullptr) *non_finite += stored.non_finite();
}

StoredWeight WeightStore::take(Projection& linear) const {
  StoredWeight stored = StoredWeight::make(linear->weight.data(), format, release_converted());
  empty_parameter(linear->weight);
  count_non_finite(stored);
  return stored;
}

StoredWeight WeightStore::take_stacked(const std::vector<Projection*>& linears) const {
  std::vector<at::Tensor> sources;
  for (Projection* linear : linears) sources.push_back((*linear)->weight.data());
  StoredWeight stored = StoredWeight::stack(sources, format, release_converted());
  for (Projection* linear : linears) empty_parameter((*linear)->weight);
  count_non_finite(stored);
  return stored;
}

SwiGluMlpImpl::SwiGluMlpImpl(int64_t hidden, int64_t intermediate) {
  gate_proj = register_module("gate_proj", Projection(hidden, intermediate));
  up_proj = register_module("up_proj", Projection(hidden, intermediate));
  down_proj = register_module("down_proj", Projection(intermediate, hidden));
}

at::Tensor SwiGluMlpImpl::forward(const at::Tensor& x) {
  return project(down_proj, down_,
                 at::silu(project(gate_proj, gate_, x)) * project(up_proj, up_, x));
}

void SwiGluMlpImpl::store(const WeightStore& store) {
  gate_ = store.take(gate_proj);
  up_ = store.take(up_proj);
  down_ = store.take(down_proj);
}

MoeImpl::MoeImpl(const weights::LanguageConfig& config) : config_(config) {
  auto gate = register_module("gate", std::make_shared<torch::nn::Module>());
  gate_weight_ =
      gate->register_parameter("weight", at::zeros({config.n_routed_experts, config.hidden_size}));
  auto experts = register_module("experts", torch::nn::ModuleList());
  for (int64_t e = 0; e < config.n_routed_experts; ++e) {
    SwiGluMlp expert(config.hidden_size, config.moe_intermediate_size);
    experts->push_back(expert);
    experts_.push_back(expert);
  }
  shared_experts_ = register_module(
      "shared_experts",
      SwiGluMlp(config.hidden_size, config.moe_intermediate_size * config.n_shared_experts));
}

void MoeImpl::pack_experts() {
  std::vector<at::Tensor> gates, ups, downs;
  for (auto& e : experts_) {
    gates.push_back(e->gate_proj->weight);
    ups.push_back(e->up_proj->weight);
    downs.push_back(e->down_proj->weight);
  }
  at::NoGradGuard no_grad;
  if (gates.front().is_cuda()) {
    const int64_t inter = config_.moe_intermediate_size;
    w_gate_up_ = at::cat({at::stack(gates), at::stack(ups)}, 1);
    w_gate_ = w_gate_up_.slice(1, 0, inter);
    w_up_ = w_gate_up_.slice(1, inter, 2 * inter);
  } else {
    w_gate_ = at::stack(gates);
    w_up_ = at::stack(ups);
  }
  w_down_ = at::stack(downs);
  for (size_t e = 0; e < experts_.size(); ++e) {  // the modules now view the stacked storage
    experts_[e]->gate_proj->weight.set_data(w_gate_[e]);
    experts_[e]->up_proj->weight.set_data(w_up_[e]);
    experts_[e]->down_proj->weight.set_data(w_down_[e]);
  }
}

void MoeImpl::store(const WeightStore& store) {
  std::vector<Projection*> gates, ups, downs;
  for (auto& e : experts_) {
    gates.push_back(&e->gate_proj);
    ups.push_back(&e->up_proj);
    downs.push_back(&e->down_proj);
  }
  stored_gate_ = store.take_stacked(gates);
  stored_up_ = store.take_stacked(ups);
  stored_down_ = store.take_stacked(downs);
  shared_experts_->store(store);
}

at::Tensor MoeImpl::forward(const at::Tensor& x, Route route) {
  const int64_t k = config_.num_experts_per_tok;
  at::Tensor scores = at::linear(x.to(at::kFloat), gate_weight_.to(at::kFloat)).softmax(-1);
  auto [weights, experts] = scores.topk(k, -1, /*largest=*/true, /*sorted=*/false);
  weights = weights * config_.routed_scaling_factor;  // not renormalised (norm_topk_prob false)
  // Decode-sized batches on the CPU: one pass per expert in cpu_kernels.h (prefill is
  // compute-bound and MKL's). With bfloat16 weights the kernel reads them as they are and
  // computes in float32: the expert part of keeping weights narrow on the CPU (issue #21; the
  // bf16 decode step measured the same speed as libtorch's bf16 path, its time is elsewhere).
  // Stored (narrow) experts have no libtorch path: the kernel serves every step, widening an
  // expert's weights once when many tokens chose it.
  constexpr int64_t kKernelMaxTokens = 64;
  const bool stored = stored_gate_.defined();
  const auto float_or_bf16_type = [](at::ScalarType t) {
    return t == at::kFloat || t == at::kBFloat16;
  };
  const bool kernel =
      stored || (route == Route::kAuto && x.is_cpu() && float_or_bf16_type(x.scalar_type()) &&
                 float_or_bf16_type(w_gate_.scalar_type()) && x.size(0) <= kKernelMaxTokens &&
                 engine::cpu::moe_supported(config_.hidden_size, config_.moe_intermediate_size));
  // On CUDA: grouped GEMMs (at::_grouped_mm: CUTLASS on sm_90 in bfloat16), no host sync.
  const bool grouped =
      route == Route::kGrouped || (route == Route::kAuto && x.is_cuda() &&
                                   x.scalar_type() == at::kBFloat16 && w_gate_up_.defined());
  at::Tensor routed = kernel    ? routed_cpu(x, experts, weights)
                      : grouped ? routed_grouped(x, experts, weights)
                                : routed_reference(x, experts, weights);
  return routed + shared_experts_->forward(x);
}

at::Tensor MoeImpl::routed_cpu(const at::Tensor& x, const at::Tensor& experts,
                               const at::Tensor& weights) {
  at::Tensor xc = x.to(at::kFloat).contiguous();
  at::Tensor e = experts.to(at::kLong).contiguous();
  at::Tensor w = weights.to(at::kFloat).contiguous();
  at::Tensor out = at::empty_like(xc);
  engine::cpu::MoeArgs args;
  args.x = xc.data_ptr<float>();
  args.tokens = xc.size(0);
  args.hidden = config_.hidden_size;
  args.inter = config_.moe_intermediate_size;
  args.num_experts = config_.n_routed_experts;
  args.top_k = config_.num_experts_per_tok;
  const bool stored = stored_gate_.defined();
  args.gate = stored ? stored_gate_.matrix() : stacked_matrix(w_gate_);
  args.up = stored ? stored_up_.matrix() : stacked_matrix(w_up_);
  args.down = stored ? stored_down_.matrix() : stacked_matrix(w_down_);
  args.experts = e.data_ptr<int64_t>();
  args.weights = w.data_ptr<float>();
  args.out = out.data_ptr<float>();
  engine::cpu::moe_experts(args);
  return out.to(x.scalar_type());
}

at::Tensor MoeImpl::routed_reference(const at::Tensor& x, const at::Tensor& experts,
                                     const at::Tensor& weights) {
  const int64_t k = config_.num_experts_per_tok;
  // Group the (token, slot) assignments by expert so that each expert runs one matmul.
  at::Tensor flat_experts = experts.reshape(-1);
  at::Tensor order = flat_experts.argsort(/*stable=*/true);
  at::Tensor counts = at::bincount(flat_experts, {}, config_.n_routed_experts).cpu();
  at::Tensor token_of = order.div(k, "floor");
  at::Tensor weight_of = weights.reshape(-1).index_select(0, order);
  at::Tensor out = at::zeros_like(x);
  const int64_t* count = counts.data_ptr<int64_t>();
  int64_t begin = 0;
  for (int64_t e = 0; e < config_.n_routed_experts; ++e) {
    const int64_t n = count[e];
    if (n == 0) continue;
    at::Tensor tokens = token_of.slice(0, begin, begin + n);
    at::Tensor h = x.index_select(0, tokens);
    at::Tensor act = at::silu(at::linear(h, w_gate_[e])) * at::linear(h, w_up_[e]);
    at::Tensor y = at::linear(act, w_down_[e]) * weight_of.slice(0, begin, begin + n).unsqueeze(1);
    out.index_add_(0, tokens, y.to(out.scalar_type()));
    begin += n;
  }
  return out;
}

at::Tensor MoeImpl::routed_grouped(const at::Tensor& x, const at::Tensor& experts,
                                   const at::Tensor& weights) {
  const int64_t tokens = x.size(0), k = config_.num_experts_per_tok;
  const int64_t num_experts = config_.n_routed_experts, inter = config_.moe_intermediate_size;
  // Every (token, slot) assignment, grouped by expert: a stable sort on the device, and each
  // group's end row found by binary search (at::bincount would read its maximum on the host).
  auto [sorted_experts, order] = experts.reshape(-1).sort(/*stable=*/true, 0, false);
  const at::Tensor group_ends = at::searchsorted(
      sorted_experts, at::arange(num_experts, sorted_experts.options()), /*out_int32=*/true,
      /*right=*/true);
  const at::Tensor rows = x.index_select(0, order.div(k, "floor"));
  // A CPU test forces this path on weights stacked without the fused gate/up tensor.
  const at::Tensor gate_up = w_gate_up_.defined() ? w_gate_up_ : at::cat({w_gate_, w_up_}, 1);
  const at::Tensor h = at::_grouped_mm(rows, gate_up.transpose(1, 2), group_ends);  // [T*k, 2I]
  const at::Tensor act = at::silu(h.slice(1, 0, inter)) * h.slice(1, inter, 2 * inter);
  at::Tensor y = at::_grouped_mm(act, w_down_.transpose(1, 2), group_ends);  // [T*k, H]
  y.mul_(weights.reshape(-1).index_select(0, order).unsqueeze(1).to(y.scalar_type()));
  // Back to (token, slot) order, then each token's k results summed in slot order: no atomics,
  // so a token's output does not depend on what else is in the batch.
  at::Tensor per_slot = at::empty_like(y);
  per_slot.index_copy_(0, order, y);
  return per_slot.view({tokens, k, x.size(1)}).sum(1).to(x.scalar_type());
}

DecoderLayerImpl::DecoderLayerImpl(const weights::LanguageConfig& config, int64_t index)
    : config_(config) {
  const int64_t d = config.hidden_size, hd = config.head_dim();
  input_layernorm_ = norm_weight(*this, "input_layernorm", d);
  auto attn = register_module("self_attn", std::make_shared<torch::nn::Module>());
  q_proj_ = attn->register_module("q_proj", Projection(d, config.num_attention_heads * hd));
  k_proj_ = attn->register_module("k_proj", Projection(d, config.num_key_value_heads * hd));
  v_proj_ = attn->register_module("v_proj", Projection(d, config.num_key_value_heads * hd));
  o_proj_ = attn->register_module("o_proj", Projection(config.num_attention_heads * hd, d));
  post_attention_layernorm_ = norm_weight(*this, "post_attention_layernorm", d);
  if (index < config.first_k_dense_replace)
    dense_mlp_ = register_module("mlp", SwiGluMlp(d, config.intermediate_size));
  else
    moe_ = register_module("mlp", Moe(config));
}

void DecoderLayerImpl::pack_experts() {
  if (moe_) moe_->pack_experts();
}

void DecoderLayerImpl::store(const WeightStore& store) {
  q_ = store.take(q_proj_);
  k_ = store.take(k_proj_);
  v_ = store.take(v_proj_);
  o_ = store.take(o_proj_);
  if (moe_)
    moe_->store(store);
  else
    dense_mlp_->store(store);
}

at::Tensor DecoderLayerImpl::forward(const at::Tensor& x, const at::Tensor& cos,
                                     const at::Tensor& sin, at::Tensor& key_cache,
                                     at::Tensor& value_cache, const engine::ForwardBatch& batch,
                                     const engine::AttentionPlan& attention) {
  const int64_t t = x.size(0), hd = config_.head_dim();
  at::Tensor y = rms_norm(x, input_layernorm_, config_.rms_norm_eps);
  // [T, heads, hd] with RoPE on each row's own position (cos/sin: [T, 1, hd]).
  at::Tensor q =
      apply_rope(project(q_proj_, q_, y).view({t, config_.num_attention_heads, hd}), cos, sin);
  at::Tensor k =
      apply_rope(project(k_proj_, k_, y).view({t, config_.num_key_value_heads, hd}), cos, sin);
  at::Tensor v = project(v_proj_, v_, y).view({t, config_.num_key_value_heads, hd});
  // The cache may be narrower than the compute dtype (--kv-cache-dtype bfloat16 on the CPU).
  engine::write_kv_cache(k.to(key_cache.scalar_type()).contiguous(),
                         v.to(value_cache.scalar_type()).contiguous(), key_cache, value_cache,
                         batch.slot_mapping);
  at::Tensor attn = engine::paged_attention(q, key_cache, value_cache, attention,
                                    1.0 / std::sqrt(static_cast<double>(hd)));
  at::Tensor h = x + project(o_proj_, o_, attn.reshape({t, -1}));
  at::Tensor u = rms_norm(h, post_attention_layernorm_, config_.rms_norm_eps);
  return h + (moe_ ? moe_->forward(u) : dense_mlp_->forward(u));
}

LanguageModelImpl::LanguageModelImpl(const weights::LanguageConfig& config) : config_(config) {
  auto model = register_module("model", std::make_shared<torch::nn::Module>());
  auto embed = model->register_module("embed_tokens", std::make_shared<torch::nn::Module>());
  embed_tokens_ = shape_only_parameter(*embed, "weight", {config.vocab_size, config.hidden_size});
  auto layers = model->register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    DecoderLayer layer(config, i);
    layers->push_back(layer);
    layers_.push_back(layer);
  }
  norm_ = norm_weight(*model, "norm", config.hidden_size);
  lm_head_ = register_module("lm_head", Projection(config.hidden_size, config.vocab_size));
}

bool LanguageModelImpl::is_stored_matrix(std::string_view name) {
  constexpr std::string_view kLayers = "model.layers.", kProj = "_proj.weight";
  return name == "lm_head.weight" ||
         (name.substr(0, kLayers.size()) == kLayers && name.size() > kProj.size() &&
          name.substr(name.size() - kProj.size()) == kProj);
}

Status LanguageModelImpl::load(const weights::StateDict& weights, at::ScalarType dtype,
                               at::Device device, std::optional<engine::cpu::WeightFormat> stored) {
  if (stored && !device.is_cpu())
    return invalid_argument("stored (narrow) weights are for the CPU; on " + device.str() +
                            " the weights take the compute dtype");
  if (stored) {
    // What the stored formats take, checked before anything is loaded.
    for (const std::string& name : weights.names()) {
      if (!is_stored_matrix(name)) continue;
      const weights::TensorInfo* info = weights.info(name);
      if (info->dtype != weights::DType::kF32 && info->dtype != weights::DType::kBF16)
        return invalid_argument(name + " is " + std::string(weights::dtype_name(info->dtype)) +
                                ": --weights bfloat16/int8 take float32 or bfloat16 checkpoints");
      if (info->shape.size() != 2 || !engine::cpu::linear_supported(info->shape[1]))
        return invalid_argument(name + ": --weights bfloat16/int8 need matrices whose rows are "
                                "a multiple of 8 wide");
    }
  }
  // The vision tensors share the file (and the "model." prefix); they are VisionModel's.
  for (const std::string& name : weights.names()) {
    const bool vision = name.rfind("model.sam_model.", 0) == 0 ||
                        name.rfind("model.qwen2_model.", 0) == 0 ||
                        name.rfind("model.projector.", 0) == 0 || name == "model.view_seperator";
    const bool language = name.rfind("model.", 0) == 0 || name.rfind("lm_head.", 0) == 0;
    if (!vision && !language)
      return invalid_argument("unexpected tensor '" + name + "' in the checkpoint");
  }
  weights::LoadOptions options;
  options.dtype = dtype;
  options.device = device;
  options.allow_unexpected = true;  // the vision tensors, checked above and by VisionModel
  options.discard_initial_values = true;
  if (stored) {
    options.keep_checkpoint_dtype = [](const std::string& name) {
      return is_stored_matrix(name) || is_embedding(name);
    };
  }
  DSOCR_RETURN_IF_ERROR(weights::load_module(*this, weights, options));
  eval();
  if (!stored) {
    for (auto& layer : layers_) layer->pack_experts();
    if (device.is_cpu() && dtype == at::kFloat && !config_.tie_word_embeddings) pack_lm_head();
    return Status();
  }
  int64_t non_finite = 0;
  const WeightStore store{*stored, &weights, &non_finite};
  for (auto& layer : layers_) layer->store(store);
  stored_lm_head_ = store.take(lm_head_);
  if (non_finite > 0)
    return invalid_argument(std::to_string(non_finite) +
                            " language-model weights are not finite (NaN or inf): int8 cannot hold "
                            "them; the checkpoint is damaged");
  // The embedding table is read a few rows a step: bfloat16 (as stored) unless the format is
  // float32 (then the compute dtype, as without stored weights).
  const at::ScalarType table =
      *stored == engine::cpu::WeightFormat::kFloat32 ? dtype : at::kBFloat16;
  at::Tensor& embedding = embed_tokens_;
  if (embedding.scalar_type() != table) {
    const at::Tensor source = embedding.data();
    at::NoGradGuard no_grad;
    embedding.set_data(source.to(table));
    weights.release_pages(source);
  }
  return Status();
}

void LanguageModelImpl::pack_lm_head() {
  at::NoGradGuard no_grad;
  const at::Tensor w = lm_head_->weight.contiguous();
  const int64_t n = w.size(0), k = w.size(1);
  lm_head_panels_ = at::empty({engine::cpu::panel_count(n), k, engine::cpu::kPanelWidth}, w.options());
  engine::cpu::pack_panels(w.data_ptr<float>(), n, k, lm_head_panels_.data_ptr<float>());
  // The module's weight now views the panels ([panels, 16, hidden], W's rows in order, the last
  // panel's padding rows zero), so the [vocab, hidden] original is freed, not kept twice.
  lm_head_->weight.set_data(lm_head_panels_.transpose(1, 2));
}

engine::AttentionPlan LanguageModelImpl::plan_attention(const engine::ForwardBatch& batch,
                                                        engine::KvCache& cache) const {
  const at::ScalarType dtype = norm_.scalar_type();
  return engine::AttentionPlan::build(
      batch, cache.block_size, norm_.device(), config_.num_attention_heads, config_.head_dim(),
      /*reference=*/false, dtype == at::kBFloat16 ? cache.gpu_attention.get() : nullptr);
}

at::Tensor LanguageModelImpl::forward(const engine::ForwardBatch& batch, engine::KvCache& cache) {
  const engine::AttentionPlan attention = plan_attention(batch, cache);
  return forward(batch, cache, attention);
}

at::Tensor LanguageModelImpl::forward(const engine::ForwardBatch& batch, engine::KvCache& cache,
                                      const engine::AttentionPlan& attention) {
  at::NoGradGuard no_grad;
  at::Tensor x = at::embedding(embed_tokens_, batch.input_ids).to(norm_.scalar_type());
  if (batch.image_rows.defined() && batch.image_rows.numel() > 0)
    x.index_copy_(0, batch.image_rows, batch.image_embeds.to(x.scalar_type()));
  auto [cos, sin] = rope_cos_sin(batch.positions, config_.head_dim(), config_.rope_theta,
                                         x.scalar_type());
  cos = cos.unsqueeze(1);
  sin = sin.unsqueeze(1);
  for (size_t i = 0; i < layers_.size(); ++i)
    x = layers_[i]->forward(x, cos, sin, cache.keys[i], cache.values[i], batch, attention);
  at::Tensor rows = x.index_select(0, batch.logits_rows);
  rows = rms_norm(rows, norm_, config_.rms_norm_eps);
  return logits(rows);
}

at::Tensor LanguageModelImpl::logits(const at::Tensor& rows) {
  if (stored_lm_head_.defined()) return stored_lm_head_.forward(rows).to(at::kFloat);
  if (lm_head_panels_.defined()) {
    const at::Tensor x = rows.to(at::kFloat).contiguous();
    at::Tensor out = at::empty({x.size(0), config_.vocab_size}, x.options());
    engine::cpu::matmul_panels(x.data_ptr<float>(), x.size(0), x.size(1), lm_head_panels_.data_ptr<float>(),
                       config_.vocab_size, out.data_ptr<float>());
    return out;
  }
  return lm_head_->forward(rows).to(at::kFloat);
}

}  // namespace dsocr::model

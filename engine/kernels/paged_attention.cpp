#include "engine/kernels/paged_attention.h"

#include "common/check.h"
#include "common/logging.h"
#include "engine/kernels/flashinfer_attention.h"

#ifdef DSOCR_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace dsocr::engine {

std::shared_ptr<GpuAttention> make_gpu_attention(at::Device device, int64_t heads, int64_t kv_heads,
                                                 int64_t head_dim, int64_t block_size,
                                                 int64_t num_blocks, at::ScalarType cache_dtype,
                                                 int64_t max_graph_batch,
                                                 int64_t max_graph_pages_per_seq) {
  auto logger = log::get("engine");
  if (!device.is_cuda()) return nullptr;
#ifdef DSOCR_WITH_CUDA
  if (cache_dtype != at::kBFloat16 || head_dim != 128) {
    logger->warn(
        "attention: the reference path (the GPU kernels are built for a bfloat16 cache "
        "and head_dim 128; this is {} with head_dim {})",
        c10::toString(cache_dtype), head_dim);
    return nullptr;
  }
  kernels::FlashInferPagedAttention::Config config;
  config.num_qo_heads = static_cast<int>(heads);
  config.num_kv_heads = static_cast<int>(kv_heads);
  config.head_dim = static_cast<int>(head_dim);
  config.page_size = static_cast<int>(block_size);
  config.device = device.index() < 0 ? 0 : device.index();
  config.num_pages = num_blocks;
  config.max_graph_batch = static_cast<int>(max_graph_batch);
  config.max_graph_pages = max_graph_batch * max_graph_pages_per_seq;
  auto created = kernels::FlashInferPagedAttention::create(config);
  if (!created.ok()) {
    logger->warn("attention: the reference path (FlashInfer: {})", created.status().message());
    return nullptr;
  }
  logger->info("attention: FlashInfer paged kernels (batch decode, batch prefill)");
  return std::shared_ptr<GpuAttention>(std::move(*created));
#else
  (void)max_graph_batch;
  (void)max_graph_pages_per_seq;
  logger->warn("attention: the reference path (this build has no CUDA kernels)");
  return nullptr;
#endif
}

std::vector<int64_t> context_slots(const SequenceSlice& seq, int64_t block_size) {
  std::vector<int64_t> slots(seq.context_len);
  for (int64_t p = 0; p < seq.context_len; ++p) {
    const size_t block = static_cast<size_t>(p / block_size);
    DSOCR_CHECK_LT(block, seq.block_table.size());
    slots[p] = static_cast<int64_t>(seq.block_table[block]) * block_size + p % block_size;
  }
  return slots;
}

AttentionPlan AttentionPlan::build(const ForwardBatch& batch, int64_t block_size, at::Device device,
                                   int64_t heads, int64_t head_dim, bool reference,
                                   GpuAttention* gpu, bool for_graph) {
  AttentionPlan plan;
#ifdef DSOCR_WITH_CUDA
  if (gpu != nullptr && device.is_cuda() && !reference) {
    // Sequences in row order (the batch's invariant); chunks of no rows add nothing.
    kernels::PageTableBuilder pages(static_cast<int>(block_size));
    bool decode_only = true;
    for (const SequenceSlice& seq : batch.sequences) {
      if (seq.q_len == 0) continue;
      DSOCR_CHECK_EQ(seq.q_start, pages.rows());
      DSOCR_CHECK_GE(static_cast<int64_t>(seq.block_table.size()) * block_size, seq.context_len);
      pages.add(seq.block_table.data(), seq.context_len, seq.q_len);
      decode_only = decode_only && seq.q_len == 1;
    }
    void* stream = at::cuda::getCurrentCUDAStream(device.index()).stream();
    if (for_graph && !decode_only) throw std::logic_error("a CUDA-graph step must be decode-only");
    const Status planned = for_graph ? gpu->plan_decode_graph(pages.view(), stream)
                           : decode_only
                               ? gpu->plan_decode(pages.view(), stream)
                               : gpu->plan_prefill(pages.qo_indptr(), pages.view(), stream);
    if (!planned.ok()) throw std::runtime_error("attention plan: " + planned.message());
    plan.gpu = gpu;
    plan.gpu_decode_only = decode_only;
    return plan;
  }
#else
  (void)gpu;
  (void)for_graph;
#endif
  const auto longs = at::TensorOptions().dtype(at::kLong).device(device);
  std::vector<const SequenceSlice*> decodes;
  for (const SequenceSlice& seq : batch.sequences) {
    if (seq.q_len == 0) continue;
    if (seq.q_len == 1) {
      decodes.push_back(&seq);
      continue;
    }
    Prefill p;
    p.q_start = seq.q_start;
    p.q_len = seq.q_len;
    p.slots = at::tensor(context_slots(seq, block_size), at::kLong).to(device);
    // A chunk with nothing cached before it is plain causal: SDPA then skips the blocks above the
    // diagonal instead of computing and masking them.
    const int64_t offset = seq.context_len - seq.q_len;
    if (offset > 0) {
      at::Tensor rows = at::arange(seq.q_len, longs);
      at::Tensor cols = at::arange(seq.context_len, longs);
      p.mask = cols.unsqueeze(0) <= (rows.unsqueeze(1) + offset);
    }
    plan.prefills.push_back(std::move(p));
  }
  if (decodes.empty()) return plan;
  if (device.is_cpu() && !reference && cpu::attention_supported(heads, head_dim)) {
    for (const SequenceSlice* seq : decodes) {
      DSOCR_CHECK_GE(static_cast<int64_t>(seq->block_table.size()) * block_size, seq->context_len);
      plan.cpu_decodes.push_back({seq->q_start, seq->context_len, seq->block_table.data()});
    }
    plan.num_decodes = static_cast<int64_t>(decodes.size());
    return plan;
  }
  const int64_t b = static_cast<int64_t>(decodes.size());
  int64_t max_len = 0;
  for (const SequenceSlice* seq : decodes) max_len = std::max(max_len, seq->context_len);
  std::vector<int64_t> slots(static_cast<size_t>(b * max_len), 0);
  std::vector<uint8_t> valid(static_cast<size_t>(b * max_len), 0);
  std::vector<int64_t> rows(b);
  for (int64_t i = 0; i < b; ++i) {
    const std::vector<int64_t> s = context_slots(*decodes[i], block_size);
    std::copy(s.begin(), s.end(), slots.begin() + i * max_len);
    std::fill_n(valid.begin() + i * max_len, s.size(), 1);
    rows[i] = decodes[i]->q_start;
  }
  plan.num_decodes = b;
  plan.decode_max_len = max_len;
  plan.decode_rows = at::tensor(rows, at::kLong).to(device);
  plan.decode_slots = at::tensor(slots, at::kLong).to(device);
  plan.decode_mask =
      at::from_blob(valid.data(), {b, 1, 1, max_len}, at::kByte).to(device, at::kBool);
  return plan;
}

namespace {

at::Tensor expand_kv(const at::Tensor& kv, int64_t groups) {  // [.., kv_heads, n, d]
  return groups == 1 ? kv : kv.repeat_interleave(groups, -3);
}

}  // namespace

at::Tensor paged_attention(const at::Tensor& query, const at::Tensor& key_cache,
                           const at::Tensor& value_cache, const AttentionPlan& plan, double scale) {
  const int64_t heads = query.size(1), head_dim = query.size(2);
  const int64_t kv_heads = key_cache.size(2);
  const int64_t groups = heads / kv_heads;
  at::Tensor key_rows = key_cache.view({-1, kv_heads, head_dim});
  at::Tensor value_rows = value_cache.view({-1, kv_heads, head_dim});
#ifdef DSOCR_WITH_CUDA
  if (plan.gpu != nullptr) {
    TORCH_CHECK(query.scalar_type() == at::kBFloat16 && key_cache.scalar_type() == at::kBFloat16 &&
                    value_cache.scalar_type() == at::kBFloat16,
                "the GPU attention kernels take bfloat16 queries and caches");
    TORCH_CHECK(key_cache.is_contiguous() && value_cache.is_contiguous(),
                "the GPU attention kernels need contiguous caches");
    const at::Tensor q = query.contiguous();
    at::Tensor out = at::empty(q.sizes(), q.options());
    const c10::cuda::CUDAGuard guard(query.device());
    void* stream = at::cuda::getCurrentCUDAStream(query.device().index()).stream();
    const Status ran = plan.gpu_decode_only
                           ? plan.gpu->run_decode(q.data_ptr(), key_cache.data_ptr(),
                                                  value_cache.data_ptr(), out.data_ptr(), stream)
                           : plan.gpu->run_prefill(q.data_ptr(), key_cache.data_ptr(),
                                                   value_cache.data_ptr(), out.data_ptr(), stream);
    if (!ran.ok()) throw std::runtime_error("attention: " + ran.message());
    return out;
  }
#endif
  at::Tensor out = at::empty_like(query);

  for (const AttentionPlan::Prefill& p : plan.prefills) {
    // A cache narrower than the query (bfloat16 KV under float32 compute) is widened as gathered.
    at::Tensor k = expand_kv(
        key_rows.index_select(0, p.slots).to(query.scalar_type()).transpose(0, 1), groups);
    at::Tensor v = expand_kv(
        value_rows.index_select(0, p.slots).to(query.scalar_type()).transpose(0, 1), groups);
    at::Tensor q = query.slice(0, p.q_start, p.q_start + p.q_len).transpose(0, 1);  // [H, q, d]
    const bool causal = !p.mask.defined();
    at::Tensor o = at::scaled_dot_product_attention(
        q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0),
        causal ? std::optional<at::Tensor>() : std::optional<at::Tensor>(p.mask), 0.0, causal,
        scale);
    out.slice(0, p.q_start, p.q_start + p.q_len).copy_(o.squeeze(0).transpose(0, 1));
  }

  if (!plan.cpu_decodes.empty()) {
    TORCH_CHECK(query.is_contiguous() && key_cache.is_contiguous() && value_cache.is_contiguous(),
                "the CPU decode kernel needs contiguous query and caches");
    const auto float_or_bf16 = [](at::ScalarType t) { return t == at::kFloat || t == at::kBFloat16; };
    TORCH_CHECK(key_cache.scalar_type() == value_cache.scalar_type() &&
                    float_or_bf16(query.scalar_type()) && float_or_bf16(key_cache.scalar_type()),
                "the CPU decode kernel takes float32 or bfloat16 query and caches (K and V of one "
                "dtype)");
    cpu::PagedAttentionArgs args;
    args.query = query.data_ptr();
    args.out = out.data_ptr();
    args.key_cache = key_cache.data_ptr();
    args.value_cache = value_cache.data_ptr();
    args.dtype = query.scalar_type() == at::kFloat ? cpu::Dtype::kFloat32 : cpu::Dtype::kBFloat16;
    args.cache_dtype =
        key_cache.scalar_type() == at::kFloat ? cpu::Dtype::kFloat32 : cpu::Dtype::kBFloat16;
    args.heads = heads;
    args.kv_heads = kv_heads;
    args.head_dim = head_dim;
    args.block_size = key_cache.size(1);
    args.scale = static_cast<float>(scale);
    cpu::paged_decode_attention(args, plan.cpu_decodes);
  } else if (plan.num_decodes > 0) {
    const int64_t b = plan.num_decodes, max_len = plan.decode_max_len;
    at::Tensor k = key_rows.index_select(0, plan.decode_slots)
                       .to(query.scalar_type())
                       .view({b, max_len, kv_heads, head_dim})
                       .transpose(1, 2);
    at::Tensor v = value_rows.index_select(0, plan.decode_slots)
                       .to(query.scalar_type())
                       .view({b, max_len, kv_heads, head_dim})
                       .transpose(1, 2);
    at::Tensor q = query.index_select(0, plan.decode_rows).unsqueeze(2);  // [B, H, 1, d]
    at::Tensor o = at::scaled_dot_product_attention(q, expand_kv(k, groups), expand_kv(v, groups),
                                                    plan.decode_mask, 0.0, false, scale);
    out.index_copy_(0, plan.decode_rows, o.squeeze(2));
  }
  return out;
}

}  // namespace dsocr::engine

#include "engine/decode_graphs.h"

#include <stdexcept>

#ifdef DSOCR_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#endif

#include "engine/request.h"

namespace dsocr::engine {

DecodeGraphs::DecodeGraphs(model::LanguageModel language, KvCache& cache, int32_t scratch_block,
                           int64_t max_batch)
    : language_(std::move(language)),
      cache_(cache),
      scratch_block_(scratch_block),
      sizes_(decode_graph_sizes(max_batch)) {}

DecodeGraphs::~DecodeGraphs() = default;

ForwardBatch DecodeGraphs::batch_for(DecodeRows&& rows, int64_t padded) const {
  ForwardBatch batch;
  batch.input_ids = inputs_[0].slice(0, 0, padded);
  batch.positions = inputs_[1].slice(0, 0, padded);
  batch.slot_mapping = inputs_[2].slice(0, 0, padded);
  batch.logits_rows = logits_rows_.slice(0, 0, padded);
  for (int64_t i = 0; i < padded; ++i)
    batch.sequences.push_back(SequenceSlice{i, 1, rows.context_lens[static_cast<size_t>(i)],
                                            std::move(rows.block_tables[static_cast<size_t>(i)])});
  return batch;
}

AttentionPlan DecodeGraphs::plan(const ForwardBatch& batch) const {
  const auto& config = language_->config();
  return AttentionPlan::build(batch, cache_.block_size, language_->device(),
                              config.num_attention_heads, config.head_dim(), /*reference=*/false,
                              cache_.gpu_attention.get(), /*for_graph=*/true);
}

#ifdef DSOCR_WITH_CUDA

std::unique_ptr<DecodeGraphs> DecodeGraphs::capture(model::LanguageModel language, KvCache& cache,
                                                    int32_t scratch_block, int64_t max_batch,
                                                    spdlog::logger& logger) {
  if (!language->device().is_cuda()) return nullptr;
  if (language->dtype() != at::kBFloat16 || !cache.gpu_attention) {
    logger.info("CUDA graphs: off (they need bfloat16 and the GPU attention kernels)");
    return nullptr;
  }
  std::unique_ptr<DecodeGraphs> graphs(
      new DecodeGraphs(std::move(language), cache, scratch_block, max_batch));
  if (graphs->sizes_.empty()) {
    logger.info("CUDA graphs: off (no batch size to capture: --max-num-seqs {})", max_batch);
    return nullptr;
  }
  DecodeGraphs& g = *graphs;
  const at::Device device = g.language_->device();
  const int64_t largest = g.sizes_.back();
  const auto longs = at::TensorOptions().dtype(at::kLong).device(device);
  g.inputs_ = at::zeros({3, largest}, longs);
  g.inputs_[2].fill_(-1);  // padding rows write no K/V
  g.logits_rows_ = at::arange(largest, longs);

  const c10::cuda::CUDAGuard device_guard(device);
  const auto started = Clock::now();
  const at::cuda::CUDAStream stream = at::cuda::getStreamFromPool(false, device.index());
  std::unique_ptr<at::cuda::CUDAGraph> graph;
  try {
    const at::cuda::CUDAStreamGuard stream_guard(stream);
    const auto pool = at::cuda::graph_pool_handle();
    for (auto size = g.sizes_.rbegin(); size != g.sizes_.rend(); ++size) {
      const int64_t p = *size;
      DecodeRows dummies;
      pad_decode_rows(dummies, p, scratch_block, cache.block_size);
      const ForwardBatch batch = g.batch_for(std::move(dummies), p);
      const AttentionPlan attention = g.plan(batch);
      // One eager run first: lazily created state (library handles, workspaces) must exist
      // before capture, which may not create it.
      (void)g.language_->forward(batch, cache, attention);
      stream.synchronize();
      graph = std::make_unique<at::cuda::CUDAGraph>();
      graph->capture_begin(pool);
      at::Tensor logits = g.language_->forward(batch, cache, attention);
      graph->capture_end();
      g.outputs_[p] = logits;
      g.graphs_[p] = std::move(graph);
    }
    stream.synchronize();
  } catch (const std::exception& e) {
    // A capture left open would keep routing the stream's work (and the allocator) into the
    // graph: end it before running eagerly.
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream.stream(), &status) == cudaSuccess &&
        status != cudaStreamCaptureStatusNone) {
      try {
        if (graph) graph->capture_end();
      } catch (const std::exception&) {
        cudaGraph_t broken = nullptr;
        if (cudaStreamEndCapture(stream.stream(), &broken) == cudaSuccess && broken != nullptr)
          cudaGraphDestroy(broken);
      }
    }
    (void)cudaGetLastError();
    logger.warn("CUDA graphs: off, capture failed ({}); decode steps run eagerly", e.what());
    return nullptr;
  }
  logger.info("CUDA graphs: decode steps captured for {} batch sizes (1..{}) in {:.1f} s",
              g.sizes_.size(), largest, ms_between(started, Clock::now()) / 1000);
  return graphs;
}

at::Tensor DecodeGraphs::run(DecodeRows rows) {
  const int64_t real = static_cast<int64_t>(rows.ids.size());
  const int64_t padded = decode_graph_size_for(sizes_, real);
  if (real == 0 || padded == 0) return at::Tensor();
  pad_decode_rows(rows, padded, scratch_block_, cache_.block_size);
  at::Tensor host =
      at::empty({3, padded}, at::TensorOptions().dtype(at::kLong).pinned_memory(true));
  int64_t* out = host.data_ptr<int64_t>();
  out = std::copy(rows.ids.begin(), rows.ids.end(), out);
  out = std::copy(rows.positions.begin(), rows.positions.end(), out);
  std::copy(rows.slots.begin(), rows.slots.end(), out);
  inputs_.narrow(1, 0, padded).copy_(host, /*non_blocking=*/true);
  // Rewrites the buffers the graph's kernels read. A plan the captured launch cannot run (the
  // kernels report it) sends the step down the eager path, which plans again.
  try {
    (void)plan(batch_for(std::move(rows), padded));
  } catch (const std::exception&) {
    return at::Tensor();
  }
  graphs_.at(padded)->replay();
  return outputs_.at(padded).slice(0, 0, real);
}

#else

std::unique_ptr<DecodeGraphs> DecodeGraphs::capture(model::LanguageModel, KvCache&, int32_t,
                                                    int64_t, spdlog::logger&) {
  return nullptr;
}

at::Tensor DecodeGraphs::run(DecodeRows) { return at::Tensor(); }

#endif

}  // namespace dsocr::engine

// ModelRunner: the model and its KV cache on one device, and one step of it.
//
// load() picks the device and dtype, sets the torch threads, loads the vision encoder and the
// language model strictly from the checkpoint, and sizes the KV cache: unless a block count is
// given, it runs one maximal step through a throwaway cache to find the peak activation memory,
// then takes kv_memory_fraction of what is left (capped on the CPU, where free memory is shared).
//
// run() carries out one StepPlan of the scheduler: encodes the plan's images (in one batch
// through the vision encoder, or from the host copy kept for a preempted request, or from the
// image-encoding cache), gathers the chunks' rows into a ForwardBatch (image rows taken from the
// embeddings, spec §8.3), runs the language model on the paged KV cache and samples one token
// per sampling chunk with each request's own parameters and generator. It writes K/V only into
// the slots of the plan's chunks, so a run that throws leaves every other request's cache as it
// was: the caller fails the plan's requests and goes on.
//
// Image-encoding cache: the last few encodings by (cache salt, content hash), so that the same
// page asked again (by the same salt) skips the encoder.
//
// Thread-safety: the engine thread only, except stats(), which any thread may call.
// Invariants: the KV cache has num_kv_blocks() blocks of the scheduler's block size; a request's
// RequestImage::on_device is defined while the scheduler has its image marked encoded and its
// span is not fully computed (run() checks it and throws rather than read garbage).
#pragma once

#include <ATen/core/Tensor.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"
#include "engine/core/scheduler.h"
#include "engine/engine.h"
#include "engine/request.h"
#include "weights/model_config.h"

namespace dsocr::engine {

struct StepOutput {
  std::vector<int32_t> sampled;  // one per sampling chunk, in plan order
  at::Tensor logits;             // [sampled.size(), vocab] float32 on the CPU, when any chunk's
                                 // request asked for logits; else undefined
};

struct RunnerStats {
  uint64_t images_encoded = 0, image_cache_hits = 0;
  double vision_encode_seconds = 0;  // wall time of the vision-encoder steps
};

class ModelRunner {
 public:
  // `options.scheduler` must already be capped to the model (max_model_len).
  // Pixels freed by encoding are given back to `budget` (which outlives the runner).
  static StatusOr<std::unique_ptr<ModelRunner>> load(const EngineOptions& options,
                                                     const weights::ModelConfig& config,
                                                     PendingImageBudget* budget);
  ~ModelRunner();

  StepOutput run(const StepPlan& plan);
  // The plan preempted these requests: their device embeddings go (the host copies stay).
  void drop_embeddings(Request& request);

  int64_t num_kv_blocks() const { return num_kv_blocks_; }
  // Whether decode steps replay CUDA graphs (decode_graphs.h).
  bool decode_graphs() const;
  const std::string& device_name() const { return device_name_; }
  bool on_cuda() const;
  RunnerStats stats() const;

 private:
  struct Impl;
  explicit ModelRunner(std::unique_ptr<Impl> impl);

  void encode_images(const StepPlan& plan);
  void keep_encoding(Request& request, int image_index, const at::Tensor& embeddings);
  at::Tensor forward(const StepPlan& plan);
  // A decode-only step through the CUDA graphs; undefined when the step does not qualify.
  at::Tensor forward_decode_graph(const StepPlan& plan);

  std::unique_ptr<Impl> impl_;
  std::string device_name_;
  int64_t num_kv_blocks_ = 0;
  PendingImageBudget* budget_ = nullptr;
  std::function<bool(const std::vector<std::string>&)> step_fault_;  // EngineOptions::step_fault
  mutable std::mutex stats_mu_;
  RunnerStats stats_;  // guarded by stats_mu_
};

}  // namespace dsocr::engine

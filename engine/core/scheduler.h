// Scheduler: decides, step by step, which tokens of which requests the model computes
// (vLLM v1 style: no prefill/decode phases; every request simply catches its computed tokens up
// with its tokens under a per-step token budget).
//
// Each step: running requests first, in arrival order, each given its remaining tokens (1 when
// decoding; a chunk when prefilling) until max_num_batched_tokens is spent; then waiting requests
// are admitted in order while budget, max_num_seqs and KV blocks allow, starting after their
// prefix-cache hit. A chunk that reaches an image span needs the image's embeddings: images are
// encoded whole, within a per-step image-token budget (at least one image per step, so a huge
// image cannot stall forever); a chunk is cut before an image that does not fit this step.
// When KV blocks run out, the most recently admitted running request is preempted by recompute
// (blocks freed, computed tokens reset, back to the front of the queue); its generated tokens
// are kept and recomputed as prompt.
//
// The scheduler is torch-free and integer-only; the engine runs the plan and reports the sampled
// tokens back with update(), which appends them, applies the stop rules and frees finished
// requests' blocks. It does not own the requests: the engine's record of a request *is* its
// Sequence (engine/request.h), so there is one record per request, not two maps to keep in step.
//
// Thread-safety: single-threaded (the engine thread).
// Invariants: a Sequence is in exactly one of running_ (status kRunning, admission order) and
// waiting_ (kWaiting, next to admit first) until it finishes, and then in neither; a running
// request's KV blocks cover its computed tokens; SequenceImage::encoded is set only for an image
// whose embeddings the engine holds or whose span lies in a cached prefix.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/core/batching.h"
#include "engine/core/block_manager.h"
#include "engine/core/sampling_params.h"

namespace dsocr::engine {


struct SequenceImage {
  int64_t offset = 0;  // first placeholder position in the prompt
  int64_t length = 0;  // placeholder count == embedding rows
  uint64_t content_hash = 0;
  bool encoded = false;  // its embeddings are held by the engine (or its span is cached)
};

enum class SequenceStatus { kWaiting, kRunning, kFinished };

struct Sequence {
  uint64_t id = 0;
  std::vector<int32_t> tokens;  // prompt, then generated tokens
  int64_t prompt_len = 0;
  std::vector<SequenceImage> images;
  SamplingParams params;
  int64_t max_total_tokens = 0;  // prompt_len + max_tokens, capped by max_model_len
  uint64_t cache_salt_hash = 0;  // starts its prefix-cache hash chain (block_manager.h)

  SequenceStatus status = SequenceStatus::kWaiting;
  FinishReason finish_reason = FinishReason::kNone;
  int64_t num_computed = 0;       // tokens whose K/V are in the cache
  int64_t num_cached_tokens = 0;  // prefix-cache hit at first admission
  int preemptions = 0;
  KvBlocks kv;
  std::vector<uint64_t> block_hashes;  // full prompt blocks (prefix caching)

  int64_t num_tokens() const { return static_cast<int64_t>(tokens.size()); }
  int64_t output_len() const { return num_tokens() - prompt_len; }
};

struct ScheduledChunk {
  Sequence* seq;
  int64_t begin;  // first token index computed this step
  int64_t num_tokens;
  bool samples;  // the chunk ends at the last token: sample the next one
};

struct ImageToEncode {
  Sequence* seq;
  int image_index;
};

struct StepPlan {
  std::vector<ScheduledChunk> chunks;
  std::vector<ImageToEncode> images;  // encode before running the chunks
  std::vector<uint64_t> preempted;    // their images' embeddings must be dropped
  int64_t num_tokens = 0;
  bool empty() const { return chunks.empty(); }
};


class Scheduler {
 public:
  Scheduler(const SchedulerConfig& config, int num_blocks, int block_size, bool prefix_caching);

  // Takes a new request (status waiting); the caller owns it and keeps it alive until it has
  // finished (status kFinished: the scheduler holds no pointer to it any more). Its prompt must
  // fit max_model_len (checked at submit).
  Sequence* add(Sequence* seq);
  // Cancels a request wherever it is; its blocks are freed now. False if already finished.
  bool abort(Sequence* seq);

  StepPlan schedule();
  // Applies a step's results: `sampled[i]` is the token for the i-th sampling chunk of `plan`
  // (in plan order). Returns the requests that finished in this step.
  std::vector<Sequence*> update(const StepPlan& plan, const std::vector<int32_t>& sampled);

  // A running or waiting request by id, or nullptr (finished ones are forgotten).
  Sequence* find(uint64_t id) const;
  // Every running and waiting request, running first.
  std::vector<Sequence*> sequences() const;
  // The request admitted next, or nullptr when none waits.
  Sequence* next_waiting() const { return waiting_.empty() ? nullptr : waiting_.front(); }
  bool has_work() const { return !running_.empty() || !waiting_.empty(); }
  SchedulerStats stats() const;
  const BlockManager& block_manager() const { return blocks_; }
  const SchedulerConfig& config() const { return config_; }

 private:
  // How many of `want` tokens from seq->num_computed can run this step given its images;
  // plans the encodings it needs.
  int64_t fit_images(Sequence* seq, int64_t begin, int64_t want, int64_t* image_budget,
                     StepPlan* plan);
  void preempt(Sequence* seq, StepPlan* plan);
  void finish(Sequence* seq, FinishReason reason);
  FinishReason stop_reason(const Sequence& seq) const;

  SchedulerConfig config_;
  BlockManager blocks_;
  bool prefix_caching_;
  std::vector<Sequence*> running_;  // admission order; the back is preempted first
  std::deque<Sequence*> waiting_;
  int64_t preemptions_ = 0;
};

}  // namespace dsocr::engine

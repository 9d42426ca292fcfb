#include "engine/core/scheduler.h"

#include <algorithm>

#include "common/check.h"
#include "engine/core/token_rules.h"

namespace dsocr::engine {

std::string_view finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone:
      return "";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kLoop:
      return "loop";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kError:
      return "error";
  }
  return "";
}

Scheduler::Scheduler(const SchedulerConfig& config, int num_blocks, int block_size,
                     bool prefix_caching)
    : config_(config),
      blocks_(num_blocks, block_size, prefix_caching),
      prefix_caching_(prefix_caching) {}

Sequence* Scheduler::add(Sequence* seq) {
  DSOCR_CHECK(seq->num_tokens() > 0);
  DSOCR_CHECK(find(seq->id) == nullptr) << "duplicate sequence id " << seq->id;
  seq->status = SequenceStatus::kWaiting;
  if (prefix_caching_) {
    std::vector<ImageSpanRef> spans;
    for (const auto& img : seq->images) spans.push_back({img.offset, img.length, img.content_hash});
    seq->block_hashes = block_hashes(std::span<const int32_t>(seq->tokens.data(), seq->prompt_len),
                                     spans, blocks_.block_size(), seq->cache_salt_hash);
  }
  waiting_.push_back(seq);
  return seq;
}

Sequence* Scheduler::find(uint64_t id) const {
  for (Sequence* seq : running_)
    if (seq->id == id) return seq;
  for (Sequence* seq : waiting_)
    if (seq->id == id) return seq;
  return nullptr;
}

std::vector<Sequence*> Scheduler::sequences() const {
  std::vector<Sequence*> all(running_.begin(), running_.end());
  all.insert(all.end(), waiting_.begin(), waiting_.end());
  return all;
}

bool Scheduler::abort(Sequence* seq) {
  if (seq->status == SequenceStatus::kFinished) return false;
  finish(seq, FinishReason::kCancelled);
  return true;
}

void Scheduler::finish(Sequence* seq, FinishReason reason) {
  blocks_.free(&seq->kv);
  if (seq->status == SequenceStatus::kRunning)
    running_.erase(std::find(running_.begin(), running_.end(), seq));
  else if (seq->status == SequenceStatus::kWaiting)
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), seq));
  seq->status = SequenceStatus::kFinished;
  seq->finish_reason = reason;
}

void Scheduler::preempt(Sequence* seq, StepPlan* plan) {
  blocks_.free(&seq->kv);
  seq->num_computed = 0;
  for (auto& img : seq->images) img.encoded = false;
  running_.erase(std::find(running_.begin(), running_.end(), seq));
  seq->status = SequenceStatus::kWaiting;
  ++seq->preemptions;
  ++preemptions_;
  waiting_.push_front(seq);
  plan->preempted.push_back(seq->id);
  // A preempted request's own image encodings planned this step are void.
  std::erase_if(plan->images, [&](const ImageToEncode& e) { return e.seq == seq; });
}

int64_t Scheduler::fit_images(Sequence* seq, int64_t begin, int64_t want, int64_t* image_budget,
                              StepPlan* plan) {
  const int64_t end = begin + want;
  for (int i = 0; i < static_cast<int>(seq->images.size()); ++i) {
    SequenceImage& img = seq->images[i];
    if (img.encoded || img.offset + img.length <= begin || img.offset >= end) continue;
    const bool planned =
        std::any_of(plan->images.begin(), plan->images.end(),
                    [&](const ImageToEncode& e) { return e.seq == seq && e.image_index == i; });
    if (planned) continue;
    if (*image_budget >= img.length || plan->images.empty()) {
      *image_budget -= img.length;
      plan->images.push_back({seq, i});
    } else {
      return std::max<int64_t>(0, img.offset - begin);  // stop before this image
    }
  }
  return want;
}

StepPlan Scheduler::schedule() {
  StepPlan plan;
  int64_t budget = config_.max_num_batched_tokens;
  int64_t image_budget = config_.max_image_tokens_per_step;

  // Running requests first; preemption may shrink running_ while we walk it.
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    Sequence* seq = running_[i];
    int64_t n = std::min(seq->num_tokens() - seq->num_computed, budget);
    n = fit_images(seq, seq->num_computed, n, &image_budget, &plan);
    if (n <= 0) {
      ++i;
      continue;
    }
    bool self_preempted = false;
    while (!blocks_.allocate(&seq->kv, seq->num_computed + n)) {
      Sequence* victim = running_.back();
      // Chunks already planned for the victim this step are void too.
      std::erase_if(plan.chunks, [&](const ScheduledChunk& c) {
        if (c.seq != victim) return false;
        budget += c.num_tokens;
        return true;
      });
      preempt(victim, &plan);
      if (victim == seq) {
        self_preempted = true;
        break;
      }
    }
    if (self_preempted) break;  // everything after it was preempted first
    plan.chunks.push_back({seq, seq->num_computed, n, seq->num_computed + n == seq->num_tokens()});
    budget -= n;
    ++i;
  }

  // Then waiting requests, unless memory was short this step.
  while (plan.preempted.empty() && !waiting_.empty() && budget > 0 &&
         static_cast<int64_t>(running_.size()) < config_.max_num_seqs) {
    Sequence* seq = waiting_.front();
    int hits = 0;
    if (seq->kv.blocks.empty() && prefix_caching_)
      hits = blocks_.find_cached_prefix(seq->block_hashes, seq->num_tokens());
    const int64_t start = static_cast<int64_t>(hits) * blocks_.block_size();
    for (auto& img : seq->images)  // spans entirely inside the cached prefix need no encoding
      if (img.offset + img.length <= start) img.encoded = true;
    int64_t n = std::min(seq->num_tokens() - start, budget);
    n = fit_images(seq, start, n, &image_budget, &plan);
    if (n <= 0) break;
    if (!blocks_.allocate(&seq->kv, start + n, seq->block_hashes, hits)) {
      std::erase_if(plan.images, [&](const ImageToEncode& e) { return e.seq == seq; });
      for (auto& img : seq->images)
        if (img.offset + img.length <= start) img.encoded = false;
      break;
    }
    waiting_.pop_front();
    seq->num_computed = start;
    if (seq->preemptions == 0) seq->num_cached_tokens = start;
    seq->status = SequenceStatus::kRunning;
    running_.push_back(seq);
    plan.chunks.push_back({seq, start, n, start + n == seq->num_tokens()});
    budget -= n;
  }
  plan.num_tokens = config_.max_num_batched_tokens - budget;
  return plan;
}

FinishReason Scheduler::stop_reason(const Sequence& seq) const {
  const int32_t last = seq.tokens.back();
  const SamplingParams& p = seq.params;
  if (!p.ignore_eos && last == config_.eos_token_id) return FinishReason::kStop;
  if (std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), last) != p.stop_token_ids.end())
    return FinishReason::kStop;
  if (seq.num_tokens() >= seq.max_total_tokens) return FinishReason::kLength;
  if (p.loop_min_span > 0 &&
      detect_loop(std::span<const int32_t>(seq.tokens).subspan(seq.prompt_len), p.loop_min_span,
                  p.loop_max_period))
    return FinishReason::kLoop;
  return FinishReason::kNone;
}

std::vector<Sequence*> Scheduler::update(const StepPlan& plan,
                                         const std::vector<int32_t>& sampled) {
  std::vector<Sequence*> finished;
  size_t next_sample = 0;
  for (const ScheduledChunk& chunk : plan.chunks) {
    Sequence* seq = chunk.seq;
    DSOCR_CHECK(seq->status == SequenceStatus::kRunning ||
                seq->status == SequenceStatus::kFinished);
    if (chunk.samples) DSOCR_CHECK_LT(next_sample, sampled.size());
    const int32_t token = chunk.samples ? sampled[next_sample++] : 0;
    if (seq->status == SequenceStatus::kFinished) continue;  // cancelled during the step
    seq->num_computed = chunk.begin + chunk.num_tokens;
    if (prefix_caching_) blocks_.cache_blocks(&seq->kv, seq->block_hashes, seq->num_computed);
    if (!chunk.samples) continue;
    seq->tokens.push_back(token);
    FinishReason reason = stop_reason(*seq);
    if (reason != FinishReason::kNone) {
      finish(seq, reason);
      finished.push_back(seq);
    }
  }
  for (const ImageToEncode& e : plan.images)
    if (e.seq->status != SequenceStatus::kFinished) e.seq->images[e.image_index].encoded = true;
  return finished;
}

SchedulerStats Scheduler::stats() const {
  SchedulerStats s;
  s.running = static_cast<int64_t>(running_.size());
  s.waiting = static_cast<int64_t>(waiting_.size());
  s.kv_usage = blocks_.usage();
  s.preemptions = preemptions_;
  s.prefix = blocks_.stats();
  return s;
}

}  // namespace dsocr::engine

#include "engine/request_preparer.h"

#include <algorithm>
#include <string>

#include "engine/core/block_manager.h"

namespace dsocr::engine {

StreamEvent cancelled_event() {
  StreamEvent e;
  e.finished = true;
  e.finish_reason = FinishReason::kCancelled;
  return e;
}

StreamEvent shutdown_event() {
  StreamEvent e = cancelled_event();
  e.error = Status(StatusCode::kUnavailable, "the server is shutting down");
  e.failure = FailureReason::kShuttingDown;
  return e;
}

StreamEvent error_event(Status status, FailureReason failure) {
  StreamEvent e;
  e.finished = true;
  e.finish_reason = FinishReason::kError;
  e.error = std::move(status);
  e.failure = failure;
  return e;
}

namespace {

// An encoded image is decoded (EXIF applied); a PDF page is rendered at 144 dpi.
StatusOr<vision::PreprocessedImage> decode_and_preprocess(const ImageSource& source) {
  if (!source.document) return vision::decode_and_preprocess(source.encoded, {});
  DSOCR_ASSIGN_OR_RETURN(vision::RgbImage page, source.document->render(source.page_number));
  return vision::preprocess(page);
}

int64_t pixel_bytes(const vision::PreprocessedImage& image) {
  int64_t n = static_cast<int64_t>(image.global_view.pixels.size());
  for (const auto& tile : image.tiles) n += static_cast<int64_t>(tile.pixels.size());
  return n;
}

}  // namespace

RequestPreparer::RequestPreparer(const Options& options,
                                 tokenizer::OcrPromptBuilder prompt_builder,
                                 PendingImageBudget* budget, Callbacks callbacks)
    : options_(options),
      prompt_builder_(std::move(prompt_builder)),
      budget_(budget),
      callbacks_(std::move(callbacks)) {
  vision::VisionWorkersOptions wo;
  wo.threads = options.threads;
  wo.queue_capacity = options.queue_capacity;
  workers_ = std::make_unique<vision::VisionWorkers>(wo);
}

RequestPreparer::~RequestPreparer() { workers_.reset(); }

bool RequestPreparer::post(std::shared_ptr<Request> request) {
  ++in_flight_;
  if (workers_->try_post([this, request] { prepare(request); })) return true;
  --in_flight_;
  return false;
}

void RequestPreparer::prepare(const std::shared_ptr<Request>& record) {
  struct Done {
    std::atomic<int64_t>& n;
    ~Done() { --n; }
  } done{in_flight_};
  std::optional<GenerateRequest> request = record->take();
  if (!request) return;  // ended while queued
  RequestStream& stream = *record->stream;
  std::vector<vision::PreprocessedImage> images;
  std::vector<int64_t> token_counts;
  int64_t pixels = 0;
  for (size_t i = 0; i < request->images.size(); ++i) {
    // Between images: a cancel (or drain) ends the request here, not after all of them.
    if (stream.cancelled()) return callbacks_.end(record, cancelled_event());
    if (stream.ended()) return;
    auto image = decode_and_preprocess(request->images[i]);
    if (!image.ok())
      return callbacks_.end(
          record, error_event(image.status().with_context("image " + std::to_string(i + 1)),
                              FailureReason::kInvalidInput));
    request->images[i] = ImageSource();  // the bytes (or the document) are no longer needed
    token_counts.push_back(image->plan.image_tokens);
    pixels += pixel_bytes(*image);
    images.push_back(std::move(image).value());
  }
  // From the worst case charged at submit down to what the pixels really take.
  budget_->uncharge(*record, record->charged_bytes.load() - pixels);

  auto text = tokenizer::chat_prompt_text(std::span<const std::string>(&request->prompt, 1),
                                          token_counts.size());
  if (!text.ok())
    return callbacks_.end(record, error_event(text.status(), FailureReason::kInvalidInput));
  auto prompt = prompt_builder_.build(*text, token_counts);
  if (!prompt.ok())
    return callbacks_.end(record, error_event(prompt.status(), FailureReason::kInvalidInput));
  const int64_t prompt_len = static_cast<int64_t>(prompt->ids.size());
  const int64_t limit = options_.max_model_len;
  // Compared without adding: max_tokens may be near INT64_MAX, and the sum would wrap.
  if (std::max<int64_t>(request->sampling.max_tokens, 1) > limit - prompt_len) {
    return callbacks_.end(
        record,
        error_event(Status(StatusCode::kOutOfRange,
                           std::string(kContextLengthExceeded) +
                               ": this model's maximum context length is " +
                               std::to_string(limit) + " tokens; the prompt has " +
                               std::to_string(prompt_len) + " tokens (" +
                               std::to_string(prompt->num_image_tokens()) +
                               " of them image tokens) and max_tokens is " +
                               std::to_string(request->sampling.max_tokens)),
                    FailureReason::kContextLengthExceeded));
  }

  // The scheduler's view (the record's Sequence part) and the engine's, image by image.
  Request& r = *record;
  r.tokens = std::move(prompt->ids);
  r.prompt_len = prompt_len;
  r.params = std::move(request->sampling);
  const int64_t max_new = r.params.max_tokens > 0 ? r.params.max_tokens : limit - prompt_len;
  r.max_total_tokens = prompt_len + std::min(max_new, limit - prompt_len);
  r.cache_salt_hash = cache_salt_hash(request->cache_salt);
  r.rng.seed(r.params.seed ? *r.params.seed : std::random_device{}());
  for (size_t i = 0; i < prompt->image_spans.size(); ++i) {
    const auto& span = prompt->image_spans[i];
    r.images.push_back({static_cast<int64_t>(span.offset),
                                  static_cast<int64_t>(span.length), images[i].content_hash,
                                  false});
    r.image_tokens += static_cast<int64_t>(span.length);
    RequestImage image;
    image.charged_pixel_bytes = pixel_bytes(images[i]);
    image.pixels = std::move(images[i]);
    r.image_states.push_back(std::move(image));
  }
  if (stream.cancelled()) return callbacks_.end(record, cancelled_event());
  r.prepared = Clock::now();
  StreamEvent accepted;
  accepted.accepted = true;
  for (const RequestImage& image : r.image_states)
    accepted.image_sizes.push_back({image.pixels.plan.width, image.pixels.plan.height});
  stream.push(std::move(accepted));
  callbacks_.on_prepared(record);
}

}  // namespace dsocr::engine

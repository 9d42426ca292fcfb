// The DeepSeek-OCR-2 prompt (spec §8): the token sequence the language model sees.
//
//   ids = [BOS] + tok(t0) + [<image>] * N0 + tok(t1) + [<image>] * N1 + ... + tok(t_last)
//
// where the prompt text, stripped of leading and trailing whitespace (Python's str.strip, as the
// official "plain" template does), is split on the "<image>" marker into t0..t_last, N_k is the
// image-token count of image k (257 + 144 x tiles, known from its tiling before any model runs),
// and tok() encodes without special tokens (added tokens such as <|grounding|> are still
// recognised in the text). No EOS is appended.
//
// Thread-safety: OcrPromptBuilder is immutable; build() may run concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "tokenizer/tokenizer.h"

namespace dsocr::tokenizer {

inline constexpr std::string_view kImageMarker = "<image>";
inline constexpr std::string_view kBosToken =
    "<\xEF\xBD\x9C"
    "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>";

// Ends every generation (spec §10.1); not part of the text (spec §10.3).
inline constexpr std::string_view kEosToken =
    "<\xEF\xBD\x9C"
    "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>";

// The official task prompts: "document" (markdown with layout boxes) and "free" (plain OCR).
std::optional<std::string_view> ocr_task_prompt(std::string_view task);

// Prompt text for a chat message with `num_images` image parts and these text parts, in whatever
// order the client sent them: if the text already carries exactly one "<image>" marker per image
// it is used as is; otherwise the markers come first, then a newline and the text parts joined by
// newlines ("<image>\nFree OCR." for one image and the text "Free OCR."). More markers than
// images is an error.
StatusOr<std::string> chat_prompt_text(std::span<const std::string> text_parts, size_t num_images);

struct OcrPrompt {
  std::vector<int32_t> ids;
  struct ImageSpan {
    size_t offset;  // index in ids of the image's first placeholder
    size_t length;  // == the image's token count
  };
  std::vector<ImageSpan> image_spans;
  size_t num_image_tokens() const;
};

class OcrPromptBuilder {
 public:
  // Looks up BOS and <image> in the tokenizer; kInvalidArgument if either is missing.
  static StatusOr<OcrPromptBuilder> create(std::shared_ptr<const Tokenizer> tokenizer);

  // kInvalidArgument when the number of "<image>" markers differs from image_token_counts.size()
  // or a count is not positive.
  StatusOr<OcrPrompt> build(std::string_view prompt_text,
                            std::span<const int64_t> image_token_counts) const;

  int32_t bos_id() const { return bos_id_; }
  int32_t image_id() const { return image_id_; }

 private:
  std::shared_ptr<const Tokenizer> tokenizer_;
  int32_t bos_id_ = 0;
  int32_t image_id_ = 0;
};

}  // namespace dsocr::tokenizer

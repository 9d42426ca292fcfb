#include "tokenizer/ocr_prompt.h"

#include "tokenizer/utf8.h"

namespace dsocr::tokenizer {
namespace {

size_t count_markers(std::string_view text) {
  size_t n = 0;
  for (size_t pos = text.find(kImageMarker); pos != std::string_view::npos;
       pos = text.find(kImageMarker, pos + kImageMarker.size())) {
    ++n;
  }
  return n;
}

}  // namespace

std::optional<std::string_view> ocr_task_prompt(std::string_view task) {
  if (task == "document") return "<image>\n<|grounding|>Convert the document to markdown.";
  if (task == "free") return "<image>\nFree OCR.";
  return std::nullopt;
}

StatusOr<std::string> chat_prompt_text(std::span<const std::string> text_parts, size_t num_images) {
  std::string text;
  for (size_t i = 0; i < text_parts.size(); ++i) {
    if (i) text += "\n";
    text += text_parts[i];
  }
  size_t markers = count_markers(text);
  if (markers == num_images) return text;
  if (markers > 0) {
    return invalid_argument("the text has " + std::to_string(markers) +
                            " <image> markers but the message has " + std::to_string(num_images) +
                            " images");
  }
  std::string prompt;
  for (size_t i = 0; i < num_images; ++i) prompt += kImageMarker;
  if (num_images > 0 && !text.empty()) prompt += "\n";
  return prompt + text;
}

size_t OcrPrompt::num_image_tokens() const {
  size_t n = 0;
  for (const auto& span : image_spans) n += span.length;
  return n;
}

StatusOr<OcrPromptBuilder> OcrPromptBuilder::create(std::shared_ptr<const Tokenizer> tokenizer) {
  auto bos = tokenizer->token_to_id(kBosToken);
  auto image = tokenizer->token_to_id(kImageMarker);
  if (!bos || !image) {
    return invalid_argument("the tokenizer lacks the BOS or <image> token of DeepSeek-OCR-2");
  }
  OcrPromptBuilder builder;
  builder.tokenizer_ = std::move(tokenizer);
  builder.bos_id_ = *bos;
  builder.image_id_ = *image;
  return builder;
}

StatusOr<OcrPrompt> OcrPromptBuilder::build(std::string_view prompt_text,
                                            std::span<const int64_t> image_token_counts) const {
  std::string_view text = python_strip(prompt_text);
  if (count_markers(text) != image_token_counts.size()) {
    return invalid_argument("the prompt has " + std::to_string(count_markers(text)) +
                            " <image> markers for " + std::to_string(image_token_counts.size()) +
                            " images");
  }
  OcrPrompt prompt;
  prompt.ids.push_back(bos_id_);
  size_t image = 0;
  while (true) {
    size_t marker = text.find(kImageMarker);
    std::string_view segment = text.substr(0, marker);
    std::vector<int32_t> ids = tokenizer_->encode(segment, /*add_special_tokens=*/false);
    prompt.ids.insert(prompt.ids.end(), ids.begin(), ids.end());
    if (marker == std::string_view::npos) break;
    int64_t count = image_token_counts[image++];
    if (count <= 0) return invalid_argument("an image must have a positive token count");
    prompt.image_spans.push_back({prompt.ids.size(), static_cast<size_t>(count)});
    prompt.ids.insert(prompt.ids.end(), static_cast<size_t>(count), image_id_);
    text.remove_prefix(marker + kImageMarker.size());
  }
  return prompt;
}

}  // namespace dsocr::tokenizer

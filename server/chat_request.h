// ChatRequest: a POST /v1/chat/completions body, parsed and validated into what the engine needs.
//
// The accepted fields follow OpenAI's Chat Completions request; vLLM/SGLang-style extensions
// (top_k, min_p, repetition_penalty, skip_special_tokens, stop_token_ids) and ours (ngram_size,
// ngram_window, ngram_whitelist, loop_min_span, loop_max_period, task, cache_salt) are read from
// the top level, where the SDKs' `extra_body` puts them. Unknown fields are ignored; a known field
// with a wrong type or value is an error naming it in `param`
// ("messages[0].content[1].image_url.url").
//
// Prompt: the text parts of every message, in order, and the images of every message, in order.
// DeepSeek-OCR-2 has no chat template (spec §8.1: the "plain" format, no roles), so roles are
// checked but do not change the prompt. A request with images and no text at all gets the official
// document prompt; `task` ("document" | "free") selects an official prompt explicitly.
// A PDF (a file part, or an image_url whose bytes are a PDF) must be the only image or file of
// its request; each of its pages is then OCRed as one image with this prompt.
//
// Thread-safety: pure functions over values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/status.h"
#include "engine/core/sampling_params.h"
#include "engine/document.h"
#include "server/openai_errors.h"

namespace dsocr::server {

struct ChatLimits {
  int64_t max_images = 16;        // per request
  int64_t max_stop_strings = 16;  // OpenAI allows 4; more costs nothing here
  int64_t max_stop_length = 256;  // bytes per stop string
};

// An image_url part, or a file part (OpenAI's {"type": "file", "file": {"file_data": ...}}).
// Either may hold a PDF, recognised by its bytes once fetched.
struct ImageInput {
  std::string url;    // data:, http(s):// or file:// URL, as sent (file parts: a data: URI)
  std::string param;  // where it was in the request, for errors
};

struct ChatRequest {
  std::string model;
  std::vector<std::string> text_parts;  // every text part of every message, in order
  std::vector<ImageInput> images;       // every image part of every message, in order
  std::optional<std::string> task;      // "document" | "free": an official prompt
  engine::SamplingParams sampling;
  std::vector<std::string> stop;  // stop strings, excluded from the output
  bool stream = false;
  bool include_usage = false;
  bool skip_special_tokens = false;  // OCR keeps its grounding tags by default (spec §10.1)
  // Requests share cached KV blocks of identical prefixes only with requests of the same salt
  // (vLLM's extension of the same name): a tenant that sets one cannot learn from cached_tokens
  // what others sent. Empty: the shared cache.
  std::string cache_salt;
  // Extensions for PDFs (docs/api.md): which pages, and whether each page object of the answer
  // also carries the official markdown rewrite.
  std::optional<engine::PageRange> pages;
  bool markdown = false;

  // GenerateRequest::prompt: the task's official prompt, the document prompt for images without
  // text, or the text parts joined by newlines. The engine places the "<image>" markers (one per
  // image, in front, unless the text already has one per image: tokenizer::chat_prompt_text) and
  // rejects more markers than images; this only refuses a task given together with text.
  StatusOr<std::string> prompt_text() const;
};

// The `pages` extension: "N", "N-M" or "N-" (1-based, inclusive), or an integer N.
StatusOr<engine::PageRange> parse_page_range(const nlohmann::json& value);

// Parses a request body already known to be a JSON object.
ApiError parse_chat_request(const nlohmann::json& body, const ChatLimits& limits, ChatRequest* out);

}  // namespace dsocr::server

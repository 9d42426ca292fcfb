#include "server/chat_request.h"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "tokenizer/ocr_prompt.h"

namespace dsocr::server {
namespace {

using json = nlohmann::json;

ApiError field_error(std::string param, std::string message) {
  return {invalid_argument(param + ": " + message), std::move(param), {}};
}

// Each reader leaves *out untouched when the field is absent or null (OpenAI treats null as
// "not given") and returns an error naming the field when it has the wrong type or range.
ApiError read_bool(const json& body, const char* name, bool* out) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return {};
  if (!it->is_boolean()) return field_error(name, "must be a boolean");
  *out = it->get<bool>();
  return {};
}

ApiError read_number(const json& body, const char* name, double lo, double hi, double* out) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return {};
  if (!it->is_number()) return field_error(name, "must be a number");
  double v = it->get<double>();
  if (!std::isfinite(v) || v < lo || v > hi) {
    return field_error(
        name, "must be in [" + json(lo).dump() + ", " + json(hi).dump() + "], got " + it->dump());
  }
  *out = v;
  return {};
}

ApiError read_int(const json& body, const char* name, int64_t lo, int64_t hi,
                  std::optional<int64_t>* out) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return {};
  if (!it->is_number_integer()) return field_error(name, "must be an integer");
  if (it->is_number_unsigned() &&
      it->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return field_error(name, "is too large");
  }
  int64_t v = it->get<int64_t>();
  if (v < lo || v > hi) {
    return field_error(name, "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                                 "], got " + std::to_string(v));
  }
  *out = v;
  return {};
}

// The same, for a field with a default already in *out.
ApiError read_int(const json& body, const char* name, int64_t lo, int64_t hi, int64_t* out) {
  std::optional<int64_t> v;
  ApiError e = read_int(body, name, lo, hi, &v);
  if (v) *out = *v;
  return e;
}

ApiError read_token_ids(const json& body, const char* name, std::vector<int32_t>* out) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return {};
  if (!it->is_array()) return field_error(name, "must be an array of token ids");
  std::vector<int32_t> ids;
  for (const json& v : *it) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 ||
        v.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return field_error(name, "must be an array of non-negative integer token ids");
    }
    ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
  }
  *out = std::move(ids);
  return {};
}

ApiError read_content(const json& content, const std::string& where, const ChatLimits& limits,
                      ChatRequest* out) {
  if (content.is_null()) return {};
  if (content.is_string()) {
    out->text_parts.push_back(content.get<std::string>());
    return {};
  }
  if (!content.is_array()) return field_error(where, "must be a string or an array of parts");
  for (size_t j = 0; j < content.size(); ++j) {
    const json& part = content[j];
    const std::string at = where + "[" + std::to_string(j) + "]";
    if (!part.is_object()) return field_error(at, "must be an object");
    auto type = part.find("type");
    if (type == part.end() || !type->is_string()) {
      return field_error(at + ".type", "must be \"text\", \"image_url\" or \"file\"");
    }
    if (*type == "text") {
      auto text = part.find("text");
      if (text == part.end() || !text->is_string()) {
        return field_error(at + ".text", "must be a string");
      }
      out->text_parts.push_back(text->get<std::string>());
    } else if (*type == "image_url") {
      auto image = part.find("image_url");
      const json* url = nullptr;
      if (image != part.end() && image->is_string()) {
        url = &*image;  // some clients send the URL directly
      } else if (image != part.end() && image->is_object()) {
        auto u = image->find("url");
        if (u != image->end()) url = &*u;
      }
      if (!url || !url->is_string() || url->get_ref<const std::string&>().empty()) {
        return field_error(at + ".image_url.url", "must be a non-empty string");
      }
      if (static_cast<int64_t>(out->images.size()) >= limits.max_images) {
        return field_error(
            at, "more than " + std::to_string(limits.max_images) + " images in one request");
      }
      out->images.push_back({url->get<std::string>(), at + ".image_url.url"});
    } else if (*type == "file") {
      auto file = part.find("file");
      if (file == part.end() || !file->is_object()) {
        return field_error(at + ".file", "must be an object with file_data");
      }
      auto data = file->find("file_data");
      if (data == file->end() || data->is_null()) {
        if (file->contains("file_id")) {
          return field_error(at + ".file.file_id",
                             "uploaded files are not supported; send the document inline as "
                             "file_data (data:application/pdf;base64,...)");
        }
        return field_error(at + ".file.file_data", "is required");
      }
      if (!data->is_string() || !data->get_ref<const std::string&>().starts_with("data:")) {
        return field_error(at + ".file.file_data",
                           "must be a data: URI (data:application/pdf;base64,...)");
      }
      // `filename` is OpenAI's; the document's name plays no part in OCR.
      if (auto name = file->find("filename"); name != file->end() && !name->is_null()) {
        if (!name->is_string()) return field_error(at + ".file.filename", "must be a string");
      }
      if (static_cast<int64_t>(out->images.size()) >= limits.max_images) {
        return field_error(
            at, "more than " + std::to_string(limits.max_images) + " images in one request");
      }
      out->images.push_back({data->get<std::string>(), at + ".file.file_data"});
    } else {
      return field_error(at + ".type", "unsupported content part type " + type->dump() +
                                           " (expected \"text\", \"image_url\" or \"file\")");
    }
  }
  return {};
}

ApiError read_messages(const json& body, const ChatLimits& limits, ChatRequest* out) {
  auto messages = body.find("messages");
  if (messages == body.end() || messages->is_null()) {
    return field_error("messages", "is required");
  }
  if (!messages->is_array() || messages->empty()) {
    return field_error("messages", "must be a non-empty array");
  }
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string at = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) return field_error(at, "must be an object");
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) return field_error(at + ".role", "is required");
    const std::string& r = role->get_ref<const std::string&>();
    if (r != "system" && r != "developer" && r != "user" && r != "assistant") {
      return field_error(at + ".role", "must be system, developer, user or assistant");
    }
    auto content = m.find("content");
    if (content == m.end()) return field_error(at + ".content", "is required");
    if (ApiError e = read_content(*content, at + ".content", limits, out); !e.ok()) return e;
  }
  return {};
}

ApiError read_stop(const json& body, const ChatLimits& limits, ChatRequest* out) {
  auto stop = body.find("stop");
  if (stop == body.end() || stop->is_null()) return {};
  std::vector<std::string> strings;
  if (stop->is_string()) {
    strings.push_back(stop->get<std::string>());
  } else if (stop->is_array()) {
    for (const json& s : *stop) {
      if (!s.is_string()) return field_error("stop", "must be a string or an array of strings");
      strings.push_back(s.get<std::string>());
    }
  } else {
    return field_error("stop", "must be a string or an array of strings");
  }
  if (static_cast<int64_t>(strings.size()) > limits.max_stop_strings) {
    return field_error("stop",
                       "at most " + std::to_string(limits.max_stop_strings) + " stop strings");
  }
  for (const std::string& s : strings) {
    if (s.empty()) return field_error("stop", "stop strings must not be empty");
    if (static_cast<int64_t>(s.size()) > limits.max_stop_length) {
      return field_error("stop", "a stop string is longer than " +
                                     std::to_string(limits.max_stop_length) + " bytes");
    }
  }
  out->stop = std::move(strings);
  return {};
}

ApiError read_sampling(const json& body, engine::SamplingParams* s) {
  constexpr int64_t kIntMax = std::numeric_limits<int64_t>::max();
  ApiError e;
  if (!(e = read_number(body, "temperature", 0, 2, &s->temperature)).ok()) return e;
  if (!(e = read_number(body, "top_p", 0, 1, &s->top_p)).ok()) return e;
  if (s->top_p <= 0) return field_error("top_p", "must be greater than 0");
  if (!(e = read_number(body, "min_p", 0, 1, &s->min_p)).ok()) return e;
  if (!(e = read_number(body, "presence_penalty", -2, 2, &s->presence_penalty)).ok()) return e;
  if (!(e = read_number(body, "frequency_penalty", -2, 2, &s->frequency_penalty)).ok()) return e;
  if (!(e = read_number(body, "repetition_penalty", 0, 100, &s->repetition_penalty)).ok()) return e;
  if (s->repetition_penalty <= 0) return field_error("repetition_penalty", "must be positive");
  if (!(e = read_int(body, "top_k", -1, kIntMax, &s->top_k)).ok()) return e;
  if (s->top_k < 0) s->top_k = 0;  // -1 is vLLM's "off"
  std::optional<int64_t> seed;
  if (!(e = read_int(body, "seed", std::numeric_limits<int64_t>::min(), kIntMax, &seed)).ok())
    return e;
  if (seed) s->seed = static_cast<uint64_t>(*seed);
  // max_completion_tokens replaces the deprecated max_tokens; when both are sent it wins.
  if (!(e = read_int(body, "max_tokens", 1, kIntMax, &s->max_tokens)).ok()) return e;
  if (!(e = read_int(body, "max_completion_tokens", 1, kIntMax, &s->max_tokens)).ok()) return e;
  if (!(e = read_int(body, "ngram_size", 0, 1 << 16, &s->ngram_size)).ok()) return e;
  if (!(e = read_int(body, "ngram_window", 0, 1 << 20, &s->ngram_window)).ok()) return e;
  if (!(e = read_token_ids(body, "ngram_whitelist", &s->ngram_whitelist)).ok()) return e;
  if (!(e = read_int(body, "loop_min_span", 0, 1 << 16, &s->loop_min_span)).ok()) return e;
  if (!(e = read_int(body, "loop_max_period", 1, 1 << 16, &s->loop_max_period)).ok()) return e;
  if (!(e = read_token_ids(body, "stop_token_ids", &s->stop_token_ids)).ok()) return e;
  return {};
}

}  // namespace

StatusOr<engine::PageRange> parse_page_range(const json& value) {
  const auto bad = [] {
    return invalid_argument(
        "pages: must be \"N\", \"N-M\" or \"N-\" (1-based page numbers, N <= M) or an integer");
  };
  const auto number = [](std::string_view digits) -> std::optional<int> {
    if (digits.empty() || digits.size() > 9) return std::nullopt;
    int v = 0;
    for (char c : digits) {
      if (c < '0' || c > '9') return std::nullopt;
      v = v * 10 + (c - '0');
    }
    return v;
  };
  engine::PageRange range;
  if (value.is_number_integer()) {
    if (value.get<int64_t>() < 1 || value.get<int64_t>() > 999'999'999) return bad();
    range.first = range.last = static_cast<int>(value.get<int64_t>());
    return range;
  }
  if (!value.is_string()) return bad();
  std::string_view s = value.get_ref<const std::string&>();
  const size_t dash = s.find('-');
  auto first = number(s.substr(0, dash));
  if (!first || *first < 1) return bad();
  range.first = *first;
  if (dash == std::string_view::npos) {
    range.last = *first;
  } else if (dash + 1 < s.size()) {
    auto last = number(s.substr(dash + 1));
    if (!last || *last < *first) return bad();
    range.last = *last;
  }
  return range;
}

StatusOr<std::string> ChatRequest::prompt_text() const {
  if (task && !text_parts.empty()) {
    return invalid_argument("task: give either a task or text parts in messages, not both");
  }
  // Images without any text get the document task.
  if (task || (text_parts.empty() && !images.empty())) {
    std::string text(*tokenizer::ocr_task_prompt(task.value_or("document")));
    // The official prompts carry one image's marker; for other image counts the engine puts one
    // marker per image in front of the bare instruction.
    if (images.size() != 1) text = text.substr(tokenizer::kImageMarker.size() + 1);
    return text;
  }
  std::string joined;
  for (size_t i = 0; i < text_parts.size(); ++i) {
    if (i) joined += "\n";
    joined += text_parts[i];
  }
  return joined;
}

ApiError parse_chat_request(const json& body, const ChatLimits& limits, ChatRequest* out) {
  ChatRequest r;
  auto model = body.find("model");
  if (model == body.end() || !model->is_string()) {
    return field_error("model", "is required and must be a string");
  }
  r.model = model->get<std::string>();
  if (ApiError e = read_messages(body, limits, &r); !e.ok()) return e;
  if (ApiError e = read_sampling(body, &r.sampling); !e.ok()) return e;
  if (ApiError e = read_stop(body, limits, &r); !e.ok()) return e;
  if (ApiError e = read_bool(body, "stream", &r.stream); !e.ok()) return e;
  if (ApiError e = read_bool(body, "skip_special_tokens", &r.skip_special_tokens); !e.ok())
    return e;
  if (auto so = body.find("stream_options"); so != body.end() && !so->is_null()) {
    if (!so->is_object()) return field_error("stream_options", "must be an object");
    if (!r.stream) {
      return field_error("stream_options", "is only allowed when stream is true");
    }
    auto usage = so->find("include_usage");
    if (usage != so->end() && !usage->is_null()) {
      if (!usage->is_boolean()) {
        return field_error("stream_options.include_usage", "must be a boolean");
      }
      r.include_usage = usage->get<bool>();
    }
  }
  std::optional<int64_t> n;
  if (ApiError e = read_int(body, "n", 1, std::numeric_limits<int64_t>::max(), &n); !e.ok())
    return e;
  if (n && *n != 1) {
    return field_error("n",
                       "only n = 1 is supported (send n requests; greedy OCR gives one "
                       "answer)");
  }
  if (auto lp = body.find("logprobs"); lp != body.end() && !lp->is_null()) {
    if (!lp->is_boolean()) return field_error("logprobs", "must be a boolean");
    if (lp->get<bool>()) return field_error("logprobs", "logprobs are not supported");
  }
  if (auto task = body.find("task"); task != body.end() && !task->is_null()) {
    if (!task->is_string() || !tokenizer::ocr_task_prompt(task->get<std::string>())) {
      return field_error("task", "must be \"document\" or \"free\"");
    }
    r.task = task->get<std::string>();
  }
  if (auto salt = body.find("cache_salt"); salt != body.end() && !salt->is_null()) {
    if (!salt->is_string() || salt->get_ref<const std::string&>().empty() ||
        salt->get_ref<const std::string&>().size() > 1024) {
      return field_error("cache_salt", "must be a non-empty string of at most 1024 bytes");
    }
    r.cache_salt = salt->get<std::string>();
  }
  if (auto pages = body.find("pages"); pages != body.end() && !pages->is_null()) {
    auto range = parse_page_range(*pages);
    if (!range.ok()) return {range.status(), "pages", {}};
    r.pages = *range;
  }
  if (ApiError e = read_bool(body, "markdown", &r.markdown); !e.ok()) return e;
  if (Status s = r.sampling.validate(); !s.ok()) return {s, {}, {}};
  *out = std::move(r);
  return {};
}

}  // namespace dsocr::server

#include "server/completion_text.h"

#include <algorithm>

namespace dsocr::server {

StopStringMatcher::StopStringMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}

std::string StopStringMatcher::push(std::string_view text) {
  if (matched_) return {};
  if (stops_.empty()) return std::string(text);
  // pending_ is the held-back tail plus the new text: any new match lies inside it.
  pending_.append(text);
  size_t first = std::string::npos;
  for (const std::string& stop : stops_) {
    size_t at = pending_.find(stop);
    if (at < first) {
      first = at;
      matched_stop_ = stop;
    }
  }
  if (first != std::string::npos) {
    matched_ = true;
    std::string out = pending_.substr(0, first);
    pending_.clear();
    return out;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string. Stop strings are
  // whole UTF-8 text, so the cut falls on a character boundary.
  size_t keep = 0;
  for (const std::string& stop : stops_) {
    const size_t max_len = std::min(stop.size() - 1, pending_.size());
    for (size_t len = max_len; len > keep; --len) {
      if (std::string_view(pending_).substr(pending_.size() - len) ==
          std::string_view(stop).substr(0, len)) {
        keep = len;
        break;
      }
    }
  }
  std::string out = pending_.substr(0, pending_.size() - keep);
  pending_.erase(0, pending_.size() - keep);
  return out;
}

std::string StopStringMatcher::flush() {
  std::string out;
  out.swap(pending_);
  return matched_ ? std::string() : out;
}

CompletionText::CompletionText(std::shared_ptr<const tokenizer::Tokenizer> tokenizer,
                               bool skip_special_tokens, std::vector<int32_t> end_ids,
                               std::vector<std::string> stop_strings)
    : decoder_(std::move(tokenizer), skip_special_tokens),
      end_ids_(std::move(end_ids)),
      stops_(std::move(stop_strings)) {}

std::string CompletionText::push(std::span<const int32_t> ids) {
  std::string text;
  for (int32_t id : ids) {
    // An end id is always the last token of a sequence (the engine stops on it).
    if (std::find(end_ids_.begin(), end_ids_.end(), id) != end_ids_.end()) break;
    text += decoder_.push(id);
  }
  return stops_.push(text);
}

std::string CompletionText::finish() {
  std::string out = stops_.push(decoder_.finish());
  return out + stops_.flush();
}

}  // namespace dsocr::server

#include "tokenizer/onig_regex.h"

#include <oniguruma.h>

#include <mutex>

#include "tokenizer/unicode_classes.h"
#include "tokenizer/utf8.h"

namespace dsocr::tokenizer {
namespace {

void init_oniguruma_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    OnigEncoding encodings[] = {ONIG_ENCODING_UTF8};
    onig_initialize(encodings, 1);
  });
}

std::string onig_error_text(int code, OnigErrorInfo* info) {
  OnigUChar buf[ONIG_MAX_ERROR_MESSAGE_LEN];
  int n = info ? onig_error_code_to_str(buf, code, info) : onig_error_code_to_str(buf, code);
  return std::string(reinterpret_cast<char*>(buf), n > 0 ? static_cast<size_t>(n) : 0);
}

}  // namespace

StatusOr<std::unique_ptr<OnigRegex>> OnigRegex::compile(std::string_view pattern) {
  init_oniguruma_once();
  std::unique_ptr<OnigRegex> re(new OnigRegex());
  re->pattern_ = std::string(pattern);
  const std::string upgraded = upgrade_unicode_classes(pattern);
  regex_t* compiled = nullptr;
  OnigErrorInfo info;
  const auto* begin = reinterpret_cast<const OnigUChar*>(upgraded.data());
  int rc = onig_new(&compiled, begin, begin + upgraded.size(), ONIG_OPTION_CAPTURE_GROUP,
                    ONIG_ENCODING_UTF8, ONIG_SYNTAX_DEFAULT, &info);
  if (rc != ONIG_NORMAL) {
    return invalid_argument("regex '" + re->pattern_ + "': " + onig_error_text(rc, &info));
  }
  re->regex_ = compiled;
  return re;
}

OnigRegex::~OnigRegex() {
  if (regex_) onig_free(static_cast<regex_t*>(regex_));
}

std::vector<std::pair<size_t, size_t>> OnigRegex::find_all(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> matches;
  auto* regex = static_cast<regex_t*>(regex_);
  const auto* str = reinterpret_cast<const OnigUChar*>(text.data());
  const OnigUChar* end = str + text.size();
  OnigRegion* region = onig_region_new();
  // Mirrors the onig crate's find_iter (what HF tokenizers iterates): an empty match is reported
  // unless it sits right at the end of the previous match; then the search steps one character.
  size_t search_from = 0;
  bool have_last = false;
  size_t last_match_end = 0;
  while (search_from <= text.size()) {
    int r = onig_search(regex, str, end, str + search_from, end, region, ONIG_OPTION_NONE);
    if (r < 0) break;  // ONIG_MISMATCH (or an error, which a compiled pattern does not produce)
    size_t begin = static_cast<size_t>(region->beg[0]);
    size_t stop = static_cast<size_t>(region->end[0]);
    if (begin == stop && have_last && last_match_end == stop) {
      if (search_from >= text.size()) break;
      size_t len = valid_sequence_length(text, search_from);
      search_from += len > 0 ? len : 1;
      continue;
    }
    matches.emplace_back(begin, stop);
    search_from = stop;
    have_last = true;
    last_match_end = stop;
  }
  onig_region_free(region, 1);
  return matches;
}

}  // namespace dsocr::tokenizer

#include "server/grounding.h"

#include <cmath>
#include <utility>

namespace dsocr::server {
namespace {

constexpr std::string_view kRefOpen = "<|ref|>";
constexpr std::string_view kRefCloseDetOpen = "<|/ref|><|det|>";
constexpr std::string_view kDetClose = "<|/det|>";
constexpr std::string_view kImageRef = "<|ref|>image<|/ref|>";

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// Python's str.replace(old, new): every non-overlapping occurrence, left to right.
std::string replace_all(const std::string& text, std::string_view old,
                        std::string_view replacement) {
  if (old.empty()) return text;  // never called so; Python would insert between characters
  std::string out;
  size_t from = 0;
  for (size_t at = text.find(old); at != std::string::npos; at = text.find(old, from)) {
    out.append(text, from, at - from);
    out.append(replacement);
    from = at + old.size();
  }
  if (from == 0) return text;
  out.append(text, from, std::string::npos);
  return out;
}

// A cursor over a list literal.
class ListParser {
 public:
  explicit ListParser(std::string_view s) : s_(s) {}

  // Whitespace and Python comments ('#' to the end of the line), which eval() skips as well.
  void skip_space() {
    while (pos_ < s_.size()) {
      if (is_space(s_[pos_])) {
        ++pos_;
      } else if (s_[pos_] == '#') {
        while (pos_ < s_.size() && s_[pos_] != '\n') ++pos_;
      } else {
        break;
      }
    }
  }
  bool eat(char c) {
    skip_space();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool at_end() {
    skip_space();
    return pos_ == s_.size();
  }
  // A decimal integer literal as Python reads it (no sign, no leading zero except "0"),
  // accepted only within 0..999.
  std::optional<int> coordinate() {
    skip_space();
    const size_t start = pos_;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9' && pos_ - start < 4) ++pos_;
    const size_t digits = pos_ - start;
    if (digits == 0 || digits > 3) return std::nullopt;
    if (pos_ < s_.size() && (s_[pos_] == '.' || s_[pos_] == '_' || s_[pos_] == 'e' ||
                             s_[pos_] == 'E' || s_[pos_] == 'j' || s_[pos_] == 'J')) {
      return std::nullopt;  // a float, a grouped or complex literal: not a 0..999 integer box
    }
    if (digits > 1 && s_[start] == '0') return std::nullopt;
    int value = 0;
    for (size_t i = start; i < pos_; ++i) value = value * 10 + (s_[i] - '0');
    return value;
  }

 private:
  std::string_view s_;
  size_t pos_ = 0;
};

std::optional<NormBox> parse_box(ListParser& p) {
  if (!p.eat('[')) return std::nullopt;
  NormBox box{};
  for (int i = 0; i < 4; ++i) {
    if (i > 0 && !p.eat(',')) return std::nullopt;
    std::optional<int> v = p.coordinate();
    if (!v) return std::nullopt;
    box[i] = *v;
  }
  p.eat(',');
  if (!p.eat(']')) return std::nullopt;
  return box;
}

}  // namespace

std::vector<GroundingTag> find_grounding_tags(std::string_view text) {
  std::vector<GroundingTag> tags;
  size_t from = 0;
  while (true) {
    const size_t begin = text.find(kRefOpen, from);
    if (begin == std::string_view::npos) break;
    const size_t label_begin = begin + kRefOpen.size();
    const size_t middle = text.find(kRefCloseDetOpen, label_begin);
    if (middle == std::string_view::npos) break;  // no later <|ref|> can match either
    const size_t boxes_begin = middle + kRefCloseDetOpen.size();
    const size_t close = text.find(kDetClose, boxes_begin);
    if (close == std::string_view::npos) break;
    GroundingTag tag;
    tag.begin = begin;
    tag.end = close + kDetClose.size();
    tag.whole = text.substr(begin, tag.end - begin);
    tag.label = text.substr(label_begin, middle - label_begin);
    tag.boxes = text.substr(boxes_begin, close - boxes_begin);
    tags.push_back(tag);
    from = tag.end;
  }
  return tags;
}

std::optional<std::vector<NormBox>> parse_grounding_boxes(std::string_view list_literal) {
  ListParser p(list_literal);
  if (!p.eat('[')) return std::nullopt;
  std::vector<NormBox> boxes;
  while (true) {
    std::optional<NormBox> box = parse_box(p);
    if (!box) return std::nullopt;
    boxes.push_back(*box);
    if (!p.eat(',')) break;
    if (p.eat(']')) {  // a trailing comma
      return p.at_end() ? std::optional(std::move(boxes)) : std::nullopt;
    }
  }
  if (!p.eat(']') || !p.at_end()) return std::nullopt;
  return boxes;
}

int grounding_to_pixels(int v, int size) {
  return static_cast<int>(std::trunc(static_cast<double>(v) / 999.0 * static_cast<double>(size)));
}

GroundingBox scale_grounding_box(const NormBox& norm, int width, int height) {
  GroundingBox box;
  box.norm = norm;
  box.pixels = {grounding_to_pixels(norm[0], width), grounding_to_pixels(norm[1], height),
                grounding_to_pixels(norm[2], width), grounding_to_pixels(norm[3], height)};
  return box;
}

std::vector<GroundingBlock> parse_grounding(std::string_view text, int width, int height) {
  std::vector<GroundingBlock> blocks;
  GroundingBlock current;  // the leading text block until the first well-formed tag
  size_t text_from = 0;
  auto close_current = [&](size_t text_end) {
    current.text = std::string(trim(text.substr(text_from, text_end - text_from)));
    if (!current.boxes.empty() || !current.text.empty()) blocks.push_back(std::move(current));
  };
  for (const GroundingTag& tag : find_grounding_tags(text)) {
    std::optional<std::vector<NormBox>> norms = parse_grounding_boxes(tag.boxes);
    if (!norms) continue;  // malformed: stays in the surrounding text
    close_current(tag.begin);
    current = GroundingBlock{};
    current.label = std::string(tag.label);
    for (const NormBox& norm : *norms)
      current.boxes.push_back(scale_grounding_box(norm, width, height));
    text_from = tag.end;
  }
  close_current(text.size());
  return blocks;
}

MarkdownRewrite rewrite_markdown(std::string_view text, int width, int height,
                                 std::optional<int> pdf_page) {
  std::vector<GroundingTag> images, others;
  for (const GroundingTag& tag : find_grounding_tags(text)) {
    (tag.whole.find(kImageRef) != std::string_view::npos ? images : others).push_back(tag);
  }
  MarkdownRewrite result;
  result.markdown = std::string(text);
  for (size_t k = 0; k < images.size(); ++k) {
    GroundingImageRegion region;
    region.path = "images/" + (pdf_page ? std::to_string(*pdf_page) + "_" : std::string()) +
                  std::to_string(k) + ".jpg";
    if (std::optional<std::vector<NormBox>> norms = parse_grounding_boxes(images[k].boxes)) {
      for (const NormBox& norm : *norms)
        region.boxes.push_back(scale_grounding_box(norm, width, height));
    }
    result.markdown = replace_all(result.markdown, images[k].whole, "![](" + region.path + ")\n");
    result.images.push_back(std::move(region));
  }
  for (const GroundingTag& tag : others) {
    result.markdown = replace_all(result.markdown, tag.whole, "");
    result.markdown = replace_all(result.markdown, "\\coloneqq", ":=");
    result.markdown = replace_all(result.markdown, "\\eqqcolon", "=:");
    if (pdf_page) {
      result.markdown = replace_all(result.markdown, "\n\n\n\n", "\n\n");
      result.markdown = replace_all(result.markdown, "\n\n\n", "\n\n");
    }
  }
  return result;
}

}  // namespace dsocr::server

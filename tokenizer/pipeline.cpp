#include "tokenizer/pipeline.h"

#include <algorithm>
#include <array>
#include <nlohmann/json.hpp>
#include <optional>
#include <unordered_map>

#include "tokenizer/onig_regex.h"
#include "tokenizer/utf8.h"

namespace dsocr::tokenizer {
namespace {

using json = nlohmann::json;

StatusOr<std::string> get_string(const json& j, const char* key, const std::string& where) {
  if (!j.contains(key) || !j[key].is_string()) {
    return invalid_argument(where + ": missing string field '" + key + "'");
  }
  return j[key].get<std::string>();
}

bool get_bool(const json& j, const char* key, bool fallback) {
  return j.contains(key) && j[key].is_boolean() ? j[key].get<bool>() : fallback;
}

// A {"String": s} or {"Regex": r} pattern; find_matches() returns HF's (offsets, is_match) list.
class Pattern {
 public:
  static StatusOr<Pattern> from_json(const json& j, const std::string& where) {
    Pattern p;
    if (j.is_object() && j.contains("Regex") && j["Regex"].is_string()) {
      DSOCR_ASSIGN_OR_RETURN(p.regex_, OnigRegex::compile(j["Regex"].get<std::string>()));
      return p;
    }
    if (j.is_object() && j.contains("String") && j["String"].is_string()) {
      p.literal_ = j["String"].get<std::string>();
      return p;
    }
    return invalid_argument(where + ": pattern must be {\"String\": ...} or {\"Regex\": ...}");
  }

  struct Span {
    size_t begin, end;
    bool is_match;
  };

  std::vector<Span> find_matches(std::string_view text, bool invert) const {
    std::vector<Span> spans;
    if (text.empty()) {
      spans.push_back({0, 0, invert});
      return spans;
    }
    std::vector<std::pair<size_t, size_t>> matches;
    if (regex_) {
      matches = regex_->find_all(text);
    } else if (!literal_.empty()) {
      for (size_t pos = text.find(literal_); pos != std::string_view::npos;
           pos = text.find(literal_, pos + literal_.size())) {
        matches.emplace_back(pos, pos + literal_.size());
      }
    }
    size_t prev = 0;
    for (auto [b, e] : matches) {
      if (prev != b) spans.push_back({prev, b, invert});
      spans.push_back({b, e, !invert});
      prev = e;
    }
    if (prev != text.size()) spans.push_back({prev, text.size(), invert});
    return spans;
  }

 private:
  std::shared_ptr<OnigRegex> regex_;
  std::string literal_;
};

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

StatusOr<Behavior> parse_behavior(const std::string& name) {
  if (name == "Removed") return Behavior::kRemoved;
  if (name == "Isolated") return Behavior::kIsolated;
  if (name == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return Behavior::kMergedWithNext;
  if (name == "Contiguous") return Behavior::kContiguous;
  return invalid_argument("Split: unknown behavior '" + name + "'");
}

// NormalizedString::split of HF tokenizers: spans -> kept [begin, end) ranges.
std::vector<std::pair<size_t, size_t>> apply_behavior(const std::vector<Pattern::Span>& spans,
                                                      Behavior behavior) {
  std::vector<std::pair<size_t, size_t>> out;
  bool previous_match = false;
  switch (behavior) {
    case Behavior::kIsolated:
      for (const auto& s : spans) out.emplace_back(s.begin, s.end);
      break;
    case Behavior::kRemoved:
      for (const auto& s : spans) {
        if (!s.is_match) out.emplace_back(s.begin, s.end);
      }
      break;
    case Behavior::kContiguous:
      for (const auto& s : spans) {
        if (s.is_match == previous_match && !out.empty()) {
          out.back().second = s.end;
        } else {
          out.emplace_back(s.begin, s.end);
        }
        previous_match = s.is_match;
      }
      break;
    case Behavior::kMergedWithPrevious:
      for (const auto& s : spans) {
        if (s.is_match && !previous_match && !out.empty()) {
          out.back().second = s.end;
        } else {
          out.emplace_back(s.begin, s.end);
        }
        previous_match = s.is_match;
      }
      break;
    case Behavior::kMergedWithNext:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !out.empty()) {
          out.back().first = it->begin;
        } else {
          out.emplace_back(it->begin, it->end);
        }
        previous_match = it->is_match;
      }
      std::reverse(out.begin(), out.end());
      break;
  }
  return out;
}

void split_pieces(std::vector<std::string>* pieces, const Pattern& pattern, Behavior behavior,
                  bool invert) {
  std::vector<std::string> next;
  next.reserve(pieces->size() * 2);
  for (const std::string& piece : *pieces) {
    for (auto [b, e] : apply_behavior(pattern.find_matches(piece, invert), behavior)) {
      if (e > b) next.emplace_back(piece, b, e - b);
    }
  }
  pieces->swap(next);
}

// ---- normalizers ----

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts)
      : parts_(std::move(parts)) {}
  void normalize(std::string* text) const override {
    for (const auto& p : parts_) p->normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  void normalize(std::string* text) const override {
    if (!text->empty()) text->insert(0, prefix_);
  }

 private:
  std::string prefix_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void normalize(std::string* text) const override {
    std::string out;
    for (const auto& s : pattern_.find_matches(*text, false)) {
      if (s.is_match) {
        out += content_;
      } else {
        out.append(*text, s.begin, s.end - s.begin);
      }
    }
    text->swap(out);
  }

 private:
  Pattern pattern_;
  std::string content_;
};

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void normalize(std::string* text) const override {
    std::string_view s = *text;
    size_t begin = left_ ? leading_space_length(s, is_unicode_whitespace) : 0;
    size_t end =
        right_ ? std::max(begin, trailing_space_start(s, is_unicode_whitespace)) : s.size();
    *text = std::string(s.substr(begin, end - begin));
  }

 private:
  bool left_, right_;
};

// ---- pre-tokenizers ----

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts)
      : parts_(std::move(parts)) {}
  void pre_tokenize(std::vector<std::string>* pieces) const override {
    for (const auto& p : parts_) p->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(Pattern pattern, Behavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void pre_tokenize(std::vector<std::string>* pieces) const override {
    split_pieces(pieces, pattern_, behavior_, invert_);
  }

 private:
  Pattern pattern_;
  Behavior behavior_;
  bool invert_;
};

// ByteLevel: optional prefix space per piece and GPT-2's split regex; the byte mapping itself is
// left to the BPE model, which works on raw bytes.
class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::optional<Pattern> gpt2_split)
      : add_prefix_space_(add_prefix_space), gpt2_split_(std::move(gpt2_split)) {}
  void pre_tokenize(std::vector<std::string>* pieces) const override {
    if (add_prefix_space_) {
      for (auto& p : *pieces) {
        if (p.empty() || p[0] != ' ') p.insert(0, 1, ' ');
      }
    }
    if (gpt2_split_) split_pieces(pieces, *gpt2_split_, Behavior::kIsolated, false);
  }

 private:
  bool add_prefix_space_;
  std::optional<Pattern> gpt2_split_;
};

constexpr const char* kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

StatusOr<std::unique_ptr<PreTokenizer>> make_one_pre_tokenizer(const json& j, bool* byte_level);

}  // namespace

StatusOr<std::unique_ptr<Normalizer>> make_normalizer(const json& j) {
  if (j.is_null()) return std::unique_ptr<Normalizer>();
  DSOCR_ASSIGN_OR_RETURN(std::string type, get_string(j, "type", "normalizer"));
  if (type == "Sequence") {
    if (!j.contains("normalizers") || !j["normalizers"].is_array()) {
      return invalid_argument("normalizer Sequence: missing 'normalizers' array");
    }
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (const auto& part : j["normalizers"]) {
      DSOCR_ASSIGN_OR_RETURN(auto n, make_normalizer(part));
      if (n) parts.push_back(std::move(n));
    }
    return std::unique_ptr<Normalizer>(new SequenceNormalizer(std::move(parts)));
  }
  if (type == "Prepend") {
    DSOCR_ASSIGN_OR_RETURN(std::string prefix, get_string(j, "prepend", "normalizer Prepend"));
    return std::unique_ptr<Normalizer>(new PrependNormalizer(std::move(prefix)));
  }
  if (type == "Replace") {
    DSOCR_ASSIGN_OR_RETURN(Pattern pattern,
                           Pattern::from_json(j.value("pattern", json()), "normalizer Replace"));
    DSOCR_ASSIGN_OR_RETURN(std::string content, get_string(j, "content", "normalizer Replace"));
    return std::unique_ptr<Normalizer>(new ReplaceNormalizer(std::move(pattern), content));
  }
  if (type == "Strip") {
    return std::unique_ptr<Normalizer>(
        new StripNormalizer(get_bool(j, "strip_left", true), get_bool(j, "strip_right", true)));
  }
  return unimplemented("tokenizer.json: normalizer '" + type + "' is not supported by dsocr");
}

namespace {

StatusOr<std::unique_ptr<PreTokenizer>> make_one_pre_tokenizer(const json& j, bool* byte_level) {
  DSOCR_ASSIGN_OR_RETURN(std::string type, get_string(j, "type", "pre_tokenizer"));
  if (*byte_level) {
    return unimplemented("tokenizer.json: pre-tokenizer '" + type +
                         "' after ByteLevel is not supported by dsocr (ByteLevel must be last)");
  }
  if (type == "Sequence") {
    if (!j.contains("pretokenizers") || !j["pretokenizers"].is_array()) {
      return invalid_argument("pre_tokenizer Sequence: missing 'pretokenizers' array");
    }
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (const auto& part : j["pretokenizers"]) {
      DSOCR_ASSIGN_OR_RETURN(auto p, make_one_pre_tokenizer(part, byte_level));
      parts.push_back(std::move(p));
    }
    return std::unique_ptr<PreTokenizer>(new SequencePreTokenizer(std::move(parts)));
  }
  if (type == "Split") {
    DSOCR_ASSIGN_OR_RETURN(Pattern pattern,
                           Pattern::from_json(j.value("pattern", json()), "pre_tokenizer Split"));
    DSOCR_ASSIGN_OR_RETURN(std::string behavior_name,
                           get_string(j, "behavior", "pre_tokenizer Split"));
    DSOCR_ASSIGN_OR_RETURN(Behavior behavior, parse_behavior(behavior_name));
    return std::unique_ptr<PreTokenizer>(
        new SplitPreTokenizer(std::move(pattern), behavior, get_bool(j, "invert", false)));
  }
  if (type == "ByteLevel") {
    *byte_level = true;
    std::optional<Pattern> split;
    if (get_bool(j, "use_regex", true)) {
      DSOCR_ASSIGN_OR_RETURN(Pattern p,
                             Pattern::from_json(json{{"Regex", kGpt2Regex}}, "ByteLevel"));
      split = std::move(p);
    }
    return std::unique_ptr<PreTokenizer>(
        new ByteLevelPreTokenizer(get_bool(j, "add_prefix_space", true), std::move(split)));
  }
  return unimplemented("tokenizer.json: pre-tokenizer '" + type + "' is not supported by dsocr");
}

}  // namespace

StatusOr<PreTokenizerInfo> make_pre_tokenizer(const json& j) {
  PreTokenizerInfo info;
  if (j.is_null()) return info;
  DSOCR_ASSIGN_OR_RETURN(info.pre_tokenizer, make_one_pre_tokenizer(j, &info.byte_level));
  return info;
}

namespace {

struct ByteMaps {
  std::array<std::string, 256> to_unicode;
  std::unordered_map<char32_t, int> to_byte;
  ByteMaps() {
    // Printable bytes map to themselves; the rest to U+0100 + n, in byte order (GPT-2).
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
      append_utf8(&to_unicode[b], cp);
      to_byte[cp] = b;
    }
  }
};

const ByteMaps& byte_maps() {
  static const ByteMaps maps;
  return maps;
}

}  // namespace

const std::string& byte_to_unicode(unsigned char byte) { return byte_maps().to_unicode[byte]; }

int unicode_to_byte(char32_t cp) {
  const auto& m = byte_maps().to_byte;
  auto it = m.find(cp);
  return it == m.end() ? -1 : it->second;
}

}  // namespace dsocr::tokenizer

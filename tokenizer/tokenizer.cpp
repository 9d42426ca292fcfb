#include "tokenizer/tokenizer.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "tokenizer/bpe_model.h"
#include "tokenizer/pipeline.h"
#include "tokenizer/utf8.h"

namespace dsocr::tokenizer {
namespace {

using json = nlohmann::json;

struct AddedToken {
  int32_t id;
  std::string content;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool normalized = false;
};

// Leftmost-longest matching of a set of strings (what `tokenizers` does with Aho-Corasick).
class TokenMatcher {
 public:
  void add(std::string_view pattern, int32_t token_index) {
    if (pattern.empty()) return;
    int node = 0;
    for (unsigned char c : pattern) {
      auto it = nodes_[node].next.find(c);
      if (it == nodes_[node].next.end()) {
        nodes_.push_back({});
        it = nodes_[node].next.emplace(c, static_cast<int>(nodes_.size() - 1)).first;
      }
      node = it->second;
    }
    if (nodes_[node].token < 0) nodes_[node].token = token_index;
    first_bytes_[static_cast<unsigned char>(pattern[0])] = true;
  }
  bool empty() const { return nodes_.size() == 1; }

  struct Match {
    size_t begin, end;
    int32_t token_index;
  };
  std::vector<Match> find_all(std::string_view text) const {
    std::vector<Match> out;
    for (size_t i = 0; i < text.size();) {
      if (!first_bytes_[static_cast<unsigned char>(text[i])]) {
        ++i;
        continue;
      }
      int node = 0, best_token = -1;
      size_t best_end = 0;
      for (size_t j = i; j < text.size(); ++j) {
        auto it = nodes_[node].next.find(static_cast<unsigned char>(text[j]));
        if (it == nodes_[node].next.end()) break;
        node = it->second;
        if (nodes_[node].token >= 0) best_token = nodes_[node].token, best_end = j + 1;
      }
      if (best_token >= 0) {
        out.push_back({i, best_end, best_token});
        i = best_end;
      } else {
        ++i;
      }
    }
    return out;
  }

 private:
  struct Node {
    std::unordered_map<unsigned char, int> next;
    int token = -1;
  };
  std::vector<Node> nodes_{1};
  bool first_bytes_[256] = {};
};

bool is_word_char(char32_t cp) {
  // Rust's char::is_alphanumeric for ASCII, and letters/digits beyond ASCII are treated as word
  // characters too (single_word only matters for tokens that opt into it).
  return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') ||
         cp >= 0x80;
}

char32_t last_char(std::string_view s) {
  size_t start = s.size() - 1;
  while (start > 0 && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80) --start;
  size_t len = valid_sequence_length(s, start);
  return len ? decode_code_point(s, start, len) : kReplacementChar;
}

char32_t first_char(std::string_view s) {
  size_t len = valid_sequence_length(s, 0);
  return len ? decode_code_point(s, 0, len) : kReplacementChar;
}

}  // namespace

struct Tokenizer::Impl {
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  bool byte_level = false;
  std::unique_ptr<BpeModel> model;
  std::vector<AddedToken> added;
  std::unordered_map<std::string, int32_t> added_by_content;
  TokenMatcher raw_matcher;              // normalized == false
  TokenMatcher normalized_matcher;       // normalized == true, matched on normalized text
  std::vector<std::string> id_to_token;  // "" where no token
  std::vector<std::string> id_bytes;     // decoder output per id
  std::vector<uint8_t> id_special;
  bool byte_level_decoder = false;
  // Post-processor template for add_special_tokens (TemplateProcessing "single").
  std::vector<int32_t> template_prefix, template_suffix;

  struct Segment {
    size_t begin, end;
    int32_t added_index;  // -1: plain text
  };

  // AddedVocabulary::split_with_indices of `tokenizers`.
  std::vector<Segment> split_added(std::string_view text, const TokenMatcher& matcher) const {
    std::vector<Segment> out;
    size_t start_offset = 0;
    for (const auto& m : matcher.find_all(text)) {
      const AddedToken& tok = added[m.token_index];
      size_t start = m.begin, stop = m.end;
      if (tok.single_word) {
        bool start_ok = start == 0 || !is_word_char(last_char(text.substr(0, start)));
        bool stop_ok = stop == text.size() || !is_word_char(first_char(text.substr(stop)));
        if (!start_ok || !stop_ok) continue;
      }
      if (tok.lstrip) {
        start = std::max(trailing_space_start(text.substr(0, start), is_unicode_whitespace),
                         start_offset);
      }
      if (tok.rstrip) stop += leading_space_length(text.substr(stop), is_unicode_whitespace);
      if (start_offset < start) out.push_back({start_offset, start, -1});
      out.push_back({start, stop, m.token_index});
      start_offset = stop;
    }
    if (start_offset != text.size()) out.push_back({start_offset, text.size(), -1});
    return out;
  }

  void encode_plain(std::string_view text, std::vector<int32_t>* ids) const {
    std::vector<std::string> pieces{std::string(text)};
    if (pre_tokenizer) pre_tokenizer->pre_tokenize(&pieces);
    for (const auto& piece : pieces) model->tokenize(piece, ids);
  }
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

StatusOr<std::shared_ptr<const Tokenizer>> Tokenizer::from_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found("cannot open tokenizer file " + path.string());
  std::stringstream buffer;
  buffer << in.rdbuf();
  auto tok = from_json_text(buffer.str());
  if (!tok.ok()) return tok.status().with_context(path.string());
  return tok;
}

StatusOr<std::shared_ptr<const Tokenizer>> Tokenizer::from_json_text(std::string_view text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return invalid_argument("tokenizer.json is not a JSON object");
  }
  auto impl = std::make_unique<Impl>();
  try {
    DSOCR_ASSIGN_OR_RETURN(impl->normalizer, make_normalizer(j.value("normalizer", json())));
    DSOCR_ASSIGN_OR_RETURN(PreTokenizerInfo pre,
                           make_pre_tokenizer(j.value("pre_tokenizer", json())));
    impl->pre_tokenizer = std::move(pre.pre_tokenizer);
    impl->byte_level = pre.byte_level;
    DSOCR_ASSIGN_OR_RETURN(impl->model,
                           BpeModel::from_json(j.value("model", json()), pre.byte_level));

    int32_t max_id = -1;
    for (const auto& [token, id] : impl->model->vocab()) max_id = std::max(max_id, id);
    for (const auto& a : j.value("added_tokens", json::array())) {
      AddedToken tok;
      tok.id = a.at("id").get<int32_t>();
      tok.content = a.at("content").get<std::string>();
      tok.special = a.value("special", false);
      tok.lstrip = a.value("lstrip", false);
      tok.rstrip = a.value("rstrip", false);
      tok.single_word = a.value("single_word", false);
      tok.normalized = a.value("normalized", !tok.special);
      if (tok.id < 0)
        return invalid_argument("added token '" + tok.content + "' has a negative id");
      max_id = std::max(max_id, tok.id);
      impl->added_by_content[tok.content] = tok.id;
      impl->added.push_back(std::move(tok));
    }
    for (size_t i = 0; i < impl->added.size(); ++i) {
      const AddedToken& tok = impl->added[i];
      if (tok.normalized) {
        std::string pattern = tok.content;
        if (impl->normalizer) impl->normalizer->normalize(&pattern);
        impl->normalized_matcher.add(pattern, static_cast<int32_t>(i));
      } else {
        impl->raw_matcher.add(tok.content, static_cast<int32_t>(i));
      }
    }

    const json decoder = j.value("decoder", json());
    if (!decoder.is_null()) {
      std::string type = decoder.value("type", std::string());
      if (type != "ByteLevel") {
        return unimplemented("tokenizer.json: decoder '" + type + "' is not supported by dsocr");
      }
      impl->byte_level_decoder = true;
    }

    impl->id_to_token.assign(static_cast<size_t>(max_id) + 1, "");
    impl->id_special.assign(static_cast<size_t>(max_id) + 1, 0);
    for (const auto& [token, id] : impl->model->vocab()) impl->id_to_token[id] = token;
    for (const auto& tok : impl->added) {
      impl->id_to_token[tok.id] = tok.content;
      impl->id_special[tok.id] = tok.special;
    }
    impl->id_bytes.resize(impl->id_to_token.size());
    for (size_t id = 0; id < impl->id_to_token.size(); ++id) {
      const std::string& token = impl->id_to_token[id];
      if (!impl->byte_level_decoder) {
        impl->id_bytes[id] = token;
        continue;
      }
      // ByteLevel decoder: a token all of whose characters are in the byte map becomes those
      // bytes; any other token (e.g. an added token with a space) contributes its own UTF-8.
      std::string bytes;
      bool all_mapped = true;
      for (size_t i = 0; i < token.size() && all_mapped;) {
        size_t len = valid_sequence_length(token, i);
        int b = len ? unicode_to_byte(decode_code_point(token, i, len)) : -1;
        if (b < 0)
          all_mapped = false;
        else
          bytes.push_back(static_cast<char>(b)), i += len;
      }
      impl->id_bytes[id] = all_mapped ? bytes : token;
    }

    const json post = j.value("post_processor", json());
    if (!post.is_null()) {
      std::string type = post.value("type", std::string());
      if (type == "TemplateProcessing") {
        bool seen_sequence = false;
        for (const auto& piece : post.at("single")) {
          if (piece.contains("Sequence")) {
            seen_sequence = true;
          } else if (piece.contains("SpecialToken")) {
            const std::string& name = piece["SpecialToken"].at("id").get_ref<const std::string&>();
            const json& st = post.at("special_tokens").at(name);
            for (const auto& id : st.at("ids")) {
              (seen_sequence ? impl->template_suffix : impl->template_prefix)
                  .push_back(id.get<int32_t>());
            }
          }
        }
      } else if (type != "ByteLevel") {
        return unimplemented("tokenizer.json: post-processor '" + type +
                             "' is not supported by dsocr");
      }
    }
  } catch (const json::exception& e) {
    return invalid_argument(std::string("tokenizer.json: malformed: ") + e.what());
  }
  return std::shared_ptr<const Tokenizer>(new Tokenizer(std::move(impl)));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const Impl& m = *impl_;
  std::string repaired;
  if (!is_valid_utf8(text)) {
    repaired = to_valid_utf8_lossy(text);
    text = repaired;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 8);
  if (add_special_tokens) ids = m.template_prefix;
  for (const auto& seg : m.split_added(text, m.raw_matcher)) {
    if (seg.added_index >= 0) {
      ids.push_back(m.added[seg.added_index].id);
      continue;
    }
    std::string piece(text.substr(seg.begin, seg.end - seg.begin));
    if (m.normalizer) m.normalizer->normalize(&piece);
    if (m.normalized_matcher.empty()) {
      m.encode_plain(piece, &ids);
      continue;
    }
    for (const auto& sub : m.split_added(piece, m.normalized_matcher)) {
      if (sub.added_index >= 0) {
        ids.push_back(m.added[sub.added_index].id);
      } else {
        m.encode_plain(std::string_view(piece).substr(sub.begin, sub.end - sub.begin), &ids);
      }
    }
  }
  if (add_special_tokens) ids.insert(ids.end(), m.template_suffix.begin(), m.template_suffix.end());
  return ids;
}

std::string_view Tokenizer::token_bytes(int32_t id, bool skip_special_tokens) const {
  const Impl& m = *impl_;
  if (id < 0 || static_cast<size_t>(id) >= m.id_bytes.size()) return {};
  if (skip_special_tokens && m.id_special[id]) return {};
  return m.id_bytes[id];
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::string bytes;
  if (impl_->byte_level_decoder) {
    for (int32_t id : ids) bytes.append(token_bytes(id, skip_special_tokens));
    return to_valid_utf8_lossy(bytes);
  }
  // Without a decoder, `tokenizers` joins the tokens with spaces.
  bool first = true;
  for (int32_t id : ids) {
    std::string_view t = token_bytes(id, skip_special_tokens);
    if (t.empty()) continue;
    if (!first) bytes.push_back(' ');
    bytes.append(t);
    first = false;
  }
  return bytes;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (auto it = impl_->added_by_content.find(std::string(token));
      it != impl_->added_by_content.end()) {
    return it->second;
  }
  const auto& vocab = impl_->model->vocab();
  if (auto it = vocab.find(std::string(token)); it != vocab.end()) return it->second;
  return std::nullopt;
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->id_to_token.size()) return std::nullopt;
  const std::string& t = impl_->id_to_token[id];
  if (t.empty()) return std::nullopt;
  return t;
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->id_special.size() && impl_->id_special[id];
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(impl_->id_to_token.size()); }

}  // namespace dsocr::tokenizer

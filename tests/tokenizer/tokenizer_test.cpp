// The C++ tokenizer against goldens made by the reference `tokenizers` library
// (tests/tools/gen_tokenizer_golden.py), plus the pieces the goldens cannot show: streaming,
// threads, prompt building, load errors.
#include "tokenizer/tokenizer.h"

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "tokenizer/incremental_decoder.h"
#include "tokenizer/ocr_prompt.h"
#include "tokenizer/unicode_classes.h"
#include "tokenizer/utf8.h"

namespace dsocr::tokenizer {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

fs::path source_dir() {
  const char* dir = std::getenv("DSOCR_SOURCE_DIR");
  return dir ? fs::path(dir) : fs::path(DSOCR_TEST_SOURCE_DIR);
}

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

struct Golden {
  std::shared_ptr<const Tokenizer> tokenizer;
  json data;
  Golden() {
    std::ifstream in(source_dir() / "tests/data/tokenizer_golden.json");
    REQUIRE(in);
    data = json::parse(in);
    auto tok = Tokenizer::from_file(source_dir() / data["tokenizer"].get<std::string>());
    REQUIRE(tok.ok());
    tokenizer = *tok;
  }
};

const Golden& golden() {
  static const Golden g;
  return g;
}

TEST_CASE("Tokenizer: ids and decoding equal the reference on the goldens", "[tokenizer]") {
  const auto& g = golden();
  size_t checked = 0;
  for (const auto& c : g.data["cases"]) {
    std::string input = from_hex(c["hex"].get<std::string>());
    INFO("input hex " << c["hex"].get<std::string>());
    auto ids = g.tokenizer->encode(input);
    CHECK(ids == c["ids"].get<std::vector<int32_t>>());
    CHECK(g.tokenizer->decode(ids) == c["decoded"].get<std::string>());
    CHECK(g.tokenizer->decode(ids, true) == c["decoded_skip_special"].get<std::string>());
    ++checked;
  }
  CHECK(checked >= 400);
}

TEST_CASE("Tokenizer: lookups", "[tokenizer]") {
  const auto& t = *golden().tokenizer;
  CHECK(t.token_to_id("<image>") == 128815);
  CHECK(t.token_to_id("<|grounding|>") == 128820);
  CHECK(t.token_to_id(kBosToken) == 0);
  CHECK_FALSE(t.token_to_id("no such token").has_value());
  CHECK(t.id_to_token(128815) == "<image>");
  CHECK_FALSE(t.id_to_token(129000).has_value());  // a row of the embedding with no token
  CHECK_FALSE(t.id_to_token(-1).has_value());
  CHECK(t.is_special(1));
  CHECK_FALSE(t.is_special(16));
  CHECK(t.vocab_size() == 128827);
}

TEST_CASE("IncrementalDecoder: deltas are whole characters and add up to decode()", "[tokenizer]") {
  const auto& g = golden();
  for (bool skip : {false, true}) {
    for (const auto& c : g.data["cases"]) {
      auto ids = c["ids"].get<std::vector<int32_t>>();
      IncrementalDecoder decoder(g.tokenizer, skip);
      std::string streamed;
      for (int32_t id : ids) {
        std::string delta = decoder.push(id);
        CHECK(is_valid_utf8(delta));
        streamed += delta;
      }
      streamed += decoder.finish();
      CHECK(streamed == g.tokenizer->decode(ids, skip));
    }
  }
}

TEST_CASE("IncrementalDecoder: holds back a character split across tokens", "[tokenizer]") {
  const auto& t = golden().tokenizer;
  std::vector<int32_t> ids = t->encode("\xF0\x9F\xAB\xA0");  // U+1FAE0, rare: several byte tokens
  REQUIRE(ids.size() >= 2);
  IncrementalDecoder decoder(t, false);
  for (size_t i = 0; i + 1 < ids.size(); ++i) CHECK(decoder.push(ids[i]).empty());
  CHECK(decoder.push(ids.back()) == "\xF0\x9F\xAB\xA0");
  CHECK(decoder.finish().empty());
  // A stream cut in the middle of a character ends with U+FFFD, exactly like decode().
  IncrementalDecoder cut(t, false);
  CHECK(cut.push(ids.front()).empty());
  CHECK(cut.finish() == t->decode(std::vector<int32_t>{ids.front()}));
}

TEST_CASE("Tokenizer: one shared instance, eight threads", "[tokenizer][stress]") {
  const auto& g = golden();
  std::vector<std::string> inputs;
  std::vector<std::vector<int32_t>> expected;
  std::vector<std::string> decoded;
  for (const auto& c : g.data["cases"]) {
    inputs.push_back(from_hex(c["hex"].get<std::string>()));
    expected.push_back(c["ids"].get<std::vector<int32_t>>());
    decoded.push_back(c["decoded"].get<std::string>());
  }
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 5; ++round) {
        for (size_t i = 0; i < inputs.size(); ++i) {
          size_t k = (i * 7 + static_cast<size_t>(t) * 13 + round) % inputs.size();
          if (g.tokenizer->encode(inputs[k]) != expected[k]) ++mismatches;
          if (g.tokenizer->decode(expected[k]) != decoded[k]) ++mismatches;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(mismatches == 0);
}

TEST_CASE("OcrPromptBuilder: the spec's token sequences", "[tokenizer][prompt]") {
  const auto& g = golden();
  auto builder = OcrPromptBuilder::create(g.tokenizer);
  REQUIRE(builder.ok());
  CHECK(builder->bos_id() == 0);
  CHECK(builder->image_id() == 128815);
  for (const auto& p : g.data["prompts"]) {
    auto counts = p["image_token_counts"].get<std::vector<int64_t>>();
    auto prompt = builder->build(p["text"].get<std::string>(), counts);
    REQUIRE(prompt.ok());
    CHECK(prompt->ids == p["ids"].get<std::vector<int32_t>>());
    REQUIRE(prompt->image_spans.size() == counts.size());
    for (size_t k = 0; k < counts.size(); ++k) {
      const auto& span = prompt->image_spans[k];
      CHECK(span.length == static_cast<size_t>(counts[k]));
      for (size_t i = span.offset; i < span.offset + span.length; ++i) {
        CHECK(prompt->ids[i] == 128815);
      }
    }
  }
  // Spec §8.2 example, spelled out: [0] + [128815] x 1121 + tok("\n") + [128820] + tok(...)
  auto doc = builder->build(*ocr_task_prompt("document"), std::vector<int64_t>{1121});
  REQUIRE(doc.ok());
  CHECK(doc->ids.size() ==
        1 + 1121 + 1 + 1 + g.tokenizer->encode("Convert the document to markdown.").size());
  CHECK(doc->ids[1122] == g.tokenizer->encode("\n").front());
  CHECK(doc->ids[1123] == 128820);
  CHECK(doc->num_image_tokens() == 1121);
}

TEST_CASE("OcrPromptBuilder: errors", "[tokenizer][prompt]") {
  auto builder = OcrPromptBuilder::create(golden().tokenizer);
  REQUIRE(builder.ok());
  CHECK(builder->build("<image> <image>", std::vector<int64_t>{257}).status().code() ==
        StatusCode::kInvalidArgument);
  CHECK_FALSE(builder->build("no marker", std::vector<int64_t>{257}).ok());
  CHECK_FALSE(builder->build("<image>", std::vector<int64_t>{0}).ok());
  CHECK_FALSE(ocr_task_prompt("translate").has_value());
}

TEST_CASE("chat_prompt_text: images come first", "[tokenizer][prompt]") {
  std::vector<std::string> text{"Free OCR."};
  CHECK(chat_prompt_text(text, 1).value() == "<image>\nFree OCR.");
  CHECK(chat_prompt_text(text, 2).value() == "<image><image>\nFree OCR.");
  std::vector<std::string> marked{"<image>\n<|grounding|>Convert the document to markdown."};
  CHECK(chat_prompt_text(marked, 1).value() == marked[0]);
  std::vector<std::string> two{"a", "b"};
  CHECK(chat_prompt_text(two, 0).value() == "a\nb");
  CHECK(chat_prompt_text({}, 1).value() == "<image>");
  std::vector<std::string> too_many{"<image><image>"};
  CHECK(chat_prompt_text(too_many, 1).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("Tokenizer: load errors are clear", "[tokenizer]") {
  CHECK(Tokenizer::from_json_text("not json").status().code() == StatusCode::kInvalidArgument);
  CHECK(Tokenizer::from_file("/nonexistent/tokenizer.json").status().code() ==
        StatusCode::kNotFound);
  auto unsupported = Tokenizer::from_json_text(R"({"model": {"type": "Unigram", "vocab": []}})");
  CHECK(unsupported.status().code() == StatusCode::kUnimplemented);
  CHECK(unsupported.status().message().find("Unigram") != std::string::npos);
  auto bad_merge = Tokenizer::from_json_text(
      R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]}})");
  CHECK(bad_merge.status().message().find("missing from the vocabulary") != std::string::npos);
  auto bad_regex = Tokenizer::from_json_text(
      R"({"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(unclosed"},
          "behavior": "Isolated"}, "model": {"type": "BPE", "vocab": {}, "merges": []}})");
  CHECK(bad_regex.status().message().find("(unclosed") != std::string::npos);
  auto tiny = Tokenizer::from_json_text(
      R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]}})");
  REQUIRE(tiny.ok());
  CHECK((*tiny)->encode("abab") == std::vector<int32_t>{2, 2});
}

TEST_CASE("upgrade_unicode_classes", "[tokenizer]") {
  std::string letters = upgrade_unicode_classes("\\p{L}+");
  CHECK(letters.rfind("[\\p{L}\\x{1C89}-\\x{1C8A}", 0) == 0);
  CHECK(letters.back() == '+');
  CHECK(upgrade_unicode_classes("[^\\r\\n\\p{S}]").find("[^\\r\\n\\p{S}\\x{") == 0);
  CHECK(upgrade_unicode_classes("\\P{N}").rfind("[^\\p{N}\\x{", 0) == 0);
  CHECK(upgrade_unicode_classes("[a\\p{^M}]").find("[\\p{^M}&&[^\\x{") != std::string::npos);
  CHECK(upgrade_unicode_classes("\\p{Lu}\\\\p{L}[]\\p{L}]") ==
        "\\p{Lu}\\\\p{L}[]\\p{L}" + upgrade_unicode_classes("[\\p{L}]").substr(6));
}

TEST_CASE("UTF-8: lossy conversion follows the maximal-subpart rule", "[tokenizer]") {
  const std::string fffd = "\xEF\xBF\xBD";
  CHECK(to_valid_utf8_lossy("\xE2\x82") == fffd);                    // one truncated sequence
  CHECK(to_valid_utf8_lossy("\xF0\x80\x80") == fffd + fffd + fffd);  // overlong: each byte
  CHECK(to_valid_utf8_lossy("\xED\xA0\x80") == fffd + fffd + fffd);  // surrogate
  CHECK(to_valid_utf8_lossy("a\xE2\x82z") == "a" + fffd + "z");
  CHECK(python_strip(" \t\xE3\x80\x80x y\xC2\xA0\x1C") == "x y");
  CHECK(python_strip("\xE2\x80\x8Bx") == "\xE2\x80\x8Bx");  // U+200B is not whitespace
}

}  // namespace
}  // namespace dsocr::tokenizer

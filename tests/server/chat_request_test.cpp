// Request parsing: pure functions, no server. (Image sources: image_fetcher_test.cpp.)
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "server/chat_request.h"
#include "tokenizer/ocr_prompt.h"

namespace dsocr::server {
namespace {

using json = nlohmann::json;

ApiError parse(const json& body, ChatRequest* out) { return parse_chat_request(body, {}, out); }

// The prompt text the model sees: what the server sends (GenerateRequest::prompt) with the image
// markers placed as the engine places them (engine/request_preparer.cpp).
std::string model_prompt(const ChatRequest& r) {
  auto prompt = r.prompt_text();
  REQUIRE(prompt.ok());
  auto text =
      tokenizer::chat_prompt_text(std::span<const std::string>(&*prompt, 1), r.images.size());
  REQUIRE(text.ok());
  return *text;
}

TEST_CASE("parse_chat_request: fields reach the sampling parameters", "[chat]") {
  json body = json::parse(R"({
    "model": "m", "max_tokens": 10, "max_completion_tokens": 20, "temperature": 0.5,
    "top_p": 0.9, "top_k": 5, "seed": -1, "presence_penalty": 0.5, "frequency_penalty": -0.5,
    "repetition_penalty": 1.1, "min_p": 0.05, "stop": "END", "stream": true,
    "stream_options": {"include_usage": true}, "skip_special_tokens": true,
    "ngram_size": 30, "ngram_window": 200, "ngram_whitelist": [7, 8], "stop_token_ids": [5],
    "loop_min_span": 64, "loop_max_period": 16, "n": 1, "logprobs": false,
    "messages": [{"role": "system", "content": "sys"},
                 {"role": "user", "content": [
                    {"type": "text", "text": "one"},
                    {"type": "image_url", "image_url": {"url": "data:a", "detail": "high"}},
                    {"type": "image_url", "image_url": "data:b"}]}]})");
  ChatRequest r;
  REQUIRE(parse(body, &r).ok());
  CHECK(r.model == "m");
  CHECK(r.sampling.max_tokens == 20);  // max_completion_tokens wins
  CHECK(r.sampling.temperature == 0.5);
  CHECK(r.sampling.top_p == 0.9);
  CHECK(r.sampling.top_k == 5);
  CHECK(r.sampling.seed == std::numeric_limits<uint64_t>::max());
  CHECK(r.sampling.presence_penalty == 0.5);
  CHECK(r.sampling.frequency_penalty == -0.5);
  CHECK(r.sampling.repetition_penalty == 1.1);
  CHECK(r.sampling.min_p == 0.05);
  CHECK(r.sampling.ngram_size == 30);
  CHECK(r.sampling.ngram_window == 200);
  CHECK(r.sampling.ngram_whitelist == std::vector<int32_t>{7, 8});
  CHECK(r.sampling.stop_token_ids == std::vector<int32_t>{5});
  CHECK(r.sampling.loop_min_span == 64);
  CHECK(r.sampling.loop_max_period == 16);
  CHECK(r.stop == std::vector<std::string>{"END"});
  CHECK(r.stream);
  CHECK(r.include_usage);
  CHECK(r.skip_special_tokens);
  CHECK(r.text_parts == std::vector<std::string>{"sys", "one"});
  REQUIRE(r.images.size() == 2);
  CHECK(r.images[0].url == "data:a");
  CHECK(r.images[1].param == "messages[1].content[2].image_url.url");
  CHECK(model_prompt(r) == "<image><image>\nsys\none");
}

TEST_CASE("parse_chat_request: OCR defaults", "[chat]") {
  ChatRequest r;
  REQUIRE(parse(json::parse(R"({"model":"m","messages":[{"role":"user","content":[
      {"type":"image_url","image_url":{"url":"data:x"}}]}]})"),
                &r)
              .ok());
  CHECK(r.sampling.greedy());
  CHECK(r.sampling.ngram_size == 20);
  CHECK(r.sampling.ngram_window == 90);
  CHECK_FALSE(r.skip_special_tokens);
  CHECK(model_prompt(r) == "<image>\n<|grounding|>Convert the document to markdown.");
  r.task = "free";
  CHECK(model_prompt(r) == "<image>\nFree OCR.");
  r.images.push_back(r.images[0]);
  CHECK(model_prompt(r) == "<image><image>\nFree OCR.");
  // Markers in the text are used as given.
  ChatRequest m;
  REQUIRE(parse(json::parse(R"({"model":"m","messages":[{"role":"user","content":[
      {"type":"text","text":"<image>\nParse the figure."},
      {"type":"image_url","image_url":{"url":"data:x"}}]}]})"),
                &m)
              .ok());
  CHECK(model_prompt(m) == "<image>\nParse the figure.");
}

TEST_CASE("prompt_text: the server places no image markers, the engine does", "[chat]") {
  ChatRequest r;
  REQUIRE(parse(json::parse(R"({"model":"m","messages":[{"role":"user","content":[
      {"type":"text","text":"a"},{"type":"text","text":"b"},
      {"type":"image_url","image_url":{"url":"data:x"}}]}]})"),
                &r)
              .ok());
  CHECK(*r.prompt_text() == "a\nb");  // joined as chat_prompt_text joins them, no marker
  CHECK(model_prompt(r) == "<image>\na\nb");
  // Two pages without text get the document prompt with a marker for each page (the official
  // prompt's single marker is not left in to clash with them).
  r.text_parts.clear();
  r.images.push_back(r.images[0]);
  CHECK(*r.prompt_text() == "<|grounding|>Convert the document to markdown.");
  CHECK(model_prompt(r) == "<image><image>\n<|grounding|>Convert the document to markdown.");
  // A task together with text is the one thing refused here.
  r.task = "free";
  r.text_parts = {"x"};
  CHECK_FALSE(r.prompt_text().ok());
}

TEST_CASE("parse_chat_request: every bad field is named", "[chat]") {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"messages":[{"role":"user","content":"x"}]})", "model"},
      {R"({"model":3,"messages":[{"role":"user","content":"x"}]})", "model"},
      {R"({"model":"m"})", "messages"},
      {R"({"model":"m","messages":{}})", "messages"},
      {R"({"model":"m","messages":[5]})", "messages[0]"},
      {R"({"model":"m","messages":[{"content":"x"}]})", "messages[0].role"},
      {R"({"model":"m","messages":[{"role":"user"}]})", "messages[0].content"},
      {R"({"model":"m","messages":[{"role":"user","content":5}]})", "messages[0].content"},
      {R"({"model":"m","messages":[{"role":"user","content":[{"type":"audio"}]}]})",
       "messages[0].content[0].type"},
      {R"({"model":"m","messages":[{"role":"user","content":[{"type":"text"}]}]})",
       "messages[0].content[0].text"},
      {R"({"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{}}]}]})",
       "messages[0].content[0].image_url.url"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"top_p":0})", "top_p"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"top_k":-2})", "top_k"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"seed":"s"})", "seed"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"seed":1e300})", "seed"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":18446744073709551615})",
       "max_tokens"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3})",
       "temperature"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"stop":[""]})", "stop"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"stop":[1]})", "stop"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"n":0})", "n"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":true})", "logprobs"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"task":"poem"})", "task"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"ngram_whitelist":[-1]})",
       "ngram_whitelist"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":{"include_usage":1}})",
       "stream_options.include_usage"},
  };
  for (const auto& [body, param] : cases) {
    INFO(body);
    ChatRequest r;
    ApiError e = parse(json::parse(body), &r);
    CHECK(e.status.code() == StatusCode::kInvalidArgument);
    CHECK(e.param == param);
  }
  ChatRequest r;
  ChatLimits limits;
  limits.max_images = 1;
  ApiError e = parse_chat_request(json::parse(R"({"model":"m","messages":[{"role":"user","content":[
      {"type":"image_url","image_url":{"url":"data:a"}},{"type":"image_url","image_url":{"url":"data:b"}}]}]})"),
                                  limits, &r);
  CHECK(e.param == "messages[0].content[1]");
}

}  // namespace
}  // namespace dsocr::server

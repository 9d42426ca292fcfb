// Request parsing, image sources and SSRF address classification: pure functions, no server.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "server/chat_request.h"
#include "server/image_fetcher.h"

namespace dsocr::server {
namespace {

using json = nlohmann::json;

ApiError parse(const json& body, ChatRequest* out) { return parse_chat_request(body, {}, out); }

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
  CHECK(*r.prompt_text() == "<image><image>\nsys\none");
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
  CHECK(*r.prompt_text() == "<image>\n<|grounding|>Convert the document to markdown.");
  r.task = "free";
  CHECK(*r.prompt_text() == "<image>\nFree OCR.");
  r.images.push_back(r.images[0]);
  CHECK(*r.prompt_text() == "<image><image>\nFree OCR.");
  // Markers in the text are used as given.
  ChatRequest m;
  REQUIRE(parse(json::parse(R"({"model":"m","messages":[{"role":"user","content":[
      {"type":"text","text":"<image>\nParse the figure."},
      {"type":"image_url","image_url":{"url":"data:x"}}]}]})"),
                &m)
              .ok());
  CHECK(*m.prompt_text() == "<image>\nParse the figure.");
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

TEST_CASE("data: URIs", "[chat][images]") {
  CHECK(*decode_data_uri("data:image/png;base64,aGVsbG8=", 100) == "hello");
  CHECK(*decode_data_uri("data:;base64,aGVs\nbG8", 100) == "hello");          // no padding, newline
  CHECK(*decode_data_uri("DATA:image/jpeg;base64,-_8=", 100) == "\xfb\xff");  // URL-safe
  CHECK(decode_data_uri("data:image/png,hello", 100).status().code() ==
        StatusCode::kInvalidArgument);  // not base64
  CHECK(decode_data_uri("data:text/html;base64,aGVsbG8=", 100).status().code() ==
        StatusCode::kInvalidArgument);
  CHECK(decode_data_uri("data:image/png;base64,a$b=", 100).status().code() ==
        StatusCode::kInvalidArgument);
  CHECK(decode_data_uri("data:image/png;base64,aGVsbG8=", 4).status().code() ==
        StatusCode::kPayloadTooLarge);
  // Refused from its length, before decoding.
  std::string huge = "data:image/png;base64," + std::string(4000, 'A');
  CHECK(decode_data_uri(huge, 1000).status().code() == StatusCode::kPayloadTooLarge);
}

TEST_CASE("is_public_address refuses every non-public range", "[chat][images]") {
  for (const char* a : {"127.0.0.1",
                        "127.255.0.9",
                        "10.1.2.3",
                        "172.16.0.1",
                        "172.31.255.255",
                        "192.168.1.1",
                        "169.254.169.254",
                        "100.64.0.1",
                        "0.0.0.0",
                        "224.0.0.1",
                        "255.255.255.255",
                        "::1",
                        "::",
                        "fe80::1",
                        "fc00::1",
                        "fd00:ec2::254",
                        "::ffff:127.0.0.1",
                        "::ffff:169.254.169.254",
                        "64:ff9b::a9fe:a9fe",
                        "2002:7f00:1::",
                        "ff02::1",
                        "192.0.2.1",
                        "not-an-ip"}) {
    INFO(a);
    CHECK_FALSE(is_public_address(a));
  }
  for (const char* a :
       {"8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8"}) {
    INFO(a);
    CHECK(is_public_address(a));
  }
}

TEST_CASE("ImageFetcher: schemes, SSRF refusal, local files", "[chat][images]") {
  ImageFetcher strict({});
  CHECK(strict.fetch("ftp://example.com/a.png").status().code() == StatusCode::kInvalidArgument);
  CHECK(strict.fetch("gopher://x").status().code() == StatusCode::kInvalidArgument);
  auto loopback = strict.fetch("http://127.0.0.1:9/a.png");
  CHECK(loopback.status().code() == StatusCode::kInvalidArgument);
  CHECK(loopback.status().message().find("non-public") != std::string::npos);
  CHECK(strict.fetch("http://[::1]:9/a.png").status().message().find("non-public") !=
        std::string::npos);
  CHECK(strict.fetch("http://localhost:9/a.png").status().message().find("non-public") !=
        std::string::npos);
  CHECK(strict.fetch("file:///etc/passwd").status().message().find("refused") != std::string::npos);

  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / "dsocr_fetch_test";
  fs::create_directories(dir / "media");
  std::ofstream(dir / "media" / "a.png") << "PNGDATA";
  std::ofstream(dir / "secret.txt") << "SECRET";
  fs::remove(dir / "media" / "link");
  fs::create_symlink(dir / "secret.txt", dir / "media" / "link");
  ImageFetchOptions o;
  o.allowed_local_media_dir = (dir / "media").string();
  ImageFetcher local(o);
  CHECK(*local.fetch("file://" + (dir / "media" / "a.png").string()) == "PNGDATA");
  CHECK_FALSE(local.fetch("file://" + (dir / "media" / ".." / "secret.txt").string()).ok());
  CHECK_FALSE(local.fetch("file://" + (dir / "media" / "link").string()).ok());  // symlink out
  CHECK_FALSE(local.fetch("file://" + (dir / "media" / "missing.png").string()).ok());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace dsocr::server

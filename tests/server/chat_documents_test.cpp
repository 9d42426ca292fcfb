// PDFs and page objects in the chat API (issue #20), over real HTTP against the scripted engine:
// a PDF (file part or image_url) becomes one engine request per selected page, answered in page
// order whatever order the pages finish in, with the page-split marker, summed usage and a
// `pages` array of 144-dpi sizes and grounding blocks; a page that fails names itself; at most
// max_pages_in_flight pages are with the engine at once; a page the image budget refuses waits
// its turn; limits and malformed ranges are 4xx.
#include <catch2/catch.hpp>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "server/page_result.h"
#include "tests/server/chat_test_server.h"
#include "tests/vision/test_pdf.h"

namespace dsocr::server {
namespace {

using json = nlohmann::json;
using dsocr::testing::TestPage;
using testing::ChatServer;
using testing::FakeEngine;
using testing::send_and_hang_up;
using testing::shared_tokenizer;
using testing::sse_data;

std::string base64(const std::string& bytes) {
  static const char* abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v =
        (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8) | uint8_t(bytes[i + 2]);
    for (int k = 18; k >= 0; k -= 6) out += abc[(v >> k) & 63];
  }
  if (i + 1 == bytes.size()) {
    const uint32_t v = uint8_t(bytes[i]) << 16;
    out += abc[(v >> 18) & 63];
    out += abc[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == bytes.size()) {
    const uint32_t v = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8);
    out += abc[(v >> 18) & 63];
    out += abc[(v >> 12) & 63];
    out += abc[(v >> 6) & 63];
    out += "=";
  }
  return out;
}

// A4, Letter and a small page rotated by 90 degrees.
std::string three_page_pdf() {
  return dsocr::testing::make_pdf({TestPage(595, 842), TestPage(612, 792), TestPage(300, 200, 90)});
}

json pdf_request(const std::string& pdf, json extra = json::object()) {
  json part = {
      {"type", "file"},
      {"file",
       {{"file_data", "data:application/pdf;base64," + base64(pdf)}, {"filename", "doc.pdf"}}}};
  json r = {{"model", "ocr"},
            {"messages", json::array({{{"role", "user"}, {"content", json::array({part})}}})}};
  r.update(extra);
  return r;
}

std::vector<int32_t> with_eos(const std::string& text) {
  auto ids = shared_tokenizer()->encode(text);
  ids.push_back(*shared_tokenizer()->token_to_id(tokenizer::kEosToken));
  return ids;
}

// The page number a request of the fake engine is for (0 for an image request).
int page_of(const engine::GenerateRequest& r) {
  return r.images.size() == 1 && r.images[0].document ? r.images[0].page_number : 0;
}

// Page N replies "<tag> Page N" with a title box; `slow_page` takes 40 ms a token.
void script_pages(ChatServer& s, int slow_page = 0) {
  s.engine->script = [slow_page](const engine::GenerateRequest& r) {
    const int n = page_of(r);
    FakeEngine::Script script;
    script.reply = with_eos("<|ref|>title<|/ref|><|det|>[[0, 0, 999, 499]]<|/det|>\nPage " +
                            std::to_string(n));
    if (n == slow_page) script.token_delay = std::chrono::milliseconds(40);
    return script;
  };
}

std::string page_text(int n) {
  return "<|ref|>title<|/ref|><|det|>[[0, 0, 999, 499]]<|/det|>\nPage " + std::to_string(n);
}

TEST_CASE("documents: a PDF file part is one request per page, answered in order", "[documents]") {
  ChatServer s;
  script_pages(s, /*slow_page=*/1);  // page 1 finishes last; the answer keeps page order
  auto res = s.chat(pdf_request(three_page_pdf(), {{"max_tokens", 50}}));
  REQUIRE(res);
  REQUIRE(res->status == 200);
  json j = json::parse(res->body);
  const std::string split(kPageSplitMarker);
  CHECK(j["choices"][0]["message"]["content"] ==
        page_text(1) + split + page_text(2) + split + page_text(3) + split);
  CHECK(j["choices"][0]["finish_reason"] == "stop");
  // Usage is the sum over the pages.
  CHECK(j["usage"]["prompt_tokens"] == 3 * 300);
  CHECK(j["usage"]["prompt_tokens_details"]["image_tokens"] == 3 * 257);
  const int64_t n = static_cast<int64_t>(with_eos(page_text(1)).size());
  CHECK(j["usage"]["completion_tokens"] == 3 * n);

  const json& pages = j["pages"];
  REQUIRE(pages.size() == 3);
  // 144 dpi: points x 2, rounded as MuPDF rounds; the rotated page turns.
  const int sizes[3][2] = {{1190, 1684}, {1224, 1584}, {400, 600}};
  for (int i = 0; i < 3; ++i) {
    CHECK(pages[i]["index"] == i);
    CHECK(pages[i]["page_number"] == i + 1);
    CHECK(pages[i]["width"] == sizes[i][0]);
    CHECK(pages[i]["height"] == sizes[i][1]);
    CHECK(pages[i]["text"] == page_text(i + 1));
    REQUIRE(pages[i]["blocks"].size() == 1);
    CHECK(pages[i]["blocks"][0]["label"] == "title");
    CHECK(pages[i]["blocks"][0]["text"] == "Page " + std::to_string(i + 1));
    // int(499 / 999 * H)
    CHECK(pages[i]["blocks"][0]["bbox"] ==
          json::array({0, 0, sizes[i][0], int(499.0 / 999.0 * sizes[i][1])}));
    CHECK_FALSE(pages[i].contains("markdown"));
  }
  // Each engine request was one page of the document with the document prompt.
  std::lock_guard lock(s.engine->mu);
  REQUIRE(s.engine->requests.size() == 3);
  std::vector<int> numbers;
  for (const auto& r : s.engine->requests) {
    numbers.push_back(page_of(r));
    CHECK(r.prompt == "<image>\n<|grounding|>Convert the document to markdown.");
    CHECK(r.sampling.max_tokens == 50);
  }
  std::sort(numbers.begin(), numbers.end());
  CHECK(numbers == std::vector<int>{1, 2, 3});
}

TEST_CASE("documents: pages stream in order, each page's last chunk carries its page object",
          "[documents]") {
  ChatServer s;
  script_pages(s, /*slow_page=*/2);
  auto res = s.chat(pdf_request(three_page_pdf(), {{"stream", true}, {"markdown", true}}));
  REQUIRE(res);
  REQUIRE(res->status == 200);
  auto events = sse_data(res->body);
  REQUIRE(events.back() == "[DONE]");
  std::string content;
  std::vector<json> page_objects;
  std::vector<size_t> page_ends;  // content length when each page object arrived
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    json e = json::parse(events[i]);
    REQUIRE_FALSE(e.contains("error"));
    if (!e["choices"].empty() && e["choices"][0]["delta"].contains("content"))
      content += e["choices"][0]["delta"]["content"].get<std::string>();
    if (e.contains("pages")) {
      REQUIRE(e["pages"].size() == 1);
      page_objects.push_back(e["pages"][0]);
      page_ends.push_back(content.size());
    }
  }
  const std::string split(kPageSplitMarker);
  const std::string expected = page_text(1) + split + page_text(2) + split + page_text(3) + split;
  CHECK(content == expected);
  REQUIRE(page_objects.size() == 3);
  for (int i = 0; i < 3; ++i) {
    CHECK(page_objects[i]["index"] == i);
    CHECK(page_objects[i]["page_number"] == i + 1);
    // The page object comes with the chunk that ends the page (its split marker).
    CHECK(content.substr(0, page_ends[i]).ends_with(page_text(i + 1) + split));
    // markdown: the official PDF rewrite drops the title tag.
    CHECK(page_objects[i]["markdown"] == "\nPage " + std::to_string(i + 1));
  }
  CHECK(json::parse(events[events.size() - 2])["choices"][0]["finish_reason"] == "stop");
}

TEST_CASE("documents: a page range selects pages, bad ranges and misuse are 400s", "[documents]") {
  ChatServer s;
  script_pages(s);
  auto res = s.chat(pdf_request(three_page_pdf(), {{"pages", "2-3"}}));
  REQUIRE(res);
  REQUIRE(res->status == 200);
  json j = json::parse(res->body);
  REQUIRE(j["pages"].size() == 2);
  CHECK(j["pages"][0]["index"] == 0);
  CHECK(j["pages"][0]["page_number"] == 2);
  CHECK(j["pages"][1]["page_number"] == 3);
  CHECK(s.engine->submitted == 2);

  for (json pages : {json("4"), json("3-2"), json("0"), json("x"), json(-1), json(2.5)}) {
    auto bad = s.chat(pdf_request(three_page_pdf(), {{"pages", pages}}));
    REQUIRE(bad);
    INFO(pages.dump() << " -> " << bad->body);
    CHECK(bad->status == 400);
    CHECK(json::parse(bad->body)["error"]["param"] == "pages");
  }
  CHECK(s.chat(pdf_request(three_page_pdf(), {{"pages", 3}}))->status == 200);
  CHECK(s.chat(pdf_request(three_page_pdf(), {{"pages", "2-"}}))->status == 200);
  // `pages` without a PDF.
  auto no_pdf = s.chat(testing::basic_request({{"pages", "1"}}));
  CHECK(no_pdf->status == 400);
  CHECK(json::parse(no_pdf->body)["error"]["param"] == "pages");
}

TEST_CASE("documents: limits, damaged PDFs and mixing a PDF with images are 4xx", "[documents]") {
  ServerConfig config;
  config.max_pdf_pages = 5;
  ChatServer s(config);
  script_pages(s);
  const auto status_of = [&](json request) {
    auto res = s.chat(std::move(request));
    REQUIRE(res);
    INFO(res->body);
    CHECK(json::parse(res->body).contains("error"));
    return res->status;
  };
  const std::string six = dsocr::testing::make_pdf(std::vector<TestPage>(6, TestPage(100, 100)));
  CHECK(status_of(pdf_request(six)) == 413);
  CHECK(s.chat(pdf_request(six, {{"pages", "2-6"}}))->status == 200);  // five selected
  CHECK(status_of(pdf_request("%PDF-1.4\nnot really a pdf")) == 400);
  CHECK(status_of(pdf_request(dsocr::testing::make_pdf({}))) == 400);  // no pages
  // A file part without file_data, or with an uploaded file's id.
  json no_data = pdf_request(three_page_pdf());
  no_data["messages"][0]["content"][0]["file"] = {{"file_id", "file-123"}};
  CHECK(status_of(no_data) == 400);
  // A PDF with another image in the same request.
  json mixed = pdf_request(three_page_pdf());
  mixed["messages"][0]["content"].push_back(
      {{"type", "image_url"}, {"image_url", {{"url", "data:image/png;base64,AAAA"}}}});
  CHECK(status_of(mixed) == 400);
  CHECK(s.engine->submitted == 5);  // only the good request reached the engine
}

TEST_CASE("documents: a PDF behind an image_url is recognised by its bytes", "[documents]") {
  ChatServer s;
  script_pages(s);
  json part = {
      {"type", "image_url"},
      {"image_url", {{"url", "data:application/octet-stream;base64," + base64(three_page_pdf())}}}};
  json r = {{"model", "ocr"},
            {"messages", json::array({{{"role", "user"}, {"content", json::array({part})}}})}};
  auto res = s.chat(r);
  REQUIRE(res);
  REQUIRE(res->status == 200);
  CHECK(json::parse(res->body)["pages"].size() == 3);
}

TEST_CASE("documents: a page that fails names itself", "[documents]") {
  ChatServer s;
  s.engine->script = [](const engine::GenerateRequest& r) {
    FakeEngine::Script script;
    script.reply = with_eos("Page " + std::to_string(page_of(r)));
    if (page_of(r) == 2) script.prepare_error = invalid_argument("the page did not render");
    return script;
  };
  SECTION("non-streaming: the error, with its status") {
    auto res = s.chat(pdf_request(three_page_pdf()));
    REQUIRE(res);
    CHECK(res->status == 400);
    CHECK(json::parse(res->body)["error"]["message"] == "page 2: the page did not render");
  }
  SECTION("streaming: page 1, then an error event naming page 2, then [DONE]") {
    auto res = s.chat(pdf_request(three_page_pdf(), {{"stream", true}}));
    REQUIRE(res);
    REQUIRE(res->status == 200);
    auto events = sse_data(res->body);
    REQUIRE(events.size() >= 3);
    CHECK(events.back() == "[DONE]");
    json error = json::parse(events[events.size() - 2]);
    CHECK(error["error"]["message"] == "page 2: the page did not render");
    CHECK(res->body.find("Page 1") != std::string::npos);
    CHECK(res->body.find("Page 3") == std::string::npos);
  }
}

TEST_CASE("documents: at most max_pages_in_flight pages are with the engine at once",
          "[documents]") {
  ServerConfig config;
  config.max_pages_in_flight = 3;
  ChatServer s(config);
  s.engine->script = [](const engine::GenerateRequest& r) {
    FakeEngine::Script script;
    script.reply = with_eos("p" + std::to_string(page_of(r)));
    script.token_delay = std::chrono::milliseconds(2);
    return script;
  };
  // Pages 5 and 9 are refused as over the image budget twice each: they wait their turn.
  std::map<int, int> refusals{{5, 2}, {9, 2}};
  s.engine->over_budget = [&](const engine::GenerateRequest& r) {
    auto it = refusals.find(page_of(r));
    return it != refusals.end() && it->second-- > 0;
  };
  const std::string pdf = dsocr::testing::make_pdf(std::vector<TestPage>(24, TestPage(100, 50)));
  auto res = s.chat(pdf_request(pdf));
  REQUIRE(res);
  REQUIRE(res->status == 200);
  json j = json::parse(res->body);
  REQUIRE(j["pages"].size() == 24);
  std::string expected;
  for (int i = 1; i <= 24; ++i) expected += "p" + std::to_string(i) + std::string(kPageSplitMarker);
  CHECK(j["choices"][0]["message"]["content"] == expected);
  CHECK(s.engine->most_live <= 3);
  CHECK(s.engine->most_live >= 2);  // pages did overlap
  CHECK(s.engine->refused_over_budget == 4);
}

TEST_CASE("documents: a client that hangs up mid-document cancels its pages, and no more start",
          "[documents]") {
  ServerConfig config;
  config.max_pages_in_flight = 4;
  ChatServer s(config);
  s.engine->script = [](const engine::GenerateRequest& r) {
    FakeEngine::Script script;
    script.reply = with_eos("page " + std::to_string(page_of(r)) + " has many words in it");
    script.token_delay = std::chrono::milliseconds(30);
    return script;
  };
  const std::string pdf = dsocr::testing::make_pdf(std::vector<TestPage>(40, TestPage(100, 50)));
  SECTION("non-streaming") { send_and_hang_up(s.server->port(), pdf_request(pdf).dump(), 0); }
  SECTION("streaming, after the first chunks") {
    send_and_hang_up(s.server->port(), pdf_request(pdf, {{"stream", true}}).dump(), 700);
  }
  for (int i = 0; i < 300 && s.server->active_chat_requests() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(s.server->active_chat_requests() == 0);
  for (int i = 0; i < 300 && s.engine->live > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(s.engine->live == 0);
  // Only the window was ever submitted (pages finish in ~0.3 s; the client left well before 40).
  CHECK(s.engine->submitted <= 8);
  CHECK(s.engine->cancelled >= 1);
  CHECK(s.engine->cancelled + s.engine->finished == s.engine->submitted);
  const int submitted = s.engine->submitted;
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK(s.engine->submitted == submitted);
}

TEST_CASE("documents: a PDF in flight when the engine starts draining finishes all its pages",
          "[documents]") {
  ServerConfig config;
  config.max_pages_in_flight = 2;
  ChatServer s(config);
  s.engine->script = [](const engine::GenerateRequest& r) {
    FakeEngine::Script script;
    script.reply = with_eos("p" + std::to_string(page_of(r)));
    script.token_delay = std::chrono::milliseconds(10);
    return script;
  };
  const std::string pdf = dsocr::testing::make_pdf(std::vector<TestPage>(12, TestPage(100, 50)));
  std::thread drain([&] {
    while (s.engine->submitted < 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    s.engine->engine_state = engine::EngineState::kDraining;  // SIGTERM
  });
  auto res = s.chat(pdf_request(pdf));
  drain.join();
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(json::parse(res->body)["pages"].size() == 12);
  CHECK(s.engine->submitted == 12);
  // A new document is not taken any more.
  auto refused = s.chat(pdf_request(pdf));
  CHECK(refused->status == 503);
}

TEST_CASE(
    "documents: a page that fails ahead of a slow one fails a JSON answer at once, and no "
    "page after it starts",
    "[documents]") {
  ServerConfig config;
  config.max_pages_in_flight = 4;
  ChatServer s(config);
  s.engine->script = [](const engine::GenerateRequest& r) {
    FakeEngine::Script script;
    script.reply = with_eos("page " + std::to_string(page_of(r)) + " text");
    if (page_of(r) == 1) script.token_delay = std::chrono::milliseconds(400);  // ~2 s in all
    if (page_of(r) == 2) script.prepare_error = invalid_argument("the page did not render");
    return script;
  };
  const std::string pdf = dsocr::testing::make_pdf(std::vector<TestPage>(10, TestPage(100, 50)));
  SECTION("non-streaming") {
    const auto start = std::chrono::steady_clock::now();
    auto res = s.chat(pdf_request(pdf));
    const auto took = std::chrono::steady_clock::now() - start;
    REQUIRE(res);
    CHECK(res->status == 400);
    CHECK(json::parse(res->body)["error"]["message"] == "page 2: the page did not render");
    CHECK(took < std::chrono::milliseconds(1500));  // page 1 alone takes ~2 s
  }
  SECTION("streaming: page 1, then page 2's error; nothing after page 2 was started") {
    auto res = s.chat(pdf_request(pdf, {{"stream", true}}));
    REQUIRE(res);
    auto events = sse_data(res->body);
    CHECK(json::parse(events[events.size() - 2])["error"]["message"] ==
          "page 2: the page did not render");
    CHECK(res->body.find("page 1 text") != std::string::npos);
  }
  CHECK(s.engine->submitted == 4);  // the first window only
}

TEST_CASE("documents: an image whose metadata mentions %PDF- is still an image", "[documents]") {
  using namespace std::string_literals;
  CHECK(engine::looks_like_pdf("%PDF-1.7\n..."));
  CHECK(engine::looks_like_pdf("junk before the header %PDF-1.4\n"));
  CHECK_FALSE(engine::looks_like_pdf("\x89PNG\r\n\x1a\n...tEXtComment converted from %PDF-1.7"s));
  CHECK_FALSE(engine::looks_like_pdf("\xFF\xD8\xFF\xE0 JFIF %PDF-1.4"s));
  CHECK_FALSE(engine::looks_like_pdf("MM\0*...%PDF-"s));
  CHECK_FALSE(engine::looks_like_pdf("an image without the marker"));
}

TEST_CASE("documents: a file part must carry a data: URI", "[documents]") {
  ChatServer s;
  json r = pdf_request(three_page_pdf());
  r["messages"][0]["content"][0]["file"]["file_data"] = "https://example.com/doc.pdf";
  auto res = s.chat(r);
  CHECK(res->status == 400);
  CHECK(json::parse(res->body)["error"]["param"] == "messages[0].content[0].file.file_data");
  r = pdf_request(three_page_pdf());
  r["messages"][0]["content"][0]["file"]["filename"] = 7;
  CHECK(s.chat(r)->status == 400);
  CHECK(s.engine->submitted == 0);
}

TEST_CASE("documents: a request with one image has one page object of the image's size",
          "[documents]") {
  ChatServer s;
  s.engine->image_size = {640, 480};
  s.reply_with("<|ref|>text<|/ref|><|det|>[[0, 0, 999, 999]]<|/det|>\nhello");
  json part = {{"type", "image_url"}, {"image_url", {{"url", "data:image/png;base64,AAAA"}}}};
  json r = {{"model", "ocr"},
            {"messages", json::array({{{"role", "user"}, {"content", json::array({part})}}})}};
  auto res = s.chat(r);
  REQUIRE(res);
  REQUIRE(res->status == 200);
  json j = json::parse(res->body);
  CHECK(j["choices"][0]["message"]["content"] ==
        "<|ref|>text<|/ref|><|det|>[[0, 0, 999, 999]]<|/det|>\nhello");  // no page split
  REQUIRE(j["pages"].size() == 1);
  CHECK(j["pages"][0]["width"] == 640);
  CHECK(j["pages"][0]["blocks"][0]["bbox"] == json::array({0, 0, 640, 480}));
  // Text alone has no page to refer to.
  auto text_only = s.chat(testing::basic_request());
  CHECK_FALSE(json::parse(text_only->body).contains("pages"));
}

}  // namespace
}  // namespace dsocr::server

// server/page_result: the `pages` entries the chat API and `dsocr ocr` both write.
#include "server/page_result.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

namespace dsocr::server {
namespace {

using json = nlohmann::json;

TEST_CASE("page_json splits the text at its tags and scales the boxes to the page",
          "[page_result]") {
  const std::string text =
      "Intro\n<|ref|>title<|/ref|><|det|>[[0, 0, 999, 499]]<|/det|>\n# Heading\n"
      "<|ref|>text<|/ref|><|det|>[[100, 500, 300, 999], [10, 20, 30, 40]]<|/det|>\nBody";
  json page = page_json({.index = 2,
                         .page_number = 5,
                         .width = 1191,
                         .height = 1684,
                         .text = text,
                         .finish_reason = "stop"});
  CHECK(page["index"] == 2);
  CHECK(page["page_number"] == 5);
  CHECK(page["width"] == 1191);
  CHECK(page["height"] == 1684);
  CHECK(page["finish_reason"] == "stop");
  CHECK(page["text"] == text);
  CHECK_FALSE(page.contains("markdown"));
  const json& blocks = page["blocks"];
  REQUIRE(blocks.size() == 3);
  CHECK(blocks[0]["label"] == "");
  CHECK(blocks[0]["text"] == "Intro");
  CHECK(blocks[0]["bbox"].is_null());
  CHECK(blocks[1]["label"] == "title");
  CHECK(blocks[1]["text"] == "# Heading");
  // int(v / 999 * W): 999 -> W exactly, 499 / 999 * 1684 = 841.15...
  CHECK(blocks[1]["bbox"] == json::array({0, 0, 1191, 841}));
  CHECK(blocks[1]["bbox_norm"] == json::array({0, 0, 999, 499}));
  CHECK_FALSE(blocks[1].contains("boxes"));
  CHECK(blocks[2]["label"] == "text");
  CHECK(blocks[2]["bbox_norm"] == json::array({100, 500, 300, 999}));
  REQUIRE(blocks[2]["boxes"].size() == 2);
  CHECK(blocks[2]["boxes_norm"][1] == json::array({10, 20, 30, 40}));
  CHECK(blocks[2]["boxes"][1] == json::array({11, 33, 35, 67}));
}

TEST_CASE("page_json adds the official markdown rewrite on request", "[page_result]") {
  const std::string text =
      "<|ref|>image<|/ref|><|det|>[[0, 0, 999, 999]]<|/det|>\n"
      "<|ref|>text<|/ref|><|det|>[[1, 1, 2, 2]]<|/det|>\nA \\coloneqq B";
  json image = page_json(
      {.width = 100, .height = 50, .text = text, .finish_reason = "length", .markdown = true});
  // The image script does not collapse newlines (the PDF script does).
  CHECK(image["markdown"] == "![](images/0.jpg)\n\n\nA := B");
  REQUIRE(image["images"].size() == 1);
  CHECK(image["images"][0]["path"] == "images/0.jpg");
  CHECK(image["images"][0]["bbox"] == json::array({0, 0, 100, 50}));
  // A PDF page names its images after the 0-based page, as the official PDF script does.
  json pdf = page_json({.index = 0,
                        .page_number = 3,
                        .width = 100,
                        .height = 50,
                        .text = text,
                        .finish_reason = "stop",
                        .pdf_page = true,
                        .markdown = true});
  CHECK(pdf["images"][0]["path"] == "images/2_0.jpg");
  CHECK(pdf["markdown"] == "![](images/2_0.jpg)\n\nA := B");
}

TEST_CASE("page_json of a page without text has no blocks", "[page_result]") {
  json page = page_json({.width = 10, .height = 10, .text = " \n", .finish_reason = "stop"});
  CHECK(page["blocks"].empty());
}

}  // namespace
}  // namespace dsocr::server

// Grounding (issue #20, spec §11): tags found exactly as the official regex finds them, boxes
// scaled with the reference's float rule, malformed and partial tags left as text, and the
// official markdown rewrites of the image and PDF scripts, checked on the spec's example and on
// lines worked out by hand from the scripts' Python.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "server/grounding.h"

using namespace dsocr::server;

namespace {

using Pixels = std::array<int, 4>;

}  // namespace

TEST_CASE("grounding: the spec's example becomes a title block with its pixel box") {
  // Spec §11.1, from the transformers integration test, on a 1000x800 page:
  // int(330/999*1000)=330, int(198/999*800)=158, int(559/999*1000)=559, int(230/999*800)=184.
  const std::string text =
      "<|ref|>title<|/ref|><|det|>[[330, 198, 559, 230]]<|/det|>\n# Results\n\n"
      "<|ref|>text<|/ref|><|det|>[[100, 240, 900, 400]]<|/det|>\nThe model reads pages.\n";
  const std::vector<GroundingBlock> blocks = parse_grounding(text, 1000, 800);
  REQUIRE(blocks.size() == 2);
  CHECK(blocks[0].label == "title");
  CHECK(blocks[0].text == "# Results");
  REQUIRE(blocks[0].boxes.size() == 1);
  CHECK(blocks[0].boxes[0].norm == NormBox{330, 198, 559, 230});
  CHECK(blocks[0].boxes[0].pixels == Pixels{330, 158, 559, 184});
  CHECK(blocks[1].label == "text");
  CHECK(blocks[1].text == "The model reads pages.");
  CHECK(blocks[1].boxes[0].pixels == Pixels{100, 192, 900, 320});
}

TEST_CASE("grounding: pixels are int(v / 999 * size) in floating point, not exact arithmetic") {
  // 63 / 999 * 111 is 6.99999... in double; the exact 63 * 111 / 999 is 7.
  CHECK(grounding_to_pixels(63, 111) == 6);
  CHECK(grounding_to_pixels(558, 111) == 61);
  CHECK(grounding_to_pixels(0, 1224) == 0);
  CHECK(grounding_to_pixels(999, 1224) == 1224);  // the grid's last line is the page's edge
  CHECK(grounding_to_pixels(500, 1584) == 792);   // 792.79...
  CHECK(scale_grounding_box({0, 63, 999, 558}, 1224, 111).pixels == Pixels{0, 6, 1224, 61});
}

TEST_CASE("grounding: several boxes, text before the first tag, text without tags") {
  const auto blocks = parse_grounding(
      "Intro line\n<|ref|>table<|/ref|><|det|>[[0, 0, 499, 499],\n "
      "[500,500,999,999],]<|/det|>\n|a|b|",
      999, 999);
  REQUIRE(blocks.size() == 2);
  CHECK(blocks[0].label.empty());
  CHECK(blocks[0].boxes.empty());
  CHECK(blocks[0].text == "Intro line");
  CHECK(blocks[1].label == "table");
  REQUIRE(blocks[1].boxes.size() == 2);
  CHECK(blocks[1].boxes[1].pixels == Pixels{500, 500, 999, 999});
  CHECK(blocks[1].text == "|a|b|");

  const auto plain = parse_grounding("  just text\n", 10, 10);
  REQUIRE(plain.size() == 1);
  CHECK(plain[0].text == "just text");
  CHECK(parse_grounding(" \n ", 10, 10).empty());
  CHECK(parse_grounding("", 10, 10).empty());
}

TEST_CASE("grounding: tags are matched like the official non-greedy DOTALL regex") {
  // The label runs to the first "<|/ref|><|det|>", across a ref that is not followed by a det.
  const std::string text = "<|ref|>a<|/ref|> x <|ref|>b\nc<|/ref|><|det|>[[1,2,3,4]]<|/det|>tail";
  const auto tags = find_grounding_tags(text);
  REQUIRE(tags.size() == 1);
  CHECK(tags[0].begin == 0);
  CHECK(tags[0].label == "a<|/ref|> x <|ref|>b\nc");
  CHECK(tags[0].boxes == "[[1,2,3,4]]");
  CHECK(tags[0].whole == text.substr(0, text.size() - 4));

  // Box lists end at the first "<|/det|>"; tags do not overlap; a det without a ref is text.
  const auto two = find_grounding_tags(
      "<|det|>[[9,9,9,9]]<|/det|><|ref|>x<|/ref|><|det|>[[1,1,1,1]]<|/det|><|/det|>"
      "<|ref|>y<|/ref|><|det|><|/det|>");
  REQUIRE(two.size() == 2);
  CHECK(two[0].label == "x");
  CHECK(two[0].boxes == "[[1,1,1,1]]");
  CHECK(two[1].label == "y");
  CHECK(two[1].boxes.empty());
}

TEST_CASE("grounding: malformed and partial tags stay in the text, and nothing throws") {
  const std::vector<std::string> malformed_lists = {"[]",
                                                    "[[1,2,3]]",
                                                    "[[1,2,3,4,5]]",
                                                    "[[1000,0,0,0]]",
                                                    "[[-1,0,0,0]]",
                                                    "[[1.5,2,3,4]]",
                                                    "[[01,2,3,4]]",
                                                    "[[1,2,3,4]] x",
                                                    "[1,2,3,4]",
                                                    "[[1,2,3,4]",
                                                    "[[1,2,3,4]],",
                                                    "[[1_0,2,3,4]]",
                                                    "(1,2,3,4)",
                                                    "",
                                                    "[[a,b,c,d]]",
                                                    "[[1,,2,3,4]]",
                                                    "[[1,2,3,4]],,]"};
  for (const std::string& list : malformed_lists) {
    CAPTURE(list);
    CHECK_FALSE(parse_grounding_boxes(list).has_value());
    const std::string text = "before <|ref|>title<|/ref|><|det|>" + list + "<|/det|> after";
    const auto blocks = parse_grounding(text, 100, 100);
    REQUIRE(blocks.size() == 1);
    CHECK(blocks[0].label.empty());
    CHECK(blocks[0].text == text.substr(0, text.size()));
  }
  CHECK(parse_grounding_boxes(" [ [ 0 , 0 , 999 , 999 , ] , ] ").has_value());
  CHECK(parse_grounding_boxes("\n[[0,0,0,0]]\n").has_value());
  // eval() skips comments: the scripts would draw these.
  CHECK(parse_grounding_boxes("[[1,2,3,4]]# Title").has_value());
  CHECK(parse_grounding_boxes("[[1, # x\n 2,3,4]]").has_value());
  CHECK_FALSE(parse_grounding_boxes("[[1, # x 2,3,4]]").has_value());

  // A malformed tag between two good ones joins the text of the block before it.
  const auto blocks = parse_grounding(
      "<|ref|>a<|/ref|><|det|>[[1,1,2,2]]<|/det|>one <|ref|>b<|/ref|><|det|>[[1,2]]<|/det|> two"
      "<|ref|>c<|/ref|><|det|>[[3,3,4,4]]<|/det|>three",
      999, 999);
  REQUIRE(blocks.size() == 2);
  CHECK(blocks[0].text == "one <|ref|>b<|/ref|><|det|>[[1,2]]<|/det|> two");
  CHECK(blocks[1].label == "c");

  // Tags cut off by the end of generation are text.
  for (const std::string partial :
       {"<|ref|>title", "<|ref|>title<|/ref|>", "<|ref|>title<|/ref|><|det|>[[1, 2, 3",
        "<|ref|>title<|/ref|><|det|>[[1,2,3,4]]<|/det",
        "<|ref|>t<|/ref|>\n<|det|>[[1,2,3,4]]<|/det|>"}) {
    CAPTURE(partial);
    const auto parsed = parse_grounding(partial, 10, 10);
    REQUIRE(parsed.size() == 1);
    CHECK(parsed[0].text == partial);
    CHECK(rewrite_markdown(partial, 10, 10).markdown == partial);
  }
}

TEST_CASE("grounding: the image script's markdown rewrite") {
  // Worked from the script: images first (`![](images/{k}.jpg)\n`), then every other tag deleted,
  // each deletion followed by the \coloneqq and \eqqcolon substitutions.
  const std::string text =
      "<|ref|>title<|/ref|><|det|>[[330, 198, 559, 230]]<|/det|>\n# Results\n\n"
      "<|ref|>image<|/ref|><|det|>[[0, 0, 499, 499]]<|/det|>\n\n"
      "<|ref|>equation<|/ref|><|det|>[[1, 1, 2, 2]]<|/det|>\n\\[x \\coloneqq y \\eqqcolon z\\]\n"
      "<|ref|>image<|/ref|><|det|>[[500, 500, 999, 999]]<|/det|>";
  const MarkdownRewrite rewrite = rewrite_markdown(text, 1000, 800);
  CHECK(rewrite.markdown ==
        "\n# Results\n\n![](images/0.jpg)\n\n\n\n\\[x := y =: z\\]\n![](images/1.jpg)\n");
  REQUIRE(rewrite.images.size() == 2);
  CHECK(rewrite.images[0].path == "images/0.jpg");
  REQUIRE(rewrite.images[0].boxes.size() == 1);
  CHECK(rewrite.images[0].boxes[0].pixels == Pixels{0, 0, 499, 399});
  CHECK(rewrite.images[1].path == "images/1.jpg");
  CHECK(rewrite.images[1].boxes[0].pixels == Pixels{500, 400, 1000, 800});
}

TEST_CASE("grounding: the rewrite keeps the scripts' str.replace quirks") {
  // Substitutions only run after a non-image tag is deleted.
  CHECK(rewrite_markdown("<|ref|>image<|/ref|><|det|>[[1,1,2,2]]<|/det|>a \\coloneqq b", 10, 10)
            .markdown == "![](images/0.jpg)\na \\coloneqq b");
  // Identical image tags are all replaced at the first one's turn: both point at images/0.jpg,
  // and region 1 is referenced by nothing (the caller may skip cutting it out).
  const std::string tag = "<|ref|>image<|/ref|><|det|>[[1,1,2,2]]<|/det|>";
  const MarkdownRewrite duplicate = rewrite_markdown(tag + "x" + tag, 999, 999);
  CHECK(duplicate.markdown == "![](images/0.jpg)\nx![](images/0.jpg)\n");
  CHECK(duplicate.images.size() == 2);
  // An image tag with a malformed list is still replaced, with nothing to cut out.
  const MarkdownRewrite bad = rewrite_markdown("<|ref|>image<|/ref|><|det|>[[1,2]]<|/det|>", 9, 9);
  CHECK(bad.markdown == "![](images/0.jpg)\n");
  REQUIRE(bad.images.size() == 1);
  CHECK(bad.images[0].boxes.empty());
  // "image" anywhere in the tag's text as `<|ref|>image<|/ref|>` makes it an image tag.
  CHECK(rewrite_markdown("<|ref|>x<|/ref|><|ref|>image<|/ref|><|det|>[[1,1,2,2]]<|/det|>", 9, 9)
            .images.size() == 1);
  // Malformed non-image tags are deleted too (the regex removes them; only drawing fails).
  CHECK(rewrite_markdown("a<|ref|>text<|/ref|><|det|>oops<|/det|>b", 9, 9).markdown == "ab");
}

TEST_CASE("grounding: the PDF script's rewrite names images by page and collapses newlines") {
  const std::string text =
      "<|ref|>image<|/ref|><|det|>[[0, 0, 999, 999]]<|/det|>\n\n\n\n"
      "<|ref|>text<|/ref|><|det|>[[1, 1, 2, 2]]<|/det|>\n\n\nBody\n\n\n\n\nEnd";
  const MarkdownRewrite rewrite = rewrite_markdown(text, 1224, 1584, 3);
  // After the deletions: "![](images/3_0.jpg)" + 8 newlines + "Body" + 5 newlines + "End".
  // "\n\n\n\n" -> "\n\n" (left to right) leaves 4 and 3; "\n\n\n" -> "\n\n" then leaves 3
  // and 2: the collapse is one pass of each replace, not down to blank lines of two.
  CHECK(rewrite.markdown == "![](images/3_0.jpg)\n\n\nBody\n\nEnd");
  REQUIRE(rewrite.images.size() == 1);
  CHECK(rewrite.images[0].path == "images/3_0.jpg");
  CHECK(rewrite.images[0].boxes[0].pixels == Pixels{0, 0, 1224, 1584});
  // Without a non-image tag there is no collapse.
  CHECK(rewrite_markdown("a\n\n\n\nb", 9, 9, 0).markdown == "a\n\n\n\nb");
}

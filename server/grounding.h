// Grounding: the model's `<|ref|>LABEL<|/ref|><|det|>[[x1, y1, x2, y2], ...]<|/det|>` blocks
// (spec §11.1) turned into structured blocks with pixel boxes, and the official markdown rewrite
// (spec §11.2, §11.3) that removes them.
//
// * Tags are found exactly as the official regex finds them,
//   `(<\|ref\|>(.*?)<\|/ref\|><\|det\|>(.*?)<\|/det\|>)` with DOTALL and re.findall: from each
//   `<|ref|>`, the label runs to the first `<|/ref|><|det|>` and the box list to the first
//   `<|/det|>` after it. Anything else, partial or unclosed tags included, is text.
// * The box list is parsed as the Python list literal the reference evaluates, restricted to what
//   a box can be: a non-empty list of lists of four integers in 0..999 (spaces, newlines,
//   trailing commas and '#' comments allowed, as Python's eval allows them). A tag whose list is anything else is
//   malformed: parse_grounding() leaves it in the text, rewrite_markdown() removes it like the
//   official scripts do (their regex removes it; only their drawing fails on it).
// * Pixel boxes follow the reference to the bit: `int(v / 999 * W)` in double precision,
//   truncated toward zero, on the original page of W x H pixels (post-EXIF for images, the
//   144-dpi render for PDF pages).
// * The markdown rewrite is the scripts' sequence of Python str.replace calls, kept literally
//   (every occurrence of a tag's exact text is replaced at its turn; the `\coloneqq`/`\eqqcolon`
//   substitutions, and for PDF pages the newline collapse, run after each non-image removal,
//   so they only happen on text with at least one non-image tag).
//
// Known difference kept from the official scripts: the markdown names the k-th *image tag*
// images/{k}.jpg, while their cropping loop numbers *boxes* of tags labelled exactly "image";
// both agree whenever an image tag has one box (what the model writes). rewrite_markdown()
// returns the regions by the names the markdown uses; cutting them out is the caller's job.
//
// Nothing here throws on any input or allocates more than a small multiple of the text.
// Thread-safety: free functions on values, safe to call concurrently.
#pragma once

#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dsocr::server {

// One `<|ref|>..<|/ref|><|det|>..<|/det|>` occurrence as the official regex finds it.
struct GroundingTag {
  size_t begin = 0;  // byte offsets of the whole tag in the searched text
  size_t end = 0;
  std::string_view whole;  // group 1; the views point into the searched text
  std::string_view label;  // group 2
  std::string_view boxes;  // group 3, the unparsed list literal
};

// Every tag, in order, non-overlapping (re.findall).
std::vector<GroundingTag> find_grounding_tags(std::string_view text);

using NormBox = std::array<int, 4>;  // x1, y1, x2, y2 on the 0..999 grid

// The box list of a tag, or nullopt if it is not a non-empty list of four-integer lists in
// 0..999 (see the header comment).
std::optional<std::vector<NormBox>> parse_grounding_boxes(std::string_view list_literal);

struct GroundingBox {
  NormBox norm{};               // as the model wrote it, 0..999
  std::array<int, 4> pixels{};  // x1, y1, x2, y2 on the W x H page: int(v / 999 * W or H)
};

// `v / 999 * size` truncated toward zero, as Python's int(v / 999 * size).
int grounding_to_pixels(int v, int size);
GroundingBox scale_grounding_box(const NormBox& norm, int width, int height);

struct GroundingBlock {
  std::string label;  // "" for text before the first tag
  // The text after the tag up to the next well-formed tag (malformed tags included as text),
  // without the whitespace around it.
  std::string text;
  std::vector<GroundingBox> boxes;  // at least one, except for the leading text block
};

// The text split at its well-formed tags. A leading block with label "" and no boxes holds the
// text before the first tag, when there is any. A text without tags gives one such block (or
// none if it is blank). width and height must be positive.
std::vector<GroundingBlock> parse_grounding(std::string_view text, int width, int height);

struct GroundingImageRegion {
  std::string path;  // as the markdown references it: images/{k}.jpg or images/{page}_{k}.jpg
  std::vector<GroundingBox> boxes;  // empty when the tag's list is malformed (nothing to crop)
};

struct MarkdownRewrite {
  std::string markdown;
  std::vector<GroundingImageRegion> images;  // k = 0, 1, ... in tag order
};

// The official rewrite. Without pdf_page: the image script / HF save_results (§11.2), image tags
// become `![](images/{k}.jpg)\n`. With pdf_page: the PDF script (§11.3) for that page index as
// the caller numbers pages in file names, `![](images/{page}_{k}.jpg)\n`, plus its collapse of
// "\n\n\n\n" and "\n\n\n" to "\n\n". Image tags are those whose text contains
// `<|ref|>image<|/ref|>`, as in the scripts.
MarkdownRewrite rewrite_markdown(std::string_view text, int width, int height,
                                 std::optional<int> pdf_page = std::nullopt);

}  // namespace dsocr::server

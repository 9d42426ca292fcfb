// PageResult: one page of an OCR answer as a JSON object: the `pages` entries of a chat
// completion (docs/api.md) and of `dsocr ocr`'s NAME.blocks.json are both built here.
//
//   {"index": 0, "page_number": 1, "width": W, "height": H, "finish_reason": "stop",
//    "text": "<raw page text, tags included>",
//    "blocks": [{"label": "title", "text": "...", "bbox": [x1, y1, x2, y2],
//                "bbox_norm": [x1, y1, x2, y2]}, ...],
//    "markdown": "...", "images": [{"path": "images/0_0.jpg", "bbox": [...]}]}   (on request)
//
// * blocks: the text split at its grounding tags (server/grounding.h, spec §11.1); bbox is in
//   pixels of the page (the post-EXIF image, or the 144-dpi PDF render), bbox_norm as the model
//   wrote it on the 0..999 grid. Text before the first tag is a block with label "" and null
//   boxes. A tag with several boxes keeps the first in bbox/bbox_norm and all of them in
//   boxes/boxes_norm (absent for one box, which is what the model writes).
// * markdown (when asked): the official rewrite (spec §11.2 for an image, §11.3 for a PDF page,
//   whose image references are images/{page_number - 1}_{k}.jpg) and the regions it references.
//
// Thread-safety: a pure function.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

namespace dsocr::server {

struct PageResultInput {
  int index = 0;        // position of the page in the answer, from 0
  int page_number = 1;  // 1-based page of the document (1 for an image)
  int width = 0;        // pixels of the page the model saw, > 0
  int height = 0;
  std::string_view text;           // the page's raw text, grounding tags included
  std::string_view finish_reason;  // "stop" | "length"
  bool pdf_page = false;           // rewrite as the PDF script does
  bool markdown = false;           // add "markdown" and "images"
};

nlohmann::json page_json(const PageResultInput& page);

// The official separator after each page of a PDF (spec §11.3).
inline constexpr std::string_view kPageSplitMarker = "\n\n<--- Page Split --->\n";

}  // namespace dsocr::server

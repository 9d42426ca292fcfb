#include "server/page_result.h"

#include <nlohmann/json.hpp>

#include "server/grounding.h"

namespace dsocr::server {
namespace {

using json = nlohmann::json;

json array_of(const std::array<int, 4>& box) {
  return json::array({box[0], box[1], box[2], box[3]});
}

json block_json(const GroundingBlock& block) {
  json j = {{"label", block.label}, {"text", block.text}};
  if (block.boxes.empty()) {
    j["bbox"] = nullptr;
    j["bbox_norm"] = nullptr;
    return j;
  }
  j["bbox"] = array_of(block.boxes.front().pixels);
  j["bbox_norm"] = array_of(block.boxes.front().norm);
  if (block.boxes.size() > 1) {
    json boxes = json::array(), norms = json::array();
    for (const GroundingBox& b : block.boxes) {
      boxes.push_back(array_of(b.pixels));
      norms.push_back(array_of(b.norm));
    }
    j["boxes"] = std::move(boxes);
    j["boxes_norm"] = std::move(norms);
  }
  return j;
}

}  // namespace

json page_json(const PageResultInput& page) {
  json blocks = json::array();
  for (const GroundingBlock& block : parse_grounding(page.text, page.width, page.height)) {
    blocks.push_back(block_json(block));
  }
  json j = {
      {"index", page.index},        {"page_number", page.page_number},     {"width", page.width},
      {"height", page.height},      {"finish_reason", page.finish_reason}, {"text", page.text},
      {"blocks", std::move(blocks)}};
  if (page.markdown) {
    MarkdownRewrite rewrite =
        rewrite_markdown(page.text, page.width, page.height,
                         page.pdf_page ? std::optional<int>(page.page_number - 1) : std::nullopt);
    json images = json::array();
    for (const GroundingImageRegion& region : rewrite.images) {
      json r = {{"path", region.path}};
      r["bbox"] = region.boxes.empty() ? json(nullptr) : array_of(region.boxes.front().pixels);
      images.push_back(std::move(r));
    }
    j["markdown"] = std::move(rewrite.markdown);
    j["images"] = std::move(images);
  }
  return j;
}

}  // namespace dsocr::server

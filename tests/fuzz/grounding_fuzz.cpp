// libFuzzer target: the grounding parser and the markdown rewrites on arbitrary model output.
// The first two bytes pick the page size (1..65536 wide and high, the rest is the text). Beyond
// "no crash, no leak, no UB", checked: every box is on the 0..999 grid and its pixels on the page,
// every block but the leading one has a box, and the rewrite names one region per image tag.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "server/grounding.h"

using namespace dsocr::server;

namespace {

void check_box(const GroundingBox& box, int width, int height) {
  for (int i = 0; i < 4; ++i) {
    if (box.norm[i] < 0 || box.norm[i] > 999) std::abort();
    const int size = i % 2 == 0 ? width : height;
    if (box.pixels[i] < 0 || box.pixels[i] > size) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const int width = 1 + data[0] * 257;
  const int height = 1 + data[1] * 257;
  const std::string_view text(reinterpret_cast<const char*>(data) + 2, size - 2);

  const auto tags = find_grounding_tags(text);
  size_t previous_end = 0;
  for (const GroundingTag& tag : tags) {
    if (tag.begin < previous_end || tag.end > text.size() ||
        tag.whole != text.substr(tag.begin, tag.end - tag.begin)) {
      std::abort();
    }
    previous_end = tag.end;
  }

  const auto blocks = parse_grounding(text, width, height);
  size_t boxed = 0;
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (blocks[i].boxes.empty() && i != 0) std::abort();
    boxed += blocks[i].boxes.empty() ? 0 : 1;
    for (const GroundingBox& box : blocks[i].boxes) check_box(box, width, height);
  }
  if (boxed > tags.size()) std::abort();

  size_t image_tags = 0;
  for (const GroundingTag& tag : tags) {
    image_tags += tag.whole.find("<|ref|>image<|/ref|>") != std::string_view::npos ? 1 : 0;
  }
  for (const std::optional<int> page : {std::optional<int>(), std::optional<int>(7)}) {
    const MarkdownRewrite rewrite = rewrite_markdown(text, width, height, page);
    if (rewrite.images.size() != image_tags) std::abort();
    for (const GroundingImageRegion& region : rewrite.images) {
      for (const GroundingBox& box : region.boxes) check_box(box, width, height);
    }
  }
  return 0;
}

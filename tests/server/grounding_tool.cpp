// grounding_tool WIDTH HEIGHT [PDF_PAGE] < CASES: for tests/python/test_grounding_parity.py.
// CASES are model outputs separated by NUL bytes; for each, in order, writes the markdown rewrite,
// then a line per well-formed tag block ("label<TAB>x1 y1 x2 y2[ ...]" in pixels), each case's
// output ended by a NUL byte.
#include <cstdlib>
#include <iostream>
#include <iterator>
#include <optional>
#include <string>

#include "server/grounding.h"

int main(int argc, char** argv) {
  if (argc != 3 && argc != 4) {
    std::cerr << "usage: grounding_tool WIDTH HEIGHT [PDF_PAGE] < CASES\n";
    return 2;
  }
  const int width = std::atoi(argv[1]);
  const int height = std::atoi(argv[2]);
  const std::optional<int> page = argc == 4 ? std::optional(std::atoi(argv[3])) : std::nullopt;
  const std::string input((std::istreambuf_iterator<char>(std::cin)),
                          std::istreambuf_iterator<char>());
  size_t from = 0;
  while (from <= input.size()) {
    size_t end = input.find('\0', from);
    if (end == std::string::npos) end = input.size();
    const std::string_view text = std::string_view(input).substr(from, end - from);
    std::cout << dsocr::server::rewrite_markdown(text, width, height, page).markdown;
    for (const auto& block : dsocr::server::parse_grounding(text, width, height)) {
      if (block.boxes.empty()) continue;
      std::cout << "\n" << block.label << "\t";
      for (const auto& box : block.boxes) {
        for (int v : box.pixels) std::cout << v << " ";
      }
    }
    std::cout << '\0';
    from = end + 1;
  }
  return 0;
}

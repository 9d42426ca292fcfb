// pdf_render_tool IN.pdf OUT_DIR: renders every page of a PDF with vision::PdfDocument into
// OUT_DIR/page_N.ppm (binary PPM, N from 1) and prints one line per page, "N WIDTH HEIGHT", for
// tests/python/test_pdf_parity.py, which compares them with PyMuPDF's renders. Exit status 1 with
// the Status on stderr when the PDF or a page is refused.
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>

#include "vision/pdf_document.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: pdf_render_tool IN.pdf OUT_DIR\n";
    return 2;
  }
  std::ifstream in(argv[1], std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto document = dsocr::vision::PdfDocument::open(std::move(bytes));
  if (!document.ok()) {
    std::cerr << document.status() << "\n";
    return 1;
  }
  for (const dsocr::vision::PdfPageInfo& page : (*document)->pages()) {
    auto image = (*document)->render_page(page.number);
    if (!image.ok()) {
      std::cerr << image.status() << "\n";
      return 1;
    }
    std::ofstream out(std::string(argv[2]) + "/page_" + std::to_string(page.number) + ".ppm",
                      std::ios::binary);
    out << "P6\n" << image->width << " " << image->height << "\n255\n";
    out.write(reinterpret_cast<const char*>(image->pixels.data()),
              static_cast<std::streamsize>(image->pixels.size()));
    std::cout << page.number << " " << image->width << " " << image->height << "\n";
  }
  return 0;
}

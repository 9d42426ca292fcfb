// A small PDF writer for tests: pages of given sizes, /Rotate and content streams, with a correct
// cross-reference table (so poppler opens the files without reconstructing them).
#pragma once

#include <cstdio>
#include <string>
#include <vector>

namespace dsocr::testing {

// Objects are numbered from 1 in the order they are added; finish() writes the cross-reference
// table with the real offsets, so poppler opens the file without reconstructing it.
class PdfWriter {
 public:
  int add(std::string body) {
    objects_.push_back(std::move(body));
    return static_cast<int>(objects_.size());
  }
  int reserve() { return add(""); }
  void set(int number, std::string body) { objects_[number - 1] = std::move(body); }
  static std::string stream(const std::string& data, const std::string& dict_entries = "") {
    return "<< /Length " + std::to_string(data.size()) + " " + dict_entries + " >>\nstream\n" +
           data + "\nendstream";
  }
  std::string finish(int root, const std::string& trailer_entries = "") const {
    std::string out = "%PDF-1.4\n%\xe2\xe3\xcf\xd3\n";
    std::vector<size_t> offsets;
    for (size_t i = 0; i < objects_.size(); ++i) {
      offsets.push_back(out.size());
      out += std::to_string(i + 1) + " 0 obj\n" + objects_[i] + "\nendobj\n";
    }
    const size_t xref = out.size();
    out += "xref\n0 " + std::to_string(objects_.size() + 1) + "\n0000000000 65535 f \n";
    for (size_t offset : offsets) {
      char line[24];
      std::snprintf(line, sizeof line, "%010zu 00000 n \n", offset);
      out += line;
    }
    out += "trailer\n<< /Size " + std::to_string(objects_.size() + 1) + " /Root " +
           std::to_string(root) + " 0 R " + trailer_entries + " >>\nstartxref\n" +
           std::to_string(xref) + "\n%%EOF\n";
    return out;
  }

 private:
  std::vector<std::string> objects_;
};

struct TestPage {
  TestPage(double width, double height, int rotate = 0, std::string content = "",
           std::string resources = "")
      : width(width),
        height(height),
        rotate(rotate),
        content(std::move(content)),
        resources(std::move(resources)) {}
  double width, height;   // the media box, in points
  int rotate;             // /Rotate
  std::string content;    // the page's content stream
  std::string resources;  // the /Resources dictionary's entries
};

inline std::string number(double v) {
  std::string s = std::to_string(v);
  s.erase(s.find_last_not_of('0') + 1);
  if (s.back() == '.') s.pop_back();
  return s;
}

// `extra` may add objects (forms) before the pages are written.
inline std::string make_pdf(const std::vector<TestPage>& pages,
                            const std::string& trailer_entries = "", PdfWriter writer = {}) {
  const int catalog = writer.reserve();
  const int page_tree = writer.reserve();
  std::string kids;
  for (const TestPage& page : pages) {
    const int content = writer.add(PdfWriter::stream(page.content));
    kids += std::to_string(writer.add(
                "<< /Type /Page /Parent " + std::to_string(page_tree) + " 0 R /MediaBox [0 0 " +
                number(page.width) + " " + number(page.height) + "] /Rotate " +
                std::to_string(page.rotate) + " /Contents " + std::to_string(content) +
                " 0 R /Resources << " + page.resources + " >> >>")) +
            " 0 R ";
  }
  writer.set(catalog, "<< /Type /Catalog /Pages " + std::to_string(page_tree) + " 0 R >>");
  writer.set(page_tree,
             "<< /Type /Pages /Kids [" + kids + "] /Count " + std::to_string(pages.size()) + " >>");
  return writer.finish(catalog, trailer_entries);
}

}  // namespace dsocr::testing

// The files `dsocr ocr` writes for one input document, and how a rerun finds the pages it can
// skip. For an input NAME.pdf (or NAME.png, ...) and --out DIR:
//
//   DIR/NAME/page_0001.md          the page's markdown (the official rewrite, spec §11.2/11.3)
//   DIR/NAME/page_0001.json        its page object (server/page_result.h); written last
//   DIR/NAME/page_0001_boxes.png   the page with its grounding boxes drawn
//   DIR/NAME/images/0_0.jpg ...    the regions the markdown references (images/0.jpg for an image)
//   DIR/NAME.md                    every page's markdown, in order (PDF: each followed by the
//                                  official page-split marker); image links point into NAME/
//   DIR/NAME.blocks.json           the page objects, in order
//
// * Page files are named by the page's number in the document (1-based, at least four digits), so
//   runs with different --pages ranges share them.
// * Every file is written to a temporary name next to it and renamed into place, and a page's
//   .json is its last file: a page whose .json and .md both exist was finished by some run. A run
//   killed at any point leaves finished pages and, at worst, the temporary file of the one write
//   it was doing, which the rerun overwrites (temporary names are fixed per target).
//
// Thread-safety: free functions; concurrent calls must write different paths.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "vision/pdf_document.h"

namespace dsocr::cli {

// "page_0001" for page 1, "page_12345" past 9999.
std::string page_stem(int page_number);

// Where one document's files go.
struct DocumentPaths {
  DocumentPaths(const std::filesystem::path& out_dir, std::string name);

  std::string name;                  // the input file's stem
  std::filesystem::path dir;         // DIR/NAME
  std::filesystem::path images_dir;  // DIR/NAME/images
  std::filesystem::path markdown;    // DIR/NAME.md
  std::filesystem::path blocks;      // DIR/NAME.blocks.json

  std::filesystem::path page_markdown(int page_number) const;
  std::filesystem::path page_json(int page_number) const;
  std::filesystem::path page_boxes(int page_number) const;
};

// True when a previous run finished the page: its .json and .md exist and the .json is a page
// object of that page number (a file of another document or a damaged one does not count).
bool page_done(const DocumentPaths& paths, int page_number);

// Writes `bytes` to `path` through `path`'s temporary sibling and a rename, creating the parent
// directory if needed.
Status write_file_atomically(const std::filesystem::path& path, std::string_view bytes);

// The document's markdown from its pages' markdown, in order: each page followed by the official
// page-split marker for a PDF, the single page as is for an image. Image links the rewrite wrote
// (`![](images/...)`, relative to DIR/NAME/) are rewritten to point from DIR/ into DIR/NAME/
// (`![](NAME/images/...)`, NAME percent-encoded where a link needs it).
std::string document_markdown(const std::vector<std::string>& page_markdown, bool pdf,
                              std::string_view name);

// "N", "N-M" or "N-" (1-based, inclusive) -> a page range; kInvalidArgument naming --pages.
StatusOr<vision::PdfPageRange> parse_page_range(std::string_view text);

}  // namespace dsocr::cli

// Document: a PDF given to the engine for OCR, one request per page. The server (or the CLI)
// opens it once, reads its pages' sizes, and submits each page as a GenerateRequest image
// (ImageSource::pdf_page); a preparation worker renders the page when that request's turn comes,
// so a long document holds its bytes once and the pixels of only the pages being prepared.
//
// Pages render as the official PDF script renders them (spec §11.3, vision/pdf_document.h):
// 144 dpi, /Rotate applied, crop box, opaque white. Every limit is checked at open() except the
// render time, which is checked when a page renders (its request then fails with
// FailureReason::kInvalidInput).
//
// Thread-safety: immutable after open() (renders of one document are serialised inside);
// shared by the requests of its pages through shared_ptr.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace dsocr::vision {
struct RgbImage;
}  // namespace dsocr::vision

namespace dsocr::engine {

struct DocumentLimits {
  int64_t max_bytes = 32ll << 20;
  int max_pages = 200;                               // pages selected, not pages in the file
  int64_t max_page_pixels = 40'000'000;              // of one page rendered at 144 dpi
  std::chrono::milliseconds render_timeout{20'000};  // per page
};

// 1-based, inclusive; last == 0: to the last page.
struct PageRange {
  int first = 1;
  int last = 0;
};

struct DocumentPage {
  int number = 0;  // 1-based page of the file
  int width = 0;   // pixels of the 144-dpi render
  int height = 0;
};

class Document {
 public:
  // Errors (a server answers each with a 4xx): kPayloadTooLarge (bytes, pages or a page's pixels
  // over the limits), kInvalidArgument (not a PDF, damaged, no pages, encrypted with a password,
  // a malformed range), kOutOfRange (the range goes past the last page).
  static StatusOr<std::shared_ptr<const Document>> open_pdf(std::string bytes,
                                                            const DocumentLimits& limits,
                                                            PageRange range = {});
  ~Document();

  const std::vector<DocumentPage>& pages() const;   // selected, in order
  const DocumentPage* page(int page_number) const;  // one of pages(), or null

  // The page rendered at 144 dpi (for the engine's preparation workers).
  StatusOr<vision::RgbImage> render(int page_number) const;

 private:
  struct Impl;
  explicit Document(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Whether bytes are a PDF: they start with "%PDF-", or have it in their first 1024 bytes (where
// PDF readers look for it) without starting like an image format.
bool looks_like_pdf(std::string_view bytes);

// One image of a GenerateRequest: encoded bytes (JPEG, PNG, WebP, ...; decoded with EXIF
// orientation) or one page of a Document.
struct ImageSource {
  ImageSource() = default;
  ImageSource(std::string encoded_bytes) : encoded(std::move(encoded_bytes)) {}  // NOLINT: implicit
  static ImageSource pdf_page(std::shared_ptr<const Document> document, int page_number);

  std::string encoded;
  std::shared_ptr<const Document> document;  // with page_number, instead of encoded bytes
  int page_number = 0;
};

}  // namespace dsocr::engine

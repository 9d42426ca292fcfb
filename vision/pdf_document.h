// PdfDocument: a PDF opened from bytes with poppler-cpp, its pages rendered into the RgbImage the
// preprocessing takes, the way the official PDF script renders them (spec §11.3): 144 dpi
// (PyMuPDF's Matrix(2.0, 2.0)), the page's /Rotate applied, its crop box, no alpha (opaque white
// paper), anti-aliased paths, images and text as MuPDF draws them by default.
//
// * The rendered size is PyMuPDF's: the crop box in points (after /Rotate) times 2, rounded out
//   the way MuPDF rounds a pixmap's rectangle (fz_round_rect: floor(x0 + 0.001), ceil(x1 - 0.001),
//   in float). Poppler is asked for exactly that slice, so both agree on the size to the pixel.
// * Every limit is checked before pixels are allocated and reported as a Status a server can
//   answer with a 4xx: kPayloadTooLarge for bytes, pages and pixels over the limits (like the
//   image decoder's limits), kOutOfRange for a page range outside the document, kInvalidArgument
//   for corrupt data, documents without pages, encrypted documents that need a password, and a
//   page that does not render within the time limit.
// * Render time: poppler-cpp cannot abort a render, so a page renders on its own thread and the
//   caller stops waiting at the limit; the abandoned render runs to its end in the background,
//   holding its own reference to the document and the bytes. At most
//   PdfLimits::max_abandoned_renders of them may run process-wide: past that, render_page()
//   refuses with kResourceExhausted (429) until they finish, so a stream of hostile PDFs cannot
//   take every core. abandoned_pdf_renders() reports how many run now; a process should let it
//   reach 0 (or _exit) before returning from main(), since such a render still uses poppler's
//   global state, which is destroyed at exit.
//
// Thread-safety: open() and distinct documents are safe to use concurrently. One document's
// render_page() calls take turns (poppler does not promise concurrent renders of one document);
// each page's time limit starts with its turn. Render pages in parallel by opening the bytes once
// per worker.
// Poppler's own error messages (it prints them for every damaged file) are silenced
// process-wide on first use.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "vision/image.h"

namespace dsocr::vision {

struct PdfLimits {
  int64_t max_bytes = 64ll << 20;  // 64 MiB
  int max_pages = 200;             // pages selected (after the page range), not in the file
  // Pixels of one rendered page. At 144 dpi an A4 page is 1191x1684 (2 Mpx) and an A0 poster
  // 6743x9536 (64 Mpx); 40 Mpx matches the image decoder's limit.
  int64_t max_page_pixels = 40'000'000;
  std::chrono::milliseconds render_timeout{20'000};  // per page
  int max_abandoned_renders = 4;                     // process-wide, see the header comment
};

// 1-based, inclusive; last == 0 means "to the last page".
struct PdfPageRange {
  int first = 1;
  int last = 0;
};

struct PdfPageInfo {
  int number = 0;           // 1-based
  double width_points = 0;  // crop box after /Rotate, in PDF points (1/72 in)
  double height_points = 0;
  int rotation = 0;      // the page's /Rotate: 0, 90, 180 or 270
  int render_width = 0;  // pixels at 144 dpi, as PyMuPDF sizes the pixmap
  int render_height = 0;
};

inline constexpr double kPdfRenderDpi = 144.0;

// The pixel size of a page edge of `points` at 144 dpi, rounded as MuPDF rounds a pixmap's edge.
int pdf_render_pixels(double points);

class PdfDocument {
 public:
  // Opens `bytes` (taken over: poppler reads them in place) and selects the pages of `range`.
  // Errors, all checked here before anything is rendered: kPayloadTooLarge (bytes over
  // max_bytes, more than max_pages selected, a selected page over max_page_pixels),
  // kInvalidArgument (not a PDF, damaged beyond repair, no pages, a password needed, a range with
  // first < 1 or last < first), kOutOfRange (range.first or range.last past the last page).
  static StatusOr<std::unique_ptr<PdfDocument>> open(std::string bytes,
                                                     const PdfLimits& limits = {},
                                                     PdfPageRange range = {});

  ~PdfDocument();
  PdfDocument(const PdfDocument&) = delete;
  PdfDocument& operator=(const PdfDocument&) = delete;

  int page_count() const;  // pages in the file
  // The selected pages, in document order (range.first .. range.last).
  const std::vector<PdfPageInfo>& pages() const;

  // Renders page `number` (1-based; one of pages()) at 144 dpi into RGB. Errors:
  // kOutOfRange (not a selected page), kInvalidArgument (over the render time limit, or poppler
  // failed to render it), kResourceExhausted (too many abandoned renders in the process).
  StatusOr<RgbImage> render_page(int number) const;

 private:
  struct State;
  PdfDocument(std::shared_ptr<State> state, PdfLimits limits, std::vector<PdfPageInfo> pages);

  std::shared_ptr<State> state_;  // shared with renders still running past their time limit
  PdfLimits limits_;
  std::vector<PdfPageInfo> pages_;
};

// Renders still running after their caller gave up on them, in the whole process.
int abandoned_pdf_renders();

}  // namespace dsocr::vision

#include "engine/document.h"

#include "vision/pdf_document.h"

namespace dsocr::engine {

struct Document::Impl {
  std::unique_ptr<vision::PdfDocument> pdf;
  std::vector<DocumentPage> pages;
};

Document::Document(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Document::~Document() = default;

StatusOr<std::shared_ptr<const Document>> Document::open_pdf(std::string bytes,
                                                             const DocumentLimits& limits,
                                                             PageRange range) {
  vision::PdfLimits pdf_limits;
  pdf_limits.max_bytes = limits.max_bytes;
  pdf_limits.max_pages = limits.max_pages;
  pdf_limits.max_page_pixels = limits.max_page_pixels;
  pdf_limits.render_timeout = limits.render_timeout;
  DSOCR_ASSIGN_OR_RETURN(
      auto pdf, vision::PdfDocument::open(std::move(bytes), pdf_limits, {range.first, range.last}));
  auto impl = std::make_unique<Impl>();
  for (const vision::PdfPageInfo& page : pdf->pages()) {
    impl->pages.push_back({page.number, page.render_width, page.render_height});
  }
  impl->pdf = std::move(pdf);
  return std::shared_ptr<const Document>(new Document(std::move(impl)));
}

const std::vector<DocumentPage>& Document::pages() const { return impl_->pages; }

const DocumentPage* Document::page(int page_number) const {
  for (const DocumentPage& p : impl_->pages)
    if (p.number == page_number) return &p;
  return nullptr;
}

StatusOr<vision::RgbImage> Document::render(int page_number) const {
  return impl_->pdf->render_page(page_number);
}

bool looks_like_pdf(std::string_view bytes) {
  if (bytes.starts_with("%PDF-")) return true;
  // An image may carry the text in its metadata (a PNG comment "converted from %PDF-1.7"): the
  // image formats' own signatures win.
  using namespace std::string_view_literals;  // the signatures hold NUL bytes
  constexpr std::string_view kImageSignatures[] = {
      "\xFF\xD8\xFF"sv, "\x89PNG"sv, "GIF8"sv, "RIFF"sv, "BM"sv, "II*\0"sv, "MM\0*"sv};
  for (std::string_view signature : kImageSignatures)
    if (bytes.starts_with(signature)) return false;
  return bytes.substr(0, 1024).find("%PDF-") != std::string_view::npos;
}

ImageSource ImageSource::pdf_page(std::shared_ptr<const Document> document, int page_number) {
  ImageSource source;
  source.document = std::move(document);
  source.page_number = page_number;
  return source;
}

}  // namespace dsocr::engine

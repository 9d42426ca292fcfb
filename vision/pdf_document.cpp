#include "vision/pdf_document.h"

#include <poppler-document.h>
#include <poppler-global.h>
#include <poppler-image.h>
#include <poppler-page-renderer.h>
#include <poppler-page.h>

#include <atomic>
#include <climits>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>
#include <utility>

namespace dsocr::vision {
namespace {

std::atomic<int> g_abandoned_renders{0};

void ignore_poppler_message(const std::string& /*message*/, void* /*closure*/) {}

void silence_poppler_once() {
  static std::once_flag once;
  std::call_once(once, [] { poppler::set_debug_error_function(ignore_poppler_message, nullptr); });
}

// One render_page() call, shared by the caller and the thread that renders: whichever of them
// outlives the other finishes the bookkeeping.
struct RenderJob {
  std::mutex mutex;
  std::condition_variable done_cv;
  bool done = false;
  bool abandoned = false;  // the caller stopped waiting; the thread decrements the count
  std::optional<StatusOr<RgbImage>> result;
};

}  // namespace

// The bytes outlive the poppler document, which reads them in place (members are destroyed in
// reverse order).
struct PdfDocument::State {
  std::string bytes;
  std::unique_ptr<poppler::document> document;
  std::mutex render_mutex;  // poppler does not promise concurrent renders of one document
  // Callers of render_page() take turns: a page's time limit runs from its turn, not from when
  // it began to wait behind the document's other pages (16 pages of one PDF in flight would
  // otherwise time out on each other's renders).
  std::mutex turn_mutex;
  std::atomic<int> abandoned_renders{0};
};

int pdf_render_pixels(double points) {
  // MuPDF works in float: the rectangle is scaled by the matrix, then rounded out with a 0.001
  // tolerance (fz_round_rect), the page's origin being 0.
  const double scaled = static_cast<double>(static_cast<float>(points) * 2.0f);
  if (!(scaled < 1e9)) return INT_MAX;  // also NaN; refused by the pixel limit
  const float edge = std::ceil(static_cast<float>(scaled) - 0.001f);
  return edge < 0 ? 0 : static_cast<int>(edge);
}

PdfDocument::PdfDocument(std::shared_ptr<State> state, PdfLimits limits,
                         std::vector<PdfPageInfo> pages)
    : state_(std::move(state)), limits_(limits), pages_(std::move(pages)) {}

PdfDocument::~PdfDocument() = default;

int PdfDocument::page_count() const { return state_->document->pages(); }

const std::vector<PdfPageInfo>& PdfDocument::pages() const { return pages_; }

StatusOr<std::unique_ptr<PdfDocument>> PdfDocument::open(std::string bytes, const PdfLimits& limits,
                                                         PdfPageRange range) {
  silence_poppler_once();
  if (static_cast<int64_t>(bytes.size()) > limits.max_bytes || bytes.size() > INT_MAX) {
    return payload_too_large("PDF is " + std::to_string(bytes.size()) +
                             " bytes, over the limit of " + std::to_string(limits.max_bytes));
  }
  if (range.first < 1 || range.last < 0 || (range.last != 0 && range.last < range.first)) {
    return invalid_argument("PDF page range " + std::to_string(range.first) + "-" +
                            std::to_string(range.last) +
                            " is invalid (pages count from 1, and the last must not precede the "
                            "first)");
  }
  auto state = std::make_shared<State>();
  state->bytes = std::move(bytes);
  state->document.reset(poppler::document::load_from_raw_data(
      state->bytes.data(), static_cast<int>(state->bytes.size())));
  if (!state->document) return invalid_argument("PDF is damaged or not a PDF");
  if (state->document->is_locked()) {
    return invalid_argument("PDF is encrypted and needs a password to open; send it decrypted");
  }
  const int page_count = state->document->pages();
  if (page_count <= 0) return invalid_argument("PDF has no pages");

  const int last = range.last == 0 ? page_count : range.last;
  if (range.first > page_count || last > page_count) {
    return out_of_range("PDF page range " + std::to_string(range.first) + "-" +
                        std::to_string(last) + " is past the last page (" +
                        std::to_string(page_count) + ")");
  }
  const int selected = last - range.first + 1;
  if (selected > limits.max_pages) {
    return payload_too_large("PDF has " + std::to_string(selected) +
                             " pages to read, over the limit of " +
                             std::to_string(limits.max_pages) + "; select fewer with a page range");
  }

  std::vector<PdfPageInfo> pages;
  pages.reserve(selected);
  for (int number = range.first; number <= last; ++number) {
    std::unique_ptr<poppler::page> page(state->document->create_page(number - 1));
    if (!page) return invalid_argument("PDF page " + std::to_string(number) + " is damaged");
    PdfPageInfo info;
    info.number = number;
    const poppler::rectf box = page->page_rect(poppler::crop_box);
    switch (page->orientation()) {
      case poppler::page::landscape:
        info.rotation = 90;
        break;
      case poppler::page::upside_down:
        info.rotation = 180;
        break;
      case poppler::page::seascape:
        info.rotation = 270;
        break;
      default:
        info.rotation = 0;
        break;
    }
    const bool sideways = info.rotation == 90 || info.rotation == 270;
    info.width_points = sideways ? box.height() : box.width();
    info.height_points = sideways ? box.width() : box.height();
    info.render_width = pdf_render_pixels(info.width_points);
    info.render_height = pdf_render_pixels(info.height_points);
    if (info.render_width < 1 || info.render_height < 1) {
      return invalid_argument("PDF page " + std::to_string(number) + " has an empty page box");
    }
    const int64_t pixels = static_cast<int64_t>(info.render_width) * info.render_height;
    if (pixels > limits.max_page_pixels) {
      return payload_too_large("PDF page " + std::to_string(number) + " renders to " +
                               std::to_string(info.render_width) + "x" +
                               std::to_string(info.render_height) +
                               " pixels at 144 dpi, over the "
                               "limit of " +
                               std::to_string(limits.max_page_pixels) + " pixels");
    }
    pages.push_back(info);
  }
  return std::unique_ptr<PdfDocument>(new PdfDocument(std::move(state), limits, std::move(pages)));
}

namespace {

StatusOr<RgbImage> render_locked(poppler::document& document, const PdfPageInfo& info) {
  std::unique_ptr<poppler::page> page(document.create_page(info.number - 1));
  if (!page) return invalid_argument("PDF page " + std::to_string(info.number) + " is damaged");
  poppler::page_renderer renderer;
  // MuPDF anti-aliases paths, images and glyphs and does not hint glyphs.
  renderer.set_render_hints(poppler::page_renderer::antialiasing |
                            poppler::page_renderer::text_antialiasing);
  renderer.set_image_format(poppler::image::format_rgb24);
  renderer.set_paper_color(0xffffffffu);  // opaque white: PyMuPDF's alpha=False
  const poppler::image rendered = renderer.render_page(page.get(), kPdfRenderDpi, kPdfRenderDpi, 0,
                                                       0, info.render_width, info.render_height);
  if (!rendered.is_valid() || rendered.format() != poppler::image::format_rgb24 ||
      rendered.width() != info.render_width || rendered.height() != info.render_height) {
    return invalid_argument("PDF page " + std::to_string(info.number) + " could not be rendered");
  }
  RgbImage image(info.render_width, info.render_height);
  for (int y = 0; y < image.height; ++y) {
    std::memcpy(image.row(y),
                rendered.const_data() + static_cast<size_t>(y) * rendered.bytes_per_row(),
                image.row_bytes());
  }
  return image;
}

}  // namespace

StatusOr<RgbImage> PdfDocument::render_page(int number) const {
  const PdfPageInfo* info = nullptr;
  for (const PdfPageInfo& page : pages_) {
    if (page.number == number) info = &page;
  }
  if (info == nullptr) {
    return out_of_range("PDF page " + std::to_string(number) + " is not one of the selected pages");
  }
  std::unique_lock turn(state_->turn_mutex);
  if (state_->abandoned_renders.load() > 0) {
    return invalid_argument("PDF page " + std::to_string(number) +
                            " not rendered: an earlier page of this PDF is still rendering past "
                            "its time limit");
  }
  if (g_abandoned_renders.load() >= limits_.max_abandoned_renders) {
    return resource_exhausted(
        "too many PDF pages are still rendering past their time limit; "
        "retry later");
  }

  auto job = std::make_shared<RenderJob>();
  try {
    std::thread([job, state = state_, page = *info]() mutable {
      StatusOr<RgbImage> result = [&]() -> StatusOr<RgbImage> {
        std::lock_guard render_lock(state->render_mutex);
        return render_locked(*state->document, page);
      }();
      std::lock_guard lock(job->mutex);
      job->result.emplace(std::move(result));
      job->done = true;
      if (job->abandoned) state->abandoned_renders.fetch_sub(1);
      // The document is released before the caller can see the result (or, when abandoned,
      // before the process-wide count says this render is over): a detached thread must not be
      // the one that destroys it after main() returns, when poppler's globals may be gone.
      state.reset();
      if (job->abandoned) g_abandoned_renders.fetch_sub(1);
      job->done_cv.notify_all();
    }).detach();
  } catch (const std::system_error& e) {
    return resource_exhausted(std::string("cannot start a PDF render thread: ") + e.what());
  }

  std::unique_lock lock(job->mutex);
  if (!job->done_cv.wait_for(lock, limits_.render_timeout, [&] { return job->done; })) {
    job->abandoned = true;
    state_->abandoned_renders.fetch_add(1);
    g_abandoned_renders.fetch_add(1);
    return invalid_argument("PDF page " + std::to_string(number) + " did not render within " +
                            std::to_string(limits_.render_timeout.count()) +
                            " ms; the page is too complex");
  }
  return std::move(*job->result);
}

int abandoned_pdf_renders() { return g_abandoned_renders.load(); }

}  // namespace dsocr::vision

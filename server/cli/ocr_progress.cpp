#include "server/cli/ocr_progress.h"

#include <cmath>

namespace dsocr::cli {
namespace {

std::string printf_string(const char* format, double a) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, a);
  return buf;
}

}  // namespace

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  if (seconds < 59.95) return printf_string("%.1f s", seconds);
  const long long s = std::llround(seconds);
  char buf[64];
  if (s < 3600) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, (s % 3600) / 60);
  }
  return buf;
}

double pages_per_second(const ProgressCounts& counts) {
  const int worked = counts.ok + counts.failed;
  if (worked == 0 || counts.elapsed_s <= 0) return 0;
  return worked / counts.elapsed_s;
}

double eta_seconds(const ProgressCounts& counts) {
  const double rate = pages_per_second(counts);
  if (rate <= 0) return -1;
  const int left = counts.total - counts.finished();
  return left <= 0 ? 0 : left / rate;
}

std::string format_progress_bar(const ProgressCounts& counts, int width) {
  char buf[160];
  std::snprintf(buf, sizeof buf, " %d/%d pages  %.2f pages/s  ETA %s", counts.finished(),
                counts.total, pages_per_second(counts),
                eta_seconds(counts) < 0 ? "?" : format_duration(eta_seconds(counts)).c_str());
  std::string tail = buf;
  if (counts.skipped || counts.failed) {
    std::snprintf(buf, sizeof buf, "  (%d skipped, %d failed)", counts.skipped, counts.failed);
    tail += buf;
  }
  const int bar = width - static_cast<int>(tail.size()) - 2;
  if (bar < 10) return tail.substr(1, std::max(0, width));
  const int filled =
      counts.total > 0
          ? static_cast<int>(static_cast<int64_t>(bar) * counts.finished() / counts.total)
          : bar;
  return "[" + std::string(filled, '#') + std::string(bar - filled, '-') + "]" + tail;
}

std::string format_summary(const ProgressCounts& counts) {
  char buf[200];
  std::snprintf(buf, sizeof buf, "%d pages: %d ok, %d failed, %d skipped in %s (%.2f pages/s)",
                counts.total, counts.ok, counts.failed, counts.skipped,
                format_duration(counts.elapsed_s).c_str(), pages_per_second(counts));
  return buf;
}

ProgressReporter::ProgressReporter(std::FILE* out, bool terminal, int total_pages, bool quiet)
    : out_(out), terminal_(terminal), quiet_(quiet), start_(std::chrono::steady_clock::now()) {
  counts_.total = total_pages;
}

void ProgressReporter::add_total(int pages) {
  std::lock_guard lock(mu_);
  counts_.total += pages;
}

void ProgressReporter::skipped(int pages) {
  std::lock_guard lock(mu_);
  counts_.skipped += pages;
  redraw_locked();
}

void ProgressReporter::page_ok(std::string_view document, int page_number, int document_pages,
                               double seconds) {
  std::lock_guard lock(mu_);
  ++counts_.ok;
  if (!terminal_ && !quiet_) {
    std::fprintf(out_, "page %d/%d of %.*s done in %s\n", page_number, document_pages,
                 static_cast<int>(document.size()), document.data(),
                 format_duration(seconds).c_str());
  }
  redraw_locked();
}

void ProgressReporter::page_failed(std::string_view document, int page_number, int document_pages,
                                   std::string_view error) {
  std::lock_guard lock(mu_);
  ++counts_.failed;
  clear_bar_locked();
  std::fprintf(out_, "page %d/%d of %.*s failed: %.*s\n", page_number, document_pages,
               static_cast<int>(document.size()), document.data(), static_cast<int>(error.size()),
               error.data());
  redraw_locked();
}

void ProgressReporter::document_failed(std::string_view document, std::string_view error) {
  std::lock_guard lock(mu_);
  ++counts_.failed;
  ++counts_.total;
  clear_bar_locked();
  std::fprintf(out_, "%.*s failed: %.*s\n", static_cast<int>(document.size()), document.data(),
               static_cast<int>(error.size()), error.data());
  redraw_locked();
}

void ProgressReporter::start() {
  std::lock_guard lock(mu_);
  start_ = std::chrono::steady_clock::now();
}

void ProgressReporter::note(std::string_view line) {
  std::lock_guard lock(mu_);
  if (quiet_) return;
  clear_bar_locked();
  std::fprintf(out_, "%.*s\n", static_cast<int>(line.size()), line.data());
  redraw_locked();
}

void ProgressReporter::finish() {
  std::lock_guard lock(mu_);
  counts_.elapsed_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  clear_bar_locked();
  std::fprintf(out_, "%s\n", format_summary(counts_).c_str());
  std::fflush(out_);
}

ProgressCounts ProgressReporter::counts() const {
  std::lock_guard lock(mu_);
  return counts_;
}

void ProgressReporter::redraw_locked() {
  counts_.elapsed_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (!terminal_ || quiet_) {
    std::fflush(out_);
    return;
  }
  // \r and erase-to-end-of-line: the new line may be shorter than the last one.
  std::fprintf(out_, "\r%s\x1b[K", format_progress_bar(counts_, 79).c_str());
  std::fflush(out_);
  bar_shown_ = true;
}

void ProgressReporter::clear_bar_locked() {
  if (!bar_shown_) return;
  std::fputs("\r\x1b[K", out_);
  bar_shown_ = false;
}

}  // namespace dsocr::cli

// Progress of `dsocr ocr` on stderr. On a terminal: one line redrawn in place,
//   [##########----------]  12/40 pages  0.52 pages/s  ETA 54s  (3 skipped, 1 failed)
// otherwise one plain line per page ("page 3/12 of report.pdf done in 4.1 s"), so logs stay
// readable. Failures are always printed on their own line, with the page number and the error.
//
// Rate and ETA count only pages recognised in this run (skipped pages took no time), over the
// time since start() (called when the pages start, after the model has loaded); no ETA until one
// page has finished. The summary's time is that time too.
//
// Thread-safety: ProgressReporter's methods may be called from any thread (one mutex); the
// format_* functions are pure.
#pragma once

#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>
#include <string_view>

namespace dsocr::cli {

struct ProgressCounts {
  int total = 0;  // pages of every input
  int ok = 0;     // recognised in this run
  int failed = 0;
  int skipped = 0;  // finished by an earlier run
  double elapsed_s = 0;

  int finished() const { return ok + failed + skipped; }
};

// "0.4 s", "12.0 s", "2m05s", "1h02m"; "?" for a negative or non-finite value.
std::string format_duration(double seconds);
// Pages per second over the pages this run recognised (or failed), 0 before any.
double pages_per_second(const ProgressCounts& counts);
// Seconds left at that rate, or a negative value when unknown.
double eta_seconds(const ProgressCounts& counts);
// The terminal line (without the carriage return), at most `width` columns.
std::string format_progress_bar(const ProgressCounts& counts, int width);
// The end-of-run summary line.
std::string format_summary(const ProgressCounts& counts);

class ProgressReporter {
 public:
  // `terminal`: redraw one line in place (the caller checks isatty).
  ProgressReporter(std::FILE* out, bool terminal, int total_pages, bool quiet);

  // Pages found (documents are opened after the reporter exists, to report those that fail).

  void add_total(int pages);
  // A page finished earlier (counted, not printed one by one).
  void skipped(int pages);
  void page_ok(std::string_view document, int page_number, int document_pages, double seconds);
  void page_failed(std::string_view document, int page_number, int document_pages,
                   std::string_view error);
  // A document that failed before its pages were known (unreadable, corrupt): one failure.
  void document_failed(std::string_view document, std::string_view error);
  // The pages start now (the clock of the rate, the ETA and the summary).
  void start();
  // A line of its own (the bar, if shown, is cleared first and redrawn after); nothing when quiet.
  void note(std::string_view line);
  // Clears the bar and prints the summary.
  void finish();
  ProgressCounts counts() const;

 private:
  void redraw_locked();
  void clear_bar_locked();

  std::FILE* out_;
  const bool terminal_;
  const bool quiet_;
  mutable std::mutex mu_;
  std::chrono::steady_clock::time_point start_;  // guarded by mu_
  ProgressCounts counts_;                        // guarded by mu_
  bool bar_shown_ = false;                       // guarded by mu_
};

}  // namespace dsocr::cli

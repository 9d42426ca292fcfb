// dsocr ocr: documents (PDFs, images) to markdown, boxes and page files, in-process or through a
// running server (issue #20). The files are described in server/cli/ocr_files.h, the progress
// output in ocr_progress.h, where pages go in ocr_client.h.
//
// Pages run on --concurrency worker threads, each taking the next page in input order: it renders
// the page (a PDF page only now, so at most --concurrency rendered pages are in memory however
// long the document), sends it, and writes the page's files. The worker that finishes a
// document's last page writes the document's files. Pages that fail are reported and counted;
// the others are still written, and a rerun redoes only what is missing.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/files.h"
#include "common/logging.h"
#include "engine/engine_flags.h"
#include "server/cli/commands.h"
#include "server/cli/ocr_client.h"
#include "server/cli/ocr_files.h"
#include "server/cli/ocr_progress.h"
#include "server/cli/ocr_render.h"
#include "server/grounding.h"
#include "server/page_result.h"
#include "tokenizer/ocr_prompt.h"
#include "vision/image_decoder.h"
#include "vision/pdf_document.h"

namespace dsocr::cli {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string dump(const json& j) {
  return j.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

// One input file and what this run does with it.
struct Document {
  Document(fs::path input, const fs::path& out_dir)
      : input(std::move(input)), paths(out_dir, this->input.stem().string()) {}

  fs::path input;
  DocumentPaths paths;
  std::string display;  // the file name, for messages
  bool pdf = false;
  std::unique_ptr<vision::PdfDocument> pdf_document;
  std::vector<int> page_numbers;  // selected pages, in order (an image: {1})
  bool open_failed = false;
  std::atomic<int> pages_left{0};  // not yet finished in this run
  std::atomic<int> pages_failed{0};
};

struct PageJob {
  Document* document;
  int index;  // position among the document's selected pages
};

bool looks_like_pdf(const fs::path& path, std::string_view bytes) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".pdf" || bytes.substr(0, 5) == "%PDF-";
}

// The PDF limits of a batch tool: long documents are its point, so pages and bytes are limited
// only by what one page may cost (its pixels, its render time).
vision::PdfLimits batch_pdf_limits() {
  vision::PdfLimits limits;
  limits.max_bytes = 2ll << 30;
  limits.max_pages = 1 << 20;
  limits.render_timeout = std::chrono::seconds(120);
  return limits;
}

// A document with a failed page (or that cannot be read) has no document files: ones left by an
// earlier run would not be this run's.
void remove_document_files(const Document& document) {
  std::error_code ec;
  fs::remove(document.paths.markdown, ec);
  fs::remove(document.paths.blocks, ec);
}

// Opens `document` and lists its selected pages; false (after reporting it) when it cannot.
bool open_document(Document* document, const vision::PdfPageRange& range,
                   ProgressReporter* progress) {
  auto fail = [&](const std::string& message) {
    document->open_failed = true;
    remove_document_files(*document);
    progress->document_failed(document->display, message);
    return false;
  };
  auto bytes = read_file_bytes(document->input);
  if (!bytes.ok()) return fail(bytes.status().message());
  document->pdf = looks_like_pdf(document->input, *bytes);
  if (!document->pdf) {
    document->page_numbers = {1};  // decoded when its turn comes
    return true;
  }
  auto opened = vision::PdfDocument::open(std::move(*bytes), batch_pdf_limits(), range);
  if (!opened.ok()) return fail("cannot read the PDF: " + opened.status().message());
  document->pdf_document = std::move(*opened);
  for (const vision::PdfPageInfo& page : document->pdf_document->pages()) {
    document->page_numbers.push_back(page.number);
  }
  return true;
}

// The page's pixels (what the boxes are drawn on and the regions cut from) and the bytes sent
// for it.
struct PageImage {
  vision::RgbImage pixels;
  std::string encoded;
  std::string media_type;
};

StatusOr<PageImage> load_page(const Document& document, int page_number) {
  PageImage page;
  if (document.pdf) {
    DSOCR_ASSIGN_OR_RETURN(page.pixels, document.pdf_document->render_page(page_number));
    DSOCR_ASSIGN_OR_RETURN(page.encoded, encode_png(page.pixels));
    page.media_type = "image/png";
    return page;
  }
  // An image goes as it is (the server and the engine decode it the same way); decoded here
  // only for its post-EXIF size, the boxes and the crops.
  DSOCR_ASSIGN_OR_RETURN(page.encoded, read_file_bytes(document.input));
  DSOCR_ASSIGN_OR_RETURN(vision::ImageHeader header, vision::probe_image(page.encoded));
  DSOCR_ASSIGN_OR_RETURN(page.pixels, vision::decode_image(page.encoded));
  std::string format(vision::image_format_name(header.format));
  std::transform(format.begin(), format.end(), format.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  page.media_type = "image/" + format;
  return page;
}

// Recognises one page and writes its files (ocr_files.h: the .json last).
Status run_page(const Document& document, int index, PageRecognizer* recognizer) {
  const int page_number = document.page_numbers[static_cast<size_t>(index)];
  DSOCR_ASSIGN_OR_RETURN(PageImage page, load_page(document, page_number));
  DSOCR_ASSIGN_OR_RETURN(PageAnswer answer, recognizer->recognize(page.encoded, page.media_type));
  page.encoded = std::string();
  const int width = page.pixels.width, height = page.pixels.height;
  json page_object;
  if (answer.server_page) {
    page_object = std::move(*answer.server_page);
    page_object["index"] = index;
    page_object["page_number"] = page_number;
  } else {
    page_object = server::page_json({.index = index,
                                     .page_number = page_number,
                                     .width = width,
                                     .height = height,
                                     .text = answer.text,
                                     .finish_reason = answer.finish_reason,
                                     .pdf_page = document.pdf});
  }
  const server::MarkdownRewrite rewrite =
      server::rewrite_markdown(answer.text, width, height,
                               document.pdf ? std::optional<int>(page_number - 1) : std::nullopt);
  for (const server::GroundingImageRegion& region : rewrite.images) {
    if (region.boxes.empty()) continue;  // a malformed box list: nothing to cut out
    DSOCR_ASSIGN_OR_RETURN(auto jpeg, crop_jpeg(page.pixels, region.boxes.front().pixels));
    if (jpeg) {
      DSOCR_RETURN_IF_ERROR(write_file_atomically(document.paths.dir / region.path, *jpeg));
    }
  }
  DSOCR_ASSIGN_OR_RETURN(
      std::string boxes,
      draw_boxes_png(page.pixels, server::parse_grounding(answer.text, width, height)));
  DSOCR_RETURN_IF_ERROR(write_file_atomically(document.paths.page_boxes(page_number), boxes));
  DSOCR_RETURN_IF_ERROR(
      write_file_atomically(document.paths.page_markdown(page_number), rewrite.markdown));
  return write_file_atomically(document.paths.page_json(page_number), dump(page_object));
}

// DIR/NAME.md and DIR/NAME.blocks.json from the page files on disk, so that a document finished
// over several runs gets exactly the files one run writes.
Status write_document(const Document& document) {
  std::vector<std::string> markdown;
  json pages = json::array();
  for (size_t i = 0; i < document.page_numbers.size(); ++i) {
    const int number = document.page_numbers[i];
    DSOCR_ASSIGN_OR_RETURN(std::string md, read_file_bytes(document.paths.page_markdown(number)));
    DSOCR_ASSIGN_OR_RETURN(std::string text, read_file_bytes(document.paths.page_json(number)));
    json page = json::parse(text, nullptr, false);
    if (!page.is_object()) {
      return data_loss(document.paths.page_json(number).string() + " is not a page object");
    }
    page["index"] = static_cast<int>(i);
    pages.push_back(std::move(page));
    markdown.push_back(std::move(md));
  }
  DSOCR_RETURN_IF_ERROR(write_file_atomically(document.paths.blocks, dump(pages)));
  return write_file_atomically(document.paths.markdown,
                               document_markdown(markdown, document.pdf, document.paths.name));
}

// The document is finished in this run (every page done or failed): write or clear its files.
void finish_document(Document* document, ProgressReporter* progress) {
  if (document->pages_failed.load() > 0) {
    remove_document_files(*document);
    return;
  }
  if (Status s = write_document(*document); !s.ok()) {
    progress->document_failed(document->display, s.message());
  }
}

const char kExtraHelp[] =
    "\nInputs: PDF files (every page, or --pages) and image files (one page each).\n"
    "Writes DIR/NAME.md, DIR/NAME.blocks.json and DIR/NAME/page_NNNN.{md,json}, "
    "page_NNNN_boxes.png, images/ (NAME: the input's stem).\n"
    "Pages already written by an earlier run are skipped (--force redoes them).\n"
    "Exit code: 0 every page done, 1 a page or a document failed, 2 bad usage.\n";

}  // namespace

int cmd_ocr(int argc, const char* const* argv) {
  using engine::EngineFlag;
  engine::EngineFlags engine_flags;
  engine_flags.model.clear();  // in-process: demo; --server: the server's first model
  std::string out_dir, server_url, api_key, pages_text, prompt, task = "document";
  int64_t concurrency = 4, max_tokens = 0;
  std::string log_level = "warn";
  double timeout_s = 600;
  bool force = false, quiet = false;
  FlagSet flags("dsocr ocr",
                "OCR documents (PDF pages, images) to markdown with layout boxes, in this "
                "process or through a running server:\n"
                "  dsocr ocr FILE.pdf|IMAGE... --out DIR [--server URL] [--concurrency N]");
  flags.add_string("out", &out_dir, "output directory (required)");
  flags.add_string("server", &server_url,
                   "send pages to this dsocr-server (http://host:port) instead of running the "
                   "model here");
  flags.add_int("concurrency", &concurrency, "pages in flight at most");
  flags.add_string("api-key", &api_key, "the server's API key (--server)", "DSOCR_API_KEY");
  flags.add_string("pages", &pages_text, "PDF pages: N, N-M or N- (1-based; default all)");
  flags.add_int("max-tokens", &max_tokens, "tokens per page at most (0: up to the context)");
  flags.add_string("task", &task, "document (markdown with boxes) or free (plain OCR)");
  flags.add_string("prompt", &prompt, "a prompt of your own instead of the task's");
  flags.add_bool("force", &force, "redo pages an earlier run already wrote");
  flags.add_bool("quiet", &quiet, "only errors and the summary on stderr");
  flags.add_double("timeout", &timeout_s, "seconds per page request (--server)");
  flags.add_string("log-level", &log_level,
                   "the engine's log lines: trace, debug, info, warn, error, off");
  add_engine_flags(&flags, &engine_flags,
                   {{EngineFlag::kModel,
                     "model: demo (the default), a directory or a hub id; with --server, the "
                     "served model's name (default: the server's first)"},
                    EngineFlag::kDevice,
                    EngineFlag::kDtype,
                    EngineFlag::kWeights,
                    EngineFlag::kKvCacheDtype,
                    EngineFlag::kMaxModelLen,
                    EngineFlag::kMaxNumBatchedTokens,
                    EngineFlag::kNumKvBlocks,
                    EngineFlag::kKvMemoryFraction,
                    EngineFlag::kPrefixCaching,
                    EngineFlag::kVisionThreads,
                    EngineFlag::kTorchThreads},
                   engine::EngineFlagEnv::kWithout);
  if (auto rc = parse_command_flags(flags, argc, argv, kExtraHelp)) return *rc;
  const auto usage_error = [](const std::string& message) {
    std::cerr << "dsocr ocr: " << message << "\n";
    return 2;
  };
  if (Status s = log::configure({.level = log_level}); !s.ok()) return usage_error(s.message());
  const std::vector<std::string>& inputs = flags.positionals();
  if (inputs.empty()) return usage_error("no input files (dsocr ocr FILE... --out DIR)");
  if (out_dir.empty()) return usage_error("--out DIR is required");
  if (concurrency < 1 || concurrency > 256) return usage_error("--concurrency must be in 1..256");
  if (max_tokens < 0) return usage_error("--max-tokens must be >= 0");
  if (timeout_s <= 0) return usage_error("--timeout must be positive");
  if (prompt.empty() && !tokenizer::ocr_task_prompt(task)) {
    return usage_error("--task must be document or free");
  }
  vision::PdfPageRange range;
  if (!pages_text.empty()) {
    auto parsed = parse_page_range(pages_text);
    if (!parsed.ok()) return usage_error(parsed.status().message());
    range = *parsed;
  }
  if (server_url.empty()) {
    if (engine_flags.model.empty()) engine_flags.model = "demo";
    if (Status s = engine_flags.validate(); !s.ok()) return usage_error(s.message());
  }

  std::vector<std::unique_ptr<Document>> documents;
  for (const std::string& input : inputs) {
    auto document = std::make_unique<Document>(fs::path(input), fs::path(out_dir));
    document->display = fs::path(input).filename().string();
    for (const auto& other : documents) {
      if (other->paths.name == document->paths.name) {
        return usage_error(input + " and " + other->input.string() + " would both write " +
                           document->paths.dir.string());
      }
    }
    documents.push_back(std::move(document));
  }
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) {
    std::cerr << "dsocr ocr: cannot create " << out_dir << ": " << ec.message() << "\n";
    return 1;
  }

  const bool terminal = isatty(fileno(stderr)) == 1;
  ProgressReporter progress(stderr, terminal, 0, quiet);
  // Open everything first: the page count is the progress bar's total.
  int total_pages = 0;
  for (auto& document : documents) {
    if (open_document(document.get(), range, &progress)) {
      total_pages += static_cast<int>(document->page_numbers.size());
    }
  }
  progress.add_total(total_pages);

  std::vector<PageJob> jobs;
  for (auto& document : documents) {
    if (document->open_failed) continue;
    int skipped = 0;
    for (size_t i = 0; i < document->page_numbers.size(); ++i) {
      if (!force && page_done(document->paths, document->page_numbers[i])) {
        ++skipped;
      } else {
        jobs.push_back({document.get(), static_cast<int>(i)});
      }
    }
    document->pages_left = static_cast<int>(document->page_numbers.size()) - skipped;
    if (skipped) {
      progress.note(document->display + ": " + std::to_string(skipped) + " of " +
                    std::to_string(document->page_numbers.size()) +
                    " pages already written, skipped (--force redoes them)");
      progress.skipped(skipped);
    }
    if (document->pages_left == 0) finish_document(document.get(), &progress);
  }

  std::unique_ptr<PageRecognizer> recognizer;
  if (!jobs.empty()) {
    RecognizeOptions options{.prompt = prompt, .task = task, .max_tokens = max_tokens};
    StatusOr<std::unique_ptr<PageRecognizer>> made =
        server_url.empty()
            ? make_engine_recognizer(engine_flags, static_cast<int>(concurrency), options)
            : make_server_recognizer({.url = server_url,
                                      .api_key = api_key,
                                      .model = engine_flags.model,
                                      .timeout_s = timeout_s},
                                     options);
    if (!made.ok()) {
      std::cerr << "dsocr ocr: " << made.status().message() << "\n";
      return 1;
    }
    recognizer = std::move(*made);
    progress.note("dsocr ocr: " + std::to_string(jobs.size()) + " pages to do through " +
                  recognizer->description() + ", " + std::to_string(concurrency) + " at a time");
  }

  std::atomic<size_t> next_job{0};
  auto worker = [&] {
    for (size_t j; (j = next_job.fetch_add(1)) < jobs.size();) {
      Document* document = jobs[j].document;
      const int page_number = document->page_numbers[static_cast<size_t>(jobs[j].index)];
      const int document_pages = static_cast<int>(document->page_numbers.size());
      const auto start = Clock::now();
      Status s;
      try {
        s = run_page(*document, jobs[j].index, recognizer.get());
      } catch (const std::exception& e) {
        s = internal_error(e.what());
      }
      if (s.ok()) {
        progress.page_ok(document->display, page_number, document_pages,
                         std::chrono::duration<double>(Clock::now() - start).count());
      } else {
        ++document->pages_failed;
        progress.page_failed(document->display, page_number, document_pages, s.message());
      }
      if (--document->pages_left == 0) finish_document(document, &progress);
    }
  };
  std::vector<std::thread> threads;
  progress.start();
  const size_t thread_count = std::min<size_t>(static_cast<size_t>(concurrency), jobs.size());
  for (size_t t = 0; t < thread_count; ++t) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  recognizer.reset();

  progress.finish();
  const ProgressCounts counts = progress.counts();
  const int rc = counts.failed > 0 ? 1 : 0;
  if (vision::abandoned_pdf_renders() > 0) {
    // A page render past its time limit still runs on poppler's global state, which exit()
    // would destroy under it.
    std::fflush(nullptr);
    std::_Exit(rc);
  }
  return rc;
}

}  // namespace dsocr::cli

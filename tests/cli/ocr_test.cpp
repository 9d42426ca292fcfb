// `dsocr ocr`'s pure pieces: page file names, the resume scan, atomic writes, the document's
// markdown, --pages, progress formatting and ETA, the retry policy, base64, and the drawings.
// The command itself runs in tests/python/test_ocr_cli.py.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "server/cli/ocr_client.h"
#include "server/cli/ocr_files.h"
#include "server/cli/ocr_progress.h"
#include "server/cli/ocr_render.h"
#include "server/grounding.h"

namespace dsocr::cli {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  TempDir() {
    path = fs::temp_directory_path() /
           ("dsocr-ocr-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  fs::path path;
  static inline int counter = 0;
};

void write(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

std::string read(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST_CASE("page files are named by the page number, four digits at least", "[ocr]") {
  CHECK(page_stem(1) == "page_0001");
  CHECK(page_stem(42) == "page_0042");
  CHECK(page_stem(9999) == "page_9999");
  CHECK(page_stem(12345) == "page_12345");
  DocumentPaths paths("/out", "report");
  CHECK(paths.dir == fs::path("/out/report"));
  CHECK(paths.markdown == fs::path("/out/report.md"));
  CHECK(paths.blocks == fs::path("/out/report.blocks.json"));
  CHECK(paths.images_dir == fs::path("/out/report/images"));
  CHECK(paths.page_markdown(3) == fs::path("/out/report/page_0003.md"));
  CHECK(paths.page_json(3) == fs::path("/out/report/page_0003.json"));
  CHECK(paths.page_boxes(3) == fs::path("/out/report/page_0003_boxes.png"));
}

TEST_CASE("a page is done only when its .md and a page object of that number exist", "[ocr]") {
  TempDir dir;
  DocumentPaths paths(dir.path, "doc");
  const std::string page2 = R"({"index": 1, "page_number": 2, "text": "x", "blocks": []})";
  CHECK_FALSE(page_done(paths, 2));
  write(paths.page_json(2), page2);
  CHECK_FALSE(page_done(paths, 2));  // no .md: killed between the two writes
  write(paths.page_markdown(2), "x");
  CHECK(page_done(paths, 2));
  // Another page's object, a damaged file, or one that is not a page object: redo.
  write(paths.page_json(3), page2);
  write(paths.page_markdown(3), "x");
  CHECK_FALSE(page_done(paths, 3));
  write(paths.page_json(2), page2.substr(0, page2.size() / 2));
  CHECK_FALSE(page_done(paths, 2));
  write(paths.page_json(2), R"({"page_number": 2})");
  CHECK_FALSE(page_done(paths, 2));
  CHECK_FALSE(page_done(paths, 1));
}

TEST_CASE("atomic writes create the directory and leave no temporary file", "[ocr]") {
  TempDir dir;
  const fs::path target = dir.path / "a" / "b" / "page_0001.md";
  REQUIRE(write_file_atomically(target, "first").ok());
  CHECK(read(target) == "first");
  // A temporary file left by a killed run is overwritten, and the target replaced whole.
  write(dir.path / "a" / "b" / ".page_0001.md.tmp", "stale stale stale");
  REQUIRE(write_file_atomically(target, "second").ok());
  CHECK(read(target) == "second");
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir.path / "a" / "b")) {
    names.push_back(entry.path().filename().string());
  }
  CHECK(names == std::vector<std::string>{"page_0001.md"});
  // A target whose directory cannot be made is an error, not a crash.
  write(dir.path / "file", "x");
  CHECK_FALSE(write_file_atomically(dir.path / "file" / "page.md", "x").ok());
}

TEST_CASE("the document's markdown joins pages with the official marker and fixes image links",
          "[ocr]") {
  const std::vector<std::string> pages = {"# One\n![](images/0_0.jpg)\n", "Two"};
  CHECK(document_markdown(pages, true, "report") ==
        "# One\n![](report/images/0_0.jpg)\n\n\n<--- Page Split --->\nTwo"
        "\n\n<--- Page Split --->\n");
  // An image is one page, no marker; names that a link cannot carry are percent-encoded.
  CHECK(document_markdown({"![](images/0.jpg)\n"}, false, "scan (1) é") ==
        "![](scan%20%281%29%20%C3%A9/images/0.jpg)\n");
  CHECK(document_markdown({}, true, "x").empty());
}

TEST_CASE("page ranges take N, N-M and N- (the --pages flag)", "[ocr]") {
  auto one = parse_page_range("3");
  REQUIRE(one.ok());
  CHECK(one->first == 3);
  CHECK(one->last == 3);
  auto span = parse_page_range("2-5");
  REQUIRE(span.ok());
  CHECK(span->first == 2);
  CHECK(span->last == 5);
  auto open = parse_page_range("4-");
  REQUIRE(open.ok());
  CHECK(open->first == 4);
  CHECK(open->last == 0);
  for (const char* bad : {"", "0", "-3", "5-2", "a", "1-b", "1--2", "1-2-3", " 1"}) {
    INFO(bad);
    auto parsed = parse_page_range(bad);
    REQUIRE_FALSE(parsed.ok());
    CHECK(parsed.status().message().find("--pages") != std::string::npos);
  }
}

TEST_CASE("durations read as seconds, minutes or hours", "[ocr]") {
  CHECK(format_duration(0) == "0.0 s");
  CHECK(format_duration(4.14) == "4.1 s");
  CHECK(format_duration(59.9) == "59.9 s");
  CHECK(format_duration(59.96) == "1m00s");
  CHECK(format_duration(125) == "2m05s");
  CHECK(format_duration(3725) == "1h02m");
  CHECK(format_duration(-1) == "?");
  CHECK(format_duration(std::numeric_limits<double>::infinity()) == "?");
}

TEST_CASE("rate and ETA count only the pages this run worked on", "[ocr]") {
  ProgressCounts c{.total = 40, .ok = 0, .failed = 0, .skipped = 10, .elapsed_s = 5};
  CHECK(pages_per_second(c) == 0);
  CHECK(eta_seconds(c) < 0);  // unknown before a page finishes
  c.ok = 9;
  c.failed = 1;
  c.elapsed_s = 20;
  CHECK(pages_per_second(c) == Approx(0.5));
  // 40 - (9 + 1 + 10) = 20 pages left at 0.5 pages/s.
  CHECK(eta_seconds(c) == Approx(40));
  c.ok = 29;
  CHECK(eta_seconds(c) == 0);
}

TEST_CASE("the progress bar fits its width and says what it counts", "[ocr]") {
  ProgressCounts c{.total = 40, .ok = 10, .failed = 0, .skipped = 0, .elapsed_s = 20};
  const std::string line = format_progress_bar(c, 79);
  CHECK(line.size() <= 79);
  CHECK(line.find("10/40 pages") != std::string::npos);
  CHECK(line.find("0.50 pages/s") != std::string::npos);
  CHECK(line.find("ETA 1m00s") != std::string::npos);
  // A quarter done: a quarter of the bar filled.
  const size_t bar = line.find(']') - 1;
  CHECK(std::count(line.begin(), line.end(), '#') == static_cast<long>(bar / 4));
  CHECK(line.find("skipped") == std::string::npos);
  c.skipped = 3;
  c.failed = 1;
  CHECK(format_progress_bar(c, 79).find("(3 skipped, 1 failed)") != std::string::npos);
  // Too narrow for a bar: the numbers alone, cut to the width.
  CHECK(format_progress_bar(c, 30).size() <= 30);
  CHECK(format_progress_bar(c, 30).find('[') == std::string::npos);
  CHECK(format_summary(c) == "40 pages: 10 ok, 1 failed, 3 skipped in 20.0 s (0.55 pages/s)");
}

TEST_CASE("the reporter prints plain lines off a terminal and a redrawn bar on one", "[ocr]") {
  for (bool terminal : {false, true}) {
    char* buffer = nullptr;
    size_t size = 0;
    std::FILE* out = open_memstream(&buffer, &size);
    {
      ProgressReporter progress(out, terminal, 3, /*quiet=*/false);
      progress.skipped(1);
      progress.note("doc.pdf: 1 of 3 pages already written");
      progress.page_ok("doc.pdf", 2, 3, 4.14);
      progress.page_failed("doc.pdf", 3, 3, "HTTP 400: bad");
      progress.finish();
    }
    std::fclose(out);
    const std::string text(buffer, size);
    std::free(buffer);
    INFO(text);
    CHECK(text.find("page 3/3 of doc.pdf failed: HTTP 400: bad\n") != std::string::npos);
    CHECK(text.find("3 pages: 1 ok, 1 failed, 1 skipped") != std::string::npos);
    if (terminal) {
      CHECK(text.find("\r[") != std::string::npos);
      // A note never shares a line with the bar: the bar is erased first.
      CHECK(text.find("\r\x1b[Kdoc.pdf: 1 of 3 pages already written\n\r[") != std::string::npos);
      CHECK(text.find("page 2/3 of doc.pdf done") == std::string::npos);
    } else {
      CHECK(text.find("page 2/3 of doc.pdf done in 4.1 s\n") != std::string::npos);
      CHECK(text.find("doc.pdf: 1 of 3 pages already written\n") != std::string::npos);
      CHECK(text.find('\r') == std::string::npos);
    }
  }
}

TEST_CASE("429 and 503 are retried, honouring Retry-After, a bounded number of times", "[ocr]") {
  CHECK(retry_delay_seconds(429, 0, "3") == 3.0);
  CHECK(retry_delay_seconds(503, 2, "0") == 0.0);
  CHECK(retry_delay_seconds(503, 0, "3600") == 60.0);  // capped
  // No header, or a date: the backoff.
  CHECK(retry_delay_seconds(429, 0, "") == 0.5);
  CHECK(retry_delay_seconds(429, 1, "Wed, 21 Oct 2015 07:28:00 GMT") == 1.0);
  CHECK(retry_delay_seconds(503, 4, "") == 8.0);
  CHECK(retry_delay_seconds(503, 4, "-1") == 8.0);
  CHECK_FALSE(retry_delay_seconds(503, kMaxRetries, "1"));
  for (long status : {200L, 400L, 401L, 404L, 413L, 500L, 504L}) {
    CHECK_FALSE(retry_delay_seconds(status, 0, "1"));
  }
}

TEST_CASE("base64 as RFC 4648 writes it", "[ocr]") {
  CHECK(base64_encode("") == "");
  CHECK(base64_encode("f") == "Zg==");
  CHECK(base64_encode("fo") == "Zm8=");
  CHECK(base64_encode("foo") == "Zm9v");
  CHECK(base64_encode("foobar") == "Zm9vYmFy");
  CHECK(base64_encode(std::string("\xff\xfe\x00", 3)) == "//4A");
}

vision::RgbImage grey_page(int w, int h) { return vision::RgbImage(w, h, 200); }

cv::Mat decode(const std::string& bytes) {
  return cv::imdecode(std::vector<uchar>(bytes.begin(), bytes.end()), cv::IMREAD_COLOR);
}

TEST_CASE("a page PNG decodes to exactly its pixels", "[ocr]") {
  vision::RgbImage page(31, 17);
  for (size_t i = 0; i < page.pixels.size(); ++i) page.pixels[i] = static_cast<uint8_t>(i * 7);
  auto png = encode_png(page);
  REQUIRE(png.ok());
  cv::Mat back = decode(*png);
  REQUIRE(back.cols == 31);
  REQUIRE(back.rows == 17);
  for (int y = 0; y < 17; ++y) {
    for (int x = 0; x < 31; ++x) {
      const cv::Vec3b bgr = back.at<cv::Vec3b>(y, x);
      const uint8_t* rgb = page.row(y) + 3 * x;
      REQUIRE(bgr[2] == rgb[0]);
      REQUIRE(bgr[1] == rgb[1]);
      REQUIRE(bgr[0] == rgb[2]);
    }
  }
}

TEST_CASE("boxes are drawn with their outline width and a faint fill", "[ocr]") {
  const int w = 400, h = 300;
  // A title (outline 4) and a text block (outline 2), far apart.
  const std::string text =
      "<|ref|>title<|/ref|><|det|>[[100, 200, 400, 500]]<|/det|>\n# T\n"
      "<|ref|>text<|/ref|><|det|>[[600, 600, 900, 900]]<|/det|>\nbody";
  auto blocks = server::parse_grounding(text, w, h);
  REQUIRE(blocks.size() == 2);
  auto png = draw_boxes_png(grey_page(w, h), blocks);
  REQUIRE(png.ok());
  cv::Mat img = decode(*png);
  REQUIRE(img.cols == w);
  REQUIRE(img.rows == h);
  auto is = [&](int x, int y, std::array<uint8_t, 3> rgb) {
    const cv::Vec3b p = img.at<cv::Vec3b>(y, x);
    return p[2] == rgb[0] && p[1] == rgb[1] && p[0] == rgb[2];
  };
  // Mixing a tag's colour 20/255 over the page.
  auto faint = [](std::array<uint8_t, 3> c, uint8_t under) {
    std::array<uint8_t, 3> out;
    for (int i = 0; i < 3; ++i)
      out[i] = static_cast<uint8_t>((under * 235 + c[i] * 20 + 127) / 255);
    return out;
  };
  const auto title = box_colour(0), body = box_colour(1);
  REQUIRE(title != body);
  const auto& tb = blocks[0].boxes[0].pixels;  // 40, 60, 160, 150
  const int mid_y = (tb[1] + tb[3]) / 2;
  // Title: 4 px of outline from the left edge inward (a colour over itself stays itself), then
  // the interior: the page under the fill.
  for (int i = 0; i < 4; ++i) CHECK(is(tb[0] + i, mid_y, title));
  CHECK(is(tb[0] + 4, mid_y, faint(title, 200)));
  CHECK(is(tb[0] + 60, mid_y, faint(title, 200)));
  CHECK(is(tb[0] - 1, mid_y, {200, 200, 200}));  // outside: untouched
  const auto& bb = blocks[1].boxes[0].pixels;
  const int body_y = (bb[1] + bb[3]) / 2;
  CHECK(is(bb[0], body_y, body));
  CHECK(is(bb[0] + 1, body_y, body));
  CHECK(is(bb[0] + 2, body_y, faint(body, 200)));
  CHECK(is(bb[2] + 1, body_y, {200, 200, 200}));
  // The label's white box at (x1, y1 - 15): its bottom row is below the glyphs' baseline.
  int baseline = 0;
  const cv::Size label = cv::getTextSize("title", cv::FONT_HERSHEY_SIMPLEX, 0.4, 1, &baseline);
  CHECK(is(tb[0] + 1, tb[1] - 15 + label.height + baseline, {255, 255, 255}));
  CHECK(is(tb[0] + label.width + 1, tb[1] - 15 + 1, {200, 200, 200}));
  // The same input draws the same picture (reruns write identical files).
  CHECK(*draw_boxes_png(grey_page(w, h), blocks) == *png);
}

TEST_CASE("crops cut x1 <= x < x2, y1 <= y < y2, clipped, none when empty", "[ocr]") {
  vision::RgbImage page(50, 40, 255);
  auto jpeg = crop_jpeg(page, {10, 5, 30, 25});
  REQUIRE(jpeg.ok());
  REQUIRE(jpeg->has_value());
  cv::Mat crop = decode(**jpeg);
  CHECK(crop.cols == 20);
  CHECK(crop.rows == 20);
  auto clipped = crop_jpeg(page, {40, 30, 50, 40});
  REQUIRE(clipped.ok());
  CHECK(decode(**clipped).cols == 10);
  auto empty = crop_jpeg(page, {10, 10, 10, 20});
  REQUIRE(empty.ok());
  CHECK_FALSE(empty->has_value());
}

}  // namespace
}  // namespace dsocr::cli

// PDF rendering (issue #20): PDFs written by a small writer below (pages of mixed sizes, a rotated
// page, encrypted with and without a user password, damaged, without pages, 500 pages, a page
// that renders for seconds) must report their pages in order, render at 144 dpi in the size
// PyMuPDF gives (spec §11.3) with the colours where the content puts them, and turn every limit
// into its Status. Pixel parity with PyMuPDF itself is in tests/python/test_pdf_parity.py.
#include <openssl/evp.h>

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "tests/vision/test_pdf.h"
#include "vision/pdf_document.h"

using namespace dsocr;
using namespace dsocr::vision;
using dsocr::testing::make_pdf;
using dsocr::testing::PdfWriter;
using dsocr::testing::TestPage;

namespace {

std::string md5(const std::string& data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  REQUIRE(EVP_Digest(data.data(), data.size(), digest, &size, EVP_md5(), nullptr) == 1);
  return std::string(reinterpret_cast<char*>(digest), size);
}

std::string rc4(const std::string& key, const std::string& data) {
  unsigned char s[256];
  for (int i = 0; i < 256; ++i) s[i] = static_cast<unsigned char>(i);
  for (int i = 0, j = 0; i < 256; ++i) {
    j = (j + s[i] + static_cast<unsigned char>(key[i % key.size()])) & 255;
    std::swap(s[i], s[j]);
  }
  std::string out = data;
  for (size_t k = 0, i = 0, j = 0; k < out.size(); ++k) {
    i = (i + 1) & 255;
    j = (j + s[i]) & 255;
    std::swap(s[i], s[j]);
    out[k] = static_cast<char>(out[k] ^ s[(s[i] + s[j]) & 255]);
  }
  return out;
}

std::string hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out = "<";
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out + ">";
}

// The standard security handler, revision 2 (40-bit RC4; PDF 1.7 §7.6.3.3, algorithms 2 and 4),
// with `user_password` needed to open the file (or the owner password, "owner", which opens it
// too). The pages have no content, so there is no string or stream to encrypt.
std::string encrypted_pdf(const std::string& user_password) {
  static const std::string kPad(
      "\x28\xbf\x4e\x5e\x4e\x75\x8a\x41\x64\x00\x4e\x56\xff\xfa\x01\x08"
      "\x2e\x2e\x00\xb6\xd0\x68\x3e\x80\x2f\x0c\xa9\xfe\x64\x53\x69\x7a",
      32);
  const std::string padded = (user_password + kPad).substr(0, 32);
  const std::string owner_padded = (std::string("owner") + kPad).substr(0, 32);
  const std::string owner_entry = rc4(md5(owner_padded).substr(0, 5), padded);
  const std::string id = "0123456789abcdef";
  const int32_t permissions = -4;
  std::string p(4, '\0');
  for (int i = 0; i < 4; ++i)
    p[i] = static_cast<char>((static_cast<uint32_t>(permissions) >> (8 * i)) & 0xff);
  const std::string key = md5(padded + owner_entry + p + id).substr(0, 5);
  const std::string user_entry = rc4(key, kPad);

  PdfWriter writer;
  const int encrypt = writer.add("<< /Filter /Standard /V 1 /R 2 /O " + hex(owner_entry) + " /U " +
                                 hex(user_entry) + " /P " + std::to_string(permissions) + " >>");
  return make_pdf(
      {TestPage{300, 400, 0, ""}},
      "/Encrypt " + std::to_string(encrypt) + " 0 R /ID [" + hex(id) + " " + hex(id) + "]", writer);
}

StatusOr<std::unique_ptr<PdfDocument>> open_pdf(const std::string& bytes, PdfLimits limits = {},
                                                PdfPageRange range = {}) {
  return PdfDocument::open(bytes, limits, range);
}

struct Rgb {
  int r, g, b;
  bool operator==(const Rgb&) const = default;
};
Rgb pixel(const RgbImage& image, int x, int y) {
  const uint8_t* p = image.row(y) + 3 * x;
  return {p[0], p[1], p[2]};
}
std::ostream& operator<<(std::ostream& os, const Rgb& c) {
  return os << "(" << c.r << "," << c.g << "," << c.b << ")";
}

constexpr Rgb kWhite{255, 255, 255};
constexpr Rgb kRed{255, 0, 0};

}  // namespace

TEST_CASE("pdf: pages of mixed sizes, in order, rendered at 144 dpi as PyMuPDF sizes them") {
  // A4 in points is fractional (595.276 x 841.89): MuPDF rounds the scaled box out, to 1191x1684.
  const std::vector<TestPage> pages = {
      {612, 792, 0, "1 0 0 rg 10 10 100 50 re f"},
      {595.276, 841.89, 0, ""},
      {300, 200, 0, "0 0 1 rg 0 0 300 200 re f"},
      {200, 100, 90, "1 0 0 rg 0 0 20 20 re f"},
      {100.3, 100.7, 0, ""},
  };
  auto document = open_pdf(make_pdf(pages));
  REQUIRE(document.ok());
  const PdfDocument& pdf = **document;
  REQUIRE(pdf.page_count() == 5);
  REQUIRE(pdf.pages().size() == 5);
  const int expected[][2] = {{1224, 1584}, {1191, 1684}, {600, 400}, {200, 400}, {201, 202}};
  for (int i = 0; i < 5; ++i) {
    const PdfPageInfo& info = pdf.pages()[i];
    CAPTURE(i);
    CHECK(info.number == i + 1);
    CHECK(info.render_width == expected[i][0]);
    CHECK(info.render_height == expected[i][1]);
    auto image = pdf.render_page(info.number);
    REQUIRE(image.ok());
    CHECK(image->width == expected[i][0]);
    CHECK(image->height == expected[i][1]);
    CHECK(image->pixels.size() == static_cast<size_t>(image->width) * image->height * 3);
  }
  CHECK(pdf.pages()[3].rotation == 90);
  CHECK(pdf.pages()[3].width_points == 100);
  CHECK(pdf.pages()[3].height_points == 200);

  // Page 1: a red box at (10,10)-(110,60) pt from the bottom left is (20..220, 1464..1564) px.
  auto first = pdf.render_page(1);
  REQUIRE(first.ok());
  CHECK(pixel(*first, 120, 1514) == kRed);
  CHECK(pixel(*first, 600, 800) == kWhite);  // opaque white paper, no alpha
  CHECK(pixel(*first, 120, 1440) == kWhite);
  // Page 3 is blue everywhere: RGB in this order.
  auto third = pdf.render_page(3);
  REQUIRE(third.ok());
  CHECK(pixel(*third, 300, 200) == Rgb{0, 0, 255});
  // Page 4 is /Rotate 90 (clockwise): its bottom-left red square lands at the top left.
  auto rotated = pdf.render_page(4);
  REQUIRE(rotated.ok());
  CHECK(pixel(*rotated, 10, 10) == kRed);
  CHECK(pixel(*rotated, 10, 390) == kWhite);
  CHECK(pixel(*rotated, 190, 10) == kWhite);
}

TEST_CASE("pdf: the rendered size rounds like MuPDF's fz_round_rect") {
  CHECK(pdf_render_pixels(612) == 1224);
  CHECK(pdf_render_pixels(595.276) == 1191);  // 1190.552
  CHECK(pdf_render_pixels(841.89) == 1684);   // 1683.78
  CHECK(pdf_render_pixels(100.2) == 201);     // 200.4 rounds out, not to nearest
  CHECK(pdf_render_pixels(100.0002) == 200);  // within MuPDF's 0.001 tolerance
  CHECK(pdf_render_pixels(1e12) == INT_MAX);
}

TEST_CASE("pdf: a page range selects pages, and ranges outside the document are refused") {
  std::vector<TestPage> pages;
  for (int i = 0; i < 6; ++i) pages.push_back({100.0 + 10 * i, 100, 0, ""});
  const std::string bytes = make_pdf(pages);

  auto middle = open_pdf(bytes, {}, {2, 4});
  REQUIRE(middle.ok());
  REQUIRE((*middle)->pages().size() == 3);
  CHECK((*middle)->page_count() == 6);
  CHECK((*middle)->pages()[0].number == 2);
  CHECK((*middle)->pages()[0].render_width == 220);
  CHECK((*middle)->pages()[2].render_width == 260);
  CHECK((*middle)->render_page(1).status().code() == StatusCode::kOutOfRange);
  CHECK((*middle)->render_page(5).status().code() == StatusCode::kOutOfRange);
  CHECK((*middle)->render_page(3).ok());

  auto tail = open_pdf(bytes, {}, {5, 0});
  REQUIRE(tail.ok());
  CHECK((*tail)->pages().size() == 2);

  CHECK(open_pdf(bytes, {}, {7, 0}).status().code() == StatusCode::kOutOfRange);
  CHECK(open_pdf(bytes, {}, {1, 7}).status().code() == StatusCode::kOutOfRange);
  CHECK(open_pdf(bytes, {}, {0, 3}).status().code() == StatusCode::kInvalidArgument);
  CHECK(open_pdf(bytes, {}, {4, 3}).status().code() == StatusCode::kInvalidArgument);
  CHECK(open_pdf(bytes, {}, {1, -1}).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("pdf: 500 pages are over the page limit unless a range selects fewer") {
  const std::string bytes = make_pdf(std::vector<TestPage>(500, TestPage{100, 100, 0, ""}));
  PdfLimits limits;
  limits.max_pages = 200;
  auto all = open_pdf(bytes, limits);
  REQUIRE(all.status().code() == StatusCode::kPayloadTooLarge);
  CHECK(all.status().message().find("500 pages") != std::string::npos);
  CHECK(all.status().http_status() == 413);

  auto some = open_pdf(bytes, limits, {301, 500});
  REQUIRE(some.ok());
  CHECK((*some)->page_count() == 500);
  CHECK((*some)->pages().size() == 200);
  CHECK((*some)->pages().back().number == 500);
}

TEST_CASE("pdf: bytes and page pixels over the limits are refused before rendering") {
  const std::string small = make_pdf({TestPage{612, 792, 0, ""}});
  PdfLimits limits;
  limits.max_bytes = static_cast<int64_t>(small.size()) - 1;
  CHECK(open_pdf(small, limits).status().code() == StatusCode::kPayloadTooLarge);
  limits.max_bytes = static_cast<int64_t>(small.size());
  CHECK(open_pdf(small, limits).ok());

  // 14400 pt is the largest page PDF allows: 28800x28800 px at 144 dpi.
  auto huge = open_pdf(make_pdf({TestPage{612, 792, 0, ""}, TestPage{14400, 14400, 0, ""}}));
  REQUIRE(huge.status().code() == StatusCode::kPayloadTooLarge);
  CHECK(huge.status().message().find("page 2") != std::string::npos);
  CHECK(huge.status().message().find("28800x28800") != std::string::npos);

  limits = {};
  limits.max_page_pixels = 1224 * 1584;
  CHECK(open_pdf(small, limits).ok());
  limits.max_page_pixels = 1224 * 1584 - 1;
  CHECK(open_pdf(small, limits).status().code() == StatusCode::kPayloadTooLarge);
}

TEST_CASE("pdf: damaged files, files without pages and non-PDFs are invalid arguments") {
  CHECK(open_pdf("").status().code() == StatusCode::kInvalidArgument);
  CHECK(open_pdf("hello, this is not a PDF").status().code() == StatusCode::kInvalidArgument);
  CHECK(open_pdf(std::string("\x89PNG\r\n\x1a\n", 8) + std::string(100, '\0')).status().code() ==
        StatusCode::kInvalidArgument);
  CHECK(open_pdf("%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 9 0 R >> endobj\n%%EOF\n")
            .status()
            .code() == StatusCode::kInvalidArgument);
  auto empty = open_pdf(make_pdf({}));
  REQUIRE(empty.status().code() == StatusCode::kInvalidArgument);
  CHECK(empty.status().message().find("no pages") != std::string::npos);

  // A valid file cut short: poppler rebuilds what it can; whatever it makes of it, never a crash
  // and never an OK document with pages it cannot render.
  const std::string whole = make_pdf({TestPage{612, 792, 0, "1 0 0 rg 0 0 10 10 re f"}});
  for (size_t cut = 0; cut < whole.size(); cut += 7) {
    auto document = open_pdf(whole.substr(0, cut));
    if (!document.ok()) {
      CHECK(document.status().code() == StatusCode::kInvalidArgument);
      continue;
    }
    for (const PdfPageInfo& info : (*document)->pages()) {
      auto image = (*document)->render_page(info.number);
      if (!image.ok()) CHECK(image.status().code() == StatusCode::kInvalidArgument);
    }
  }
}

TEST_CASE("pdf: encrypted files open only when they need no password") {
  auto open_without_password = open_pdf(encrypted_pdf(""));
  REQUIRE(open_without_password.ok());
  CHECK((*open_without_password)->pages().size() == 1);
  auto image = (*open_without_password)->render_page(1);
  REQUIRE(image.ok());
  CHECK(image->width == 600);
  CHECK(image->height == 800);

  auto locked = open_pdf(encrypted_pdf("secret"));
  REQUIRE(locked.status().code() == StatusCode::kInvalidArgument);
  CHECK(locked.status().message().find("password") != std::string::npos);
}

TEST_CASE("pdf: a page over the render time limit is abandoned, bounded process-wide") {
  // Forms that each draw the one below ten times: 10^3 filled page-size paths, seconds of CPU
  // in a few hundred bytes.
  PdfWriter writer;
  int form = writer.add(PdfWriter::stream("0.5 g 0 0 m 300 400 l 0 400 l h f",
                                          "/Type /XObject /Subtype /Form /BBox [0 0 300 400]"));
  for (int level = 0; level < 3; ++level) {
    std::string draw;
    for (int i = 0; i < 10; ++i) draw += "/F Do ";
    form = writer.add(PdfWriter::stream(
        draw, "/Type /XObject /Subtype /Form /BBox [0 0 300 400] /Resources << /XObject << /F " +
                  std::to_string(form) + " 0 R >> >>"));
  }
  const std::string slow = make_pdf(
      {TestPage{300, 400, 0, "/F Do", "/XObject << /F " + std::to_string(form) + " 0 R >>"},
       TestPage{300, 400, 0, ""}},
      "", writer);
  PdfLimits limits;
  limits.render_timeout = std::chrono::milliseconds(100);
  limits.max_abandoned_renders = 1;
  auto document = open_pdf(slow, limits);
  REQUIRE(document.ok());

  const auto start = std::chrono::steady_clock::now();
  auto image = (*document)->render_page(1);
  const auto waited = std::chrono::steady_clock::now() - start;
  REQUIRE(image.status().code() == StatusCode::kInvalidArgument);
  CHECK(image.status().message().find("did not render within 100 ms") != std::string::npos);
  CHECK(waited < std::chrono::seconds(2));
  CHECK(abandoned_pdf_renders() == 1);

  // The same document refuses at once while its abandoned page runs; another document is
  // refused with "retry later" while the process-wide allowance is used up.
  CHECK((*document)->render_page(2).status().code() == StatusCode::kInvalidArgument);
  auto other = open_pdf(make_pdf({TestPage{100, 100, 0, ""}}), limits);
  REQUIRE(other.ok());
  auto refused = (*other)->render_page(1);
  CHECK(refused.status().code() == StatusCode::kResourceExhausted);
  CHECK(refused.status().http_status() == 429);

  // The abandoned render ends by itself and gives its place back.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (abandoned_pdf_renders() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  REQUIRE(abandoned_pdf_renders() == 0);
  CHECK((*other)->render_page(1).ok());
  CHECK((*document)->render_page(2).ok());
}

TEST_CASE("pdf: pages of one document rendered at once take turns, each within its own limit") {
  // A page of 10^2 filled paths: a fraction of a second each.
  PdfWriter writer;
  int form = writer.add(PdfWriter::stream("0.5 g 0 0 m 300 400 l 0 400 l h f",
                                          "/Type /XObject /Subtype /Form /BBox [0 0 300 400]"));
  for (int level = 0; level < 2; ++level) {
    std::string draw;
    for (int i = 0; i < 10; ++i) draw += "/F Do ";
    form = writer.add(PdfWriter::stream(
        draw, "/Type /XObject /Subtype /Form /BBox [0 0 300 400] /Resources << /XObject << /F " +
                  std::to_string(form) + " 0 R >> >>"));
  }
  const TestPage page{300, 400, 0, "/F Do", "/XObject << /F " + std::to_string(form) + " 0 R >>"};
  constexpr int kPages = 10;
  const std::string pdf = make_pdf(std::vector<TestPage>(kPages, page), "", writer);
  auto probe = open_pdf(pdf);
  REQUIRE(probe.ok());
  const auto start = std::chrono::steady_clock::now();
  REQUIRE((*probe)->render_page(1).ok());
  const auto one = std::chrono::steady_clock::now() - start;

  // Each page may take 4x one render; all ten waiting on one another would need 10x.
  PdfLimits limits;
  limits.render_timeout = std::max(std::chrono::milliseconds(200),
                                   std::chrono::duration_cast<std::chrono::milliseconds>(one * 4));
  auto document = open_pdf(pdf, limits);
  REQUIRE(document.ok());
  std::vector<Status> results(kPages);
  std::vector<std::thread> threads;
  for (int i = 0; i < kPages; ++i) {
    threads.emplace_back([&, i] { results[i] = (*document)->render_page(i + 1).status(); });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kPages; ++i) {
    INFO("page " << i + 1 << ": " << results[i].message());
    CHECK(results[i].ok());
  }
  CHECK(abandoned_pdf_renders() == 0);
}

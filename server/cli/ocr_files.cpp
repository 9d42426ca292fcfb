#include "server/cli/ocr_files.h"

#include <cstdio>
#include <fstream>
#include <system_error>

#include <nlohmann/json.hpp>

#include "common/files.h"
#include "common/flags.h"
#include "server/page_result.h"

namespace dsocr::cli {
namespace fs = std::filesystem;

std::string page_stem(int page_number) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "page_%04d", page_number);
  return buf;
}

DocumentPaths::DocumentPaths(const fs::path& out_dir, std::string stem)
    : name(std::move(stem)),
      dir(out_dir / name),
      images_dir(dir / "images"),
      markdown(out_dir / (name + ".md")),
      blocks(out_dir / (name + ".blocks.json")) {}

fs::path DocumentPaths::page_markdown(int page_number) const {
  return dir / (page_stem(page_number) + ".md");
}
fs::path DocumentPaths::page_json(int page_number) const {
  return dir / (page_stem(page_number) + ".json");
}
fs::path DocumentPaths::page_boxes(int page_number) const {
  return dir / (page_stem(page_number) + "_boxes.png");
}

bool page_done(const DocumentPaths& paths, int page_number) {
  std::error_code ec;
  if (!fs::is_regular_file(paths.page_markdown(page_number), ec)) return false;
  auto bytes = read_file_bytes(paths.page_json(page_number));
  if (!bytes.ok()) return false;
  auto page = nlohmann::json::parse(*bytes, nullptr, /*allow_exceptions=*/false);
  if (!page.is_object()) return false;
  auto number = page.find("page_number");
  return number != page.end() && number->is_number_integer() &&
         number->get<int64_t>() == page_number && page.contains("text") && page.contains("blocks");
}

Status write_file_atomically(const fs::path& path, std::string_view bytes) {
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  if (ec) return internal_error("cannot create " + path.parent_path().string());
  // A fixed name per target: a run killed mid-write leaves at most this file, which the rerun that
  // redoes the page overwrites.
  fs::path temp = path.parent_path() / ("." + path.filename().string() + ".tmp");
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out) return internal_error("cannot write " + temp.string());
  }
  fs::rename(temp, path, ec);
  if (ec) return internal_error("cannot rename " + temp.string() + ": " + ec.message());
  return Status();
}

namespace {

// A path segment as a markdown link target can carry it: unreserved bytes as they are, every
// other byte (spaces, parentheses, UTF-8) percent-encoded.
std::string link_segment(std::string_view name) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : name) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

void replace_all(std::string* text, std::string_view from, std::string_view to) {
  size_t at = 0;
  while ((at = text->find(from, at)) != std::string::npos) {
    text->replace(at, from.size(), to);
    at += to.size();
  }
}

}  // namespace

std::string document_markdown(const std::vector<std::string>& page_markdown, bool pdf,
                              std::string_view name) {
  std::string out;
  for (const std::string& page : page_markdown) {
    out += page;
    if (pdf) out += server::kPageSplitMarker;
  }
  replace_all(&out, "![](images/", "![](" + link_segment(name) + "/images/");
  return out;
}

StatusOr<vision::PdfPageRange> parse_page_range(std::string_view text) {
  auto bad = [&] {
    return invalid_argument("--pages must be N, N-M or N- (1-based), got '" + std::string(text) +
                            "'");
  };
  vision::PdfPageRange range;
  const size_t dash = text.find('-');
  auto first = parse_int64(text.substr(0, dash));
  if (!first.ok() || *first < 1 || *first > (1 << 30)) return bad();
  range.first = static_cast<int>(*first);
  if (dash == std::string_view::npos) {
    range.last = range.first;
    return range;
  }
  std::string_view rest = text.substr(dash + 1);
  if (rest.empty()) return range;  // "N-": to the end
  auto last = parse_int64(rest);
  if (!last.ok() || *last < *first || *last > (1 << 30)) return bad();
  range.last = static_cast<int>(*last);
  return range;
}

}  // namespace dsocr::cli

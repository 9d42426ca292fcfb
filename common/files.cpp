#include "common/files.h"

#include <fstream>
#include <sstream>

namespace dsocr {

StatusOr<std::string> read_file_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found("cannot open " + path.string());
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return Status(StatusCode::kInternal, "cannot read " + path.string());
  return buffer.str();
}

}  // namespace dsocr

#include "server/playground.h"

namespace dsocr::server {
namespace {

std::string content_type_of(std::string_view name) {
  auto ends_with = [&](std::string_view suffix) { return name.ends_with(suffix); };
  if (ends_with(".html")) return "text/html; charset=utf-8";
  if (ends_with(".js")) return "text/javascript; charset=utf-8";
  if (ends_with(".css")) return "text/css; charset=utf-8";
  if (ends_with(".svg")) return "image/svg+xml";
  // A file type nobody taught this function: served, but never sniffed into something runnable.
  return "application/octet-stream";
}

std::vector<PlaygroundAsset> make_assets() {
  std::vector<PlaygroundAsset> assets;
  for (const EmbeddedFile& file : playground_files()) {
    PlaygroundAsset asset{.path = file.name == "index.html" ? "/" : "/" + std::string(file.name),
                          .content_type = content_type_of(file.name),
                          .body = file.bytes};
    if (asset.path == "/")
      assets.insert(assets.begin(), std::move(asset));
    else
      assets.push_back(std::move(asset));
  }
  return assets;
}

}  // namespace

// blob: for the preview of the picked image (URL.createObjectURL); connect-src 'self' for the API
// calls; nothing else may load, run or frame the page.
const char kPlaygroundContentSecurityPolicy[] =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const std::vector<PlaygroundAsset>& playground_assets() {
  static const std::vector<PlaygroundAsset> assets = make_assets();
  return assets;
}

http::HttpResponse playground_response(const PlaygroundAsset& asset) {
  http::HttpResponse r;
  r.content_type = asset.content_type;
  r.body = std::string(asset.body);
  r.set_header("Cache-Control", "no-cache");
  r.set_header("Content-Security-Policy", kPlaygroundContentSecurityPolicy);
  r.set_header("X-Content-Type-Options", "nosniff");
  r.set_header("Referrer-Policy", "no-referrer");
  return r;
}

}  // namespace dsocr::server

// The web playground (issue #20): static files from server/playground/, built into the binary by
// cmake/DsocrEmbedFiles.cmake, served by dsocr-server at GET / (index.html) and GET /NAME (the
// other files).
//
// The files are public: a browser loads them before the user has typed an API key, which the page
// then sends on its own API calls. Every answer carries a Content-Security-Policy that allows
// nothing outside the server's own origin (no CDN, no inline script or style, no framing), and
// "Cache-Control: no-cache": the files change with the binary, so a browser must revalidate
// rather than keep a stale page next to a newer API.
//
// Thread-safety: everything here is immutable after static initialization.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "server/http/http_message.h"

namespace dsocr::server {

// One file built into the binary (what the generated source lists).
struct EmbeddedFile {
  std::string_view name;   // path relative to server/playground/, e.g. "playground.js"
  std::string_view bytes;  // the file's content, exactly
};

// Defined by the source that the build generates from server/playground/.
std::span<const EmbeddedFile> playground_files();

// One route of the playground.
struct PlaygroundAsset {
  std::string path;          // the URL path: "/" for index.html, "/NAME" for the others
  std::string content_type;  // from the file's extension
  std::string_view body;
};

// Every route of the playground, index first.
const std::vector<PlaygroundAsset>& playground_assets();

// The Content-Security-Policy every playground answer carries.
extern const char kPlaygroundContentSecurityPolicy[];

// The whole 200 answer for `asset`, with its security and caching headers.
http::HttpResponse playground_response(const PlaygroundAsset& asset);

}  // namespace dsocr::server

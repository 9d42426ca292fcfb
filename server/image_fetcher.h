// ImageFetcher: the bytes behind an image_url, from a data: URI, an http(s) URL or a file:// URL.
//
// data: URIs are size-checked from their length before any decoding. http(s) fetches (libcurl)
// have connect and total timeouts, a byte cap (enforced while receiving, not after), a redirect
// cap and a content-type check. Server-side request forgery is refused: every hop's host is
// resolved once, every address it resolves to must be public (no loopback, private, link-local
// (cloud metadata), CGNAT, multicast or reserved ranges, IPv4-mapped forms included) unless
// allow_private_addresses, and curl connects to exactly the address that was checked (no second
// DNS lookup an attacker could answer differently). Redirects are followed by hand so that each
// target is checked the same way. file:// is refused unless allowed_local_media_dir is set, and
// then only for files whose real path (symlinks resolved) lies below it.
//
// Errors: kInvalidArgument (bad or refused URL, fetch failure, not an image) and
// kPayloadTooLarge (over max_bytes), each naming the URL's scheme and host, never its query.
//
// Thread-safety: fetch() may run concurrently; each call uses its own curl handle. It blocks the
// calling thread (an HTTP worker) for at most about total_timeout_ms per hop.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace dsocr::server {

struct ImageFetchOptions {
  int64_t max_bytes = 32ll << 20;  // the vision decoder's own limit on encoded images
  int64_t connect_timeout_ms = 5'000;
  int64_t total_timeout_ms = 30'000;
  int64_t max_redirects = 3;
  bool allow_private_addresses = false;
  std::string allowed_local_media_dir;  // empty: file:// URLs are refused
};

struct FetchControl {  // TEMP until fetch merges
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  std::function<bool()> cancelled;
};

class ImageFetcher {
 public:
  explicit ImageFetcher(ImageFetchOptions options);
  StatusOr<std::string> fetch(std::string_view url) const;
  StatusOr<std::string> fetch(std::string_view url, const FetchControl&) const {
    return fetch(url);
  }
  const ImageFetchOptions& options() const { return options_; }

 private:
  StatusOr<std::string> fetch_http(std::string_view url) const;
  StatusOr<std::string> read_local_file(std::string_view url) const;

  ImageFetchOptions options_;
};

// "data:[<media type>][;params];base64,<data>" -> bytes. Standard or URL-safe alphabet, padding
// optional, ASCII whitespace ignored.
StatusOr<std::string> decode_data_uri(std::string_view uri, int64_t max_bytes);

// Whether a numeric IPv4 or IPv6 address may be fetched from by default (not loopback, private,
// link-local, CGNAT, multicast, unspecified, reserved or documentation space).
bool is_public_address(std::string_view numeric_address);

}  // namespace dsocr::server

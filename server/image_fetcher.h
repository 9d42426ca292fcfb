// ImageFetcher: the bytes behind an image_url, from a data: URI, an http(s) URL or a file:// URL.
//
// data: URIs are size-checked from their length before any decoding. http(s) fetches (libcurl)
// have a connect timeout, a byte cap (enforced while receiving, not after), a redirect cap and a
// content-type check. Server-side request forgery is refused: every hop's host is resolved once,
// every address it resolves to must be public (no loopback, private, link-local (cloud metadata),
// CGNAT, multicast or reserved ranges, nor any IPv6 form that embeds such an IPv4 address) unless
// allow_private_addresses, and curl connects to exactly the address that was checked (no second
// DNS lookup an attacker could answer differently). Redirects are followed by hand so that each
// target is checked the same way. file:// is refused unless allowed_local_media_dir is set, and
// then only for files whose real path (symlinks resolved) lies below it.
//
// Time: one fetch() call, redirects and DNS included, ends by the earlier of the FetchControl's
// deadline and total_timeout_ms after the call began; a caller shares one deadline between all of
// a request's images by passing the same FetchControl. cancelled() is polled about every 50 ms
// (while resolving, connecting and receiving), so a fetch stops soon after its client leaves.
//
// Errors: kInvalidArgument (bad or refused URL, fetch failure, not an image), kPayloadTooLarge
// (over max_bytes), kDeadlineExceeded (out of time), kCancelled (cancelled() said so) and
// kResourceExhausted (too many abandoned DNS lookups still running; retry later), each naming the
// URL's scheme and host, never its query.
//
// Thread-safety: fetch() may run concurrently; each call uses its own curl handles. It blocks the
// calling thread (an HTTP worker) until the bytes arrive, the deadline passes or cancelled().
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace dsocr::server {

// Host name -> numeric addresses, the way getaddrinfo answers (called on a helper thread).
using HostResolver = std::function<StatusOr<std::vector<std::string>>(const std::string& host,
                                                                      const std::string& port)>;

struct ImageFetchOptions {
  int64_t max_bytes = 32ll << 20;      // the vision decoder's own limit on encoded images
  int64_t connect_timeout_ms = 5'000;  // per connection attempt, within the deadline
  int64_t total_timeout_ms = 30'000;   // per fetch() call, redirects and DNS included
  int64_t max_redirects = 3;
  bool allow_private_addresses = false;
  std::string allowed_local_media_dir;  // empty: file:// URLs are refused
  HostResolver resolver;  // empty: the system's (getaddrinfo); tests substitute their own
};

// What bounds a fetch besides its own limits. Both default to "nothing".
struct FetchControl {
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  std::function<bool()> cancelled;  // may be empty; polled often (every ~50-100 ms at most)
};

class ImageFetcher {
 public:
  explicit ImageFetcher(ImageFetchOptions options);
  // Bounded by control.deadline, total_timeout_ms from now, and control.cancelled.
  StatusOr<std::string> fetch(std::string_view url, const FetchControl& control) const;
  // The same with no deadline beyond total_timeout_ms and no cancellation.
  StatusOr<std::string> fetch(std::string_view url) const;
  const ImageFetchOptions& options() const { return options_; }

 private:
  StatusOr<std::string> fetch_http(std::string_view url, const FetchControl& control) const;
  StatusOr<std::string> read_local_file(std::string_view url) const;

  ImageFetchOptions options_;
};

// "data:[<media type>][;params];base64,<data>" -> bytes. Standard or URL-safe alphabet, padding
// optional, ASCII whitespace ignored.
StatusOr<std::string> decode_data_uri(std::string_view uri, int64_t max_bytes);

// Whether a numeric IPv4 or IPv6 address may be fetched from by default (not loopback, private,
// link-local, CGNAT, multicast, unspecified, reserved or documentation space). IPv6 addresses
// that embed an IPv4 address (mapped ::ffff:a.b.c.d, translated ::ffff:0:a.b.c.d, NAT64
// 64:ff9b::/96, 6to4 2002::/16, Teredo 2001::/32) are judged by the IPv4 address they reach;
// the deprecated IPv4-compatible ::/96 and local-use NAT64 64:ff9b:1::/48 (whose IPv4 position
// depends on a local prefix length) are refused whole.
bool is_public_address(std::string_view numeric_address);

}  // namespace dsocr::server

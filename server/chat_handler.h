// ChatHandler: POST /v1/chat/completions, from the request body to the OpenAI-shaped answer.
//
//   parse + validate (400 naming the field) -> model check (404) -> fetch images and files
//   (400/413) -> open a PDF (400/413 for its limits) -> engine submit (429/503 with Retry-After
//   when full or not ready) -> wait for the engine's "accepted" event (so bad images and context
//   overflows are still a 4xx, within milliseconds) -> either one JSON body, or an SSE stream:
//   role chunk, content chunks, the finish chunk, the usage chunk when asked, "data: [DONE]",
//   with ": keep-alive" comments while nothing happens.
//
// Pages: a request is one engine request (its images in one prompt), except a PDF, whose every
// selected page is its own engine request (batched with everything else, sharing the prefix
// cache). At most max_pages_in_flight pages of one request are with the engine at once; the next
// is submitted as one finishes (a page refused for a full pending-image budget is retried, with
// keep-alives, for up to page_submit_patience_ms), so a 200-page PDF holds the pixels of a few
// pages only. Pages are answered in order: the page being read streams token by token, later
// pages that finish first wait in their streams. The content is every page's text followed by
// the official page-split marker (spec §11.3); the answer's `pages` array (server/page_result.h)
// has each page's size and grounding blocks, and in a stream each page's last chunk carries its
// page object. A page that fails fails the request with an error naming the page: in a stream, an
// error event after the pages before it, then [DONE]; a JSON answer as soon as the failure is
// known, even while an earlier page is still being read. No page after a failed one is started.
// Later pages are still submitted while the engine drains (GenerateRequest::later_page), so a
// document in flight at SIGTERM finishes. A request with exactly one image has one page object
// as well.
//
// The client going away cancels the request at whatever stage it is in: image fetches stop
// (one deadline covers all of a request's fetches), and the engine request is cancelled whether it
// is still being prepared, waiting or running, which frees its KV cache on the engine's next step.
// The client is probed (http::Exchange::client_gone) at least every disconnect_poll_ms while
// anything waits, and every failed write counts too. Stop strings end generation early: the
// request is cancelled and the completion cut before them. Nothing here throws to the transport;
// internal failures are 500s (or a mid-stream error event). How an engine failure is answered
// follows its typed reason (engine_failure_error in server/openai_errors.h): a failed engine step
// is a 500 naming the request id, or an error event when the stream has begun, and counts in
// dsocr_request_failures_total{reason="step_failed"}.
//
// Thread-safety: one ChatHandler serves all handler threads concurrently; per-request state lives
// on the handling thread.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "engine/engine.h"
#include "server/chat_request.h"
#include "server/image_fetcher.h"
#include "server/server_metrics.h"

namespace dsocr::server::http {
class Exchange;
}  // namespace dsocr::server::http

namespace dsocr::server {

struct ChatHandlerOptions {
  std::string model_id;  // requests must name it
  ChatLimits limits;
  ImageFetchOptions fetch;
  int64_t keepalive_interval_ms = 5'000;      // SSE comment while no token arrives
  int64_t disconnect_poll_ms = 100;           // how often a waiting request probes its client
  engine::DocumentLimits document;            // PDFs: bytes, pages, pixels, render time
  int64_t max_pages_in_flight = 16;           // pages of one request with the engine at once
  int64_t page_submit_patience_ms = 120'000;  // retrying a later page the budget refuses
};

// What the handler needs from the running server. The engine appears once loaded; its tokenizer
// (Engine::tokenizer()) turns the completion's ids into text.
struct ServingState {
  std::function<std::shared_ptr<engine::Engine>()> engine;  // null while loading
  std::function<bool()> draining;
};

class ChatHandler {
 public:
  ChatHandler(ChatHandlerOptions options, ServingState state, ServerMetrics* metrics);
  // Answers one request; `request_id` is echoed in X-Request-Id and prefixes its log lines.
  void handle(http::Exchange& exchange, const std::string& request_id);

  // Chat requests between arrival and their last byte written (for draining).
  int64_t active() const { return active_.load(); }

 private:
  struct Page;
  struct Call;
  void run(Call& call);
  void answer_json(Call& call);
  void stream(Call& call, std::string pending);

  ChatHandlerOptions options_;
  ServingState state_;
  ServerMetrics* metrics_;
  ImageFetcher fetcher_;
  std::atomic<int64_t> active_{0};
};

}  // namespace dsocr::server

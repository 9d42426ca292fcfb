// ChatHandler: POST /v1/chat/completions, from the request body to the OpenAI-shaped answer.
//
//   parse + validate (400 naming the field) -> model check (404) -> fetch images (400/413) ->
//   engine submit (429/503 with Retry-After when full or not ready) -> wait for the engine's
//   "accepted" event (so bad images and context overflows are still a 4xx, within milliseconds)
//   -> either one JSON body, or an SSE stream: role chunk, content chunks, the finish chunk, the
//   usage chunk when asked, "data: [DONE]", with ": keep-alive" comments while nothing happens.
//
// The client going away (noticed by probing its socket while waiting, and by failed writes while
// streaming) cancels the request, which frees its KV cache on the engine's next step. Stop
// strings end generation early: the request is cancelled and the completion cut before them.
// Nothing here throws to cpp-httplib; internal failures are 500s (or a mid-stream error event).
//
// Thread-safety: one ChatHandler serves all HTTP worker threads concurrently; per-request state
// lives on the handling thread (and, for streams, in the content provider it installs).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "engine/engine.h"
#include "server/chat_request.h"
#include "server/image_fetcher.h"
#include "server/server_metrics.h"
#include "tokenizer/tokenizer.h"

namespace httplib {
struct Request;
struct Response;
}  // namespace httplib

namespace dsocr::server {

struct ChatHandlerOptions {
  std::string model_id;  // requests must name it
  ChatLimits limits;
  ImageFetchOptions fetch;
  int64_t keepalive_interval_ms = 5'000;  // SSE comment while no token arrives
  int64_t disconnect_poll_ms = 100;       // how often a waiting request probes its client
};

// What the handler needs from the running server; the engine and tokenizer appear once loaded.
struct ServingState {
  std::function<std::shared_ptr<engine::Engine>()> engine;  // null while loading
  std::function<std::shared_ptr<const tokenizer::Tokenizer>()> tokenizer;
  std::function<bool()> draining;
};

class ChatHandler {
 public:
  ChatHandler(ChatHandlerOptions options, ServingState state, ServerMetrics* metrics);
  void handle(const httplib::Request& req, httplib::Response& res);

  // Chat requests between arrival and their last byte written (for draining).
  int64_t active() const { return active_.load(); }

 private:
  struct Call;
  void run(Call& call, const httplib::Request& req, httplib::Response& res);

  ChatHandlerOptions options_;
  ServingState state_;
  ServerMetrics* metrics_;
  ImageFetcher fetcher_;
  std::atomic<int64_t> active_{0};
};

// Sets an OpenAI error body and status; 429 and 503 get a Retry-After header.
void send_api_error(httplib::Response& res, const ApiError& error);

}  // namespace dsocr::server

#include "server/chat_handler.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "common/logging.h"
#include "common/version.h"
#include "server/completion_text.h"
#include "server/http/http_listener.h"
#include "server/openai_errors.h"
#include "server/page_result.h"
#include "server/sse_writer.h"
#include "tokenizer/ocr_prompt.h"

namespace dsocr::server {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

const std::string& system_fingerprint() {
  static const std::string fingerprint = std::string("dsocr-") + version();
  return fingerprint;
}

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// OpenAI's finish_reason for an engine finish; a detected loop is a "stop" with a stop_reason.
std::string_view openai_finish_reason(engine::FinishReason reason) {
  return reason == engine::FinishReason::kLength ? "length" : "stop";
}

json usage_json(const engine::Usage& u, int64_t completion_tokens) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", u.prompt_tokens + completion_tokens},
          {"prompt_tokens_details",
           {{"cached_tokens", u.cached_tokens}, {"image_tokens", u.image_tokens}}}};
}

// The SSE error event: {"error": {"message", "type", "param", "code"}}, the same object an error
// response's body holds.
json error_event(const ApiError& error) {
  return json::parse(openai_error_body(error.status, error.param, error.code));
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace

// One engine request of a call: the call's only one, or one page of a PDF.
struct ChatHandler::Page {
  int page_number = 1;                             // in the document
  std::optional<engine::GenerateRequest> request;  // until submitted (PDF pages: built then)
  std::shared_ptr<engine::RequestStream> stream;
  Status submit_error;  // the engine refused it (final)
  // Events of a page ahead of the one being read, taken from its stream once it ended (to see
  // early that it failed); read before the stream's own.
  std::deque<engine::StreamEvent> early_events;
  bool ended_ahead = false;  // its final event is in early_events
  std::optional<CompletionText> text;
  std::string content;  // the page's text so far
  int64_t completion_tokens = 0;
  int width = 0, height = 0;  // of the image the boxes refer to; 0 when there is none
  bool finished = false;
  bool stopped_by_string = false;  // a stop string ended it (so its cancellation is no error)
  engine::StreamEvent final_event;
  Clock::time_point last_token;  // for the inter-token latency of tokens read as they come
};

// One request's state, on its handler thread.
struct ChatHandler::Call {
  ChatHandler* handler = nullptr;
  http::Exchange* exchange = nullptr;
  std::string request_id;
  std::string id;  // chatcmpl-<request id>
  ChatRequest request;
  std::shared_ptr<engine::Engine> engine;
  std::shared_ptr<const tokenizer::Tokenizer> tokenizer;
  std::vector<int32_t> end_ids;
  std::shared_ptr<const engine::Document> document;  // a PDF request's
  engine::GenerateRequest page_template;             // a PDF page's request, less its image
  std::vector<Page> pages;
  size_t current = 0;    // the page being read; all before it are finished
  size_t submitted = 0;  // pages [0, submitted) were given to the engine (or refused)
  // The first page known to have failed ahead of the one being read: no page after it is
  // submitted, and a JSON answer fails at once.
  size_t failed_ahead = SIZE_MAX;
  Clock::time_point budget_refused_since{};  // while pages[submitted] waits for the budget
  Clock::time_point next_submit_try{};       // refused pages are retried this often, not per event
  Clock::time_point arrived = Clock::now();
  int64_t created = std::chrono::duration_cast<std::chrono::seconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
  int64_t completion_tokens = 0;
  engine::Usage usage;  // summed over the finished pages
  bool client_left = false;
  bool logged = false;

  ~Call() {
    for (Page& page : pages)  // the client left or the server is stopping
      if (page.stream && !page.finished) page.stream->cancel();
    --handler->active_;
  }

  http::Headers headers() const { return {{"X-Request-Id", request_id}}; }
  bool pdf() const { return document != nullptr; }
  // Whether the answer has page objects: a PDF, or exactly one image.
  bool has_page_objects() const { return pdf() || request.images.size() == 1; }
  bool finished() const { return current >= pages.size(); }

  bool gone() {
    if (!client_left && exchange->client_gone()) client_left = true;
    return client_left;
  }

  // Gives the engine the pages after the last submitted, up to max_pages_in_flight ahead of the
  // page being read and never past a page that failed. The first page's refusal is final (the
  // client gets the engine's 429/503); a later page's refusal for the pending-image budget is
  // retried every disconnect_poll_ms, for up to page_submit_patience_ms.
  void submit_pages() {
    const size_t window = static_cast<size_t>(handler->options_.max_pages_in_flight);
    const auto now = Clock::now();
    if (now < next_submit_try) return;
    while (submitted < pages.size() && submitted < current + window && submitted <= failed_ahead) {
      Page& page = pages[submitted];
      engine::GenerateRequest g;
      if (page.request) {
        g = std::move(*page.request);
        page.request.reset();
      } else {
        g = page_template;
        g.request_id = request_id + "-p" + std::to_string(page.page_number);
        g.later_page = submitted > 0;  // a draining engine still takes it
        g.images.push_back(engine::ImageSource::pdf_page(document, page.page_number));
      }
      auto stream = engine->submit(std::move(g));
      if (!stream.ok()) {
        const Status& s = stream.status();
        if (submitted > 0 && s.code() == StatusCode::kResourceExhausted) {
          if (budget_refused_since == Clock::time_point{}) budget_refused_since = now;
          const auto patience = milliseconds(handler->options_.page_submit_patience_ms);
          if (now - budget_refused_since < patience) {
            next_submit_try = now + milliseconds(handler->options_.disconnect_poll_ms);
            return;
          }
        }
        page.submit_error = s;
        failed_ahead = std::min(failed_ahead, submitted);
        ++submitted;
        return;
      }
      budget_refused_since = {};
      page.stream = *stream;
      page.text.emplace(tokenizer, request.skip_special_tokens, end_ids, request.stop);
      ++submitted;
    }
  }

  // Takes the events of pages ahead of `current` whose requests have ended, so that a failed one
  // is seen now rather than when its turn comes (its events are bounded by its max_tokens).
  void collect_ended_pages() {
    for (size_t i = current + 1; i < submitted; ++i) {
      Page& page = pages[i];
      if (!page.stream || page.ended_ahead || !page.stream->ended()) continue;
      while (auto e = page.stream->next(milliseconds(0))) {
        const bool final = e->finished;
        const bool failed = final && e->finish_reason == engine::FinishReason::kError;
        page.early_events.push_back(std::move(*e));
        if (!final) continue;
        page.ended_ahead = true;
        if (failed) failed_ahead = std::min(failed_ahead, i);
        break;
      }
    }
  }

  // The next event of `page`, probing the client at least every disconnect_poll_ms (also while
  // events keep arriving) and submitting pages as room frees; nullopt when the client left or
  // max_wait_ms passed. A page the engine refused yields its final error event. `*live` says
  // whether the event was read as it came (not taken early: see collect_ended_pages).
  std::optional<engine::StreamEvent> next_event(Page& page, int64_t max_wait_ms,
                                                bool* live = nullptr) {
    if (live) *live = false;
    if (!page.early_events.empty()) {
      engine::StreamEvent e = std::move(page.early_events.front());
      page.early_events.pop_front();
      return e;
    }
    const auto poll_every = milliseconds(handler->options_.disconnect_poll_ms);
    const auto deadline = Clock::now() + milliseconds(max_wait_ms);
    auto last_probe = Clock::now() - poll_every;
    for (;;) {
      const auto now = Clock::now();
      if (now - last_probe >= poll_every) {
        last_probe = now;
        if (gone()) return std::nullopt;
        collect_ended_pages();
      }
      submit_pages();  // the window moves as pages finish; refused pages are retried
      if (!page.stream) {
        if (!page.submit_error.ok()) {
          engine::StreamEvent refused;
          refused.finished = true;
          refused.finish_reason = engine::FinishReason::kError;
          refused.error = page.submit_error;
          return refused;
        }
      }
      const auto remaining = std::chrono::duration_cast<milliseconds>(deadline - now);
      const auto wait = std::clamp(remaining, milliseconds(0), poll_every);
      if (!page.stream) {
        std::this_thread::sleep_for(wait);  // waiting for the budget
      } else if (auto e = page.stream->next(wait)) {
        if (live) *live = true;
        return e;
      }
      if (Clock::now() >= deadline) return std::nullopt;
    }
  }

  // An engine event of `page` -> the page's new text; a stop string cancels the page's request
  // here. A final event finishes the page: its usage is added, its page object built.
  std::string take(Page& page, engine::StreamEvent e, bool live = true) {
    if (e.accepted && !pdf() && e.image_sizes.size() == 1) {
      page.width = e.image_sizes[0].width;
      page.height = e.image_sizes[0].height;
    }
    if (!e.token_ids.empty()) {
      // Only gaps between tokens read as they came are latencies; a page read after it finished
      // would add bursts of zeros.
      const auto now = Clock::now();
      if (live && page.completion_tokens > 0 && page.last_token != Clock::time_point{}) {
        handler->metrics_->observe_inter_token_latency(
            std::chrono::duration<double>(now - page.last_token).count());
      }
      page.last_token = live ? now : Clock::time_point{};
    }
    std::string delta;
    if (page.text && !page.text->stopped_by_string()) {
      page.completion_tokens += static_cast<int64_t>(e.token_ids.size());
      completion_tokens += static_cast<int64_t>(e.token_ids.size());
      delta = page.text->push(e.token_ids);
      if (page.text->stopped_by_string()) page.stream->cancel();
    }
    if (e.finished) {
      page.finished = true;
      page.stopped_by_string = page.text && page.text->stopped_by_string();
      page.final_event = std::move(e);
      if (!failure(page)) {
        delta += page.text->finish();
        const engine::Usage& u = page.final_event.usage;
        usage.prompt_tokens += u.prompt_tokens;
        usage.image_tokens += u.image_tokens;
        usage.cached_tokens += u.cached_tokens;
      }
    }
    page.content += delta;
    return delta;
  }

  // A finished page's object (server/page_result.h), when the answer has them.
  std::optional<json> page_object(const Page& page) const {
    if (!has_page_objects() || page.width <= 0 || page.height <= 0) return std::nullopt;
    return page_json({.index = static_cast<int>(&page - pages.data()),
                      .page_number = page.page_number,
                      .width = page.width,
                      .height = page.height,
                      .text = page.content,
                      .finish_reason = finish_reason(page),
                      .pdf_page = pdf(),
                      .markdown = request.markdown});
  }

  // What follows a page's text: the page split after each page of a PDF (spec §11.3).
  std::string page_end() const { return pdf() ? std::string(kPageSplitMarker) : std::string(); }

  // How a finished page failed: refused by the engine, an engine error (by its typed reason), or
  // a cancellation nobody here asked for (the engine draining at shutdown). A stop string's own
  // cancellation is a normal end. A PDF page's error names the page.
  std::optional<ApiError> failure(const Page& page) const {
    std::optional<ApiError> error;
    const engine::FinishReason reason = page.final_event.finish_reason;
    if (!page.submit_error.ok()) {
      error = ApiError{page.submit_error, {}, {}};
    } else if (reason == engine::FinishReason::kError) {
      error = engine_failure_error(page.final_event.failure, page.final_event.error, request_id);
    } else if (reason == engine::FinishReason::kCancelled && !page.stopped_by_string) {
      error = engine_failure_error(engine::FailureReason::kShuttingDown, page.final_event.error,
                                   request_id);
    }
    if (error && pdf()) {
      error->status = error->status.with_context("page " + std::to_string(page.page_number));
    }
    return error;
  }

  std::string_view finish_reason(const Page& page) const {
    return page.stopped_by_string ? "stop" : openai_finish_reason(page.final_event.finish_reason);
  }

  // The call's finish_reason: "length" when any page was cut by max_tokens.
  std::string_view finish_reason() const {
    for (const Page& page : pages)
      if (finish_reason(page) == "length") return "length";
    return "stop";
  }

  // Why generation stopped where the OpenAI reason cannot say (one engine request only).
  json stop_reason() const {
    if (pages.size() != 1) return nullptr;
    if (pages[0].stopped_by_string) return "stop_string";
    if (pages[0].final_event.finish_reason == engine::FinishReason::kLoop) return "repetition_loop";
    return nullptr;
  }

  // The metrics label and log word for how a successful call ended.
  std::string_view outcome() const {
    if (pages.size() != 1) return finish_reason();
    return pages[0].stopped_by_string
               ? "stop"
               : engine::finish_reason_name(pages[0].final_event.finish_reason);
  }

  // The fields every stream chunk shares.
  json chunk(json choices) const {
    json j = {{"id", id},
              {"object", "chat.completion.chunk"},
              {"created", created},
              {"model", handler->options_.model_id},
              {"system_fingerprint", system_fingerprint()},
              {"choices", std::move(choices)}};
    if (request.include_usage) j["usage"] = nullptr;
    return j;
  }

  json choice_chunk(json delta, json finish_reason) const {
    return chunk(json::array({{{"index", 0},
                               {"delta", std::move(delta)},
                               {"logprobs", nullptr},
                               {"finish_reason", std::move(finish_reason)}}}));
  }

  // An error answer (before any 200 was sent).
  void fail(const ApiError& error, const engine::StreamEvent* final_event = nullptr) {
    http::HttpResponse r = error_response(error);
    r.set_header("X-Request-Id", request_id);
    record("error", r.status, final_event);
    exchange->respond(r);
  }

  // The client left before anything was sent: nobody reads an answer, but the transport needs
  // one; 499 is what the logs and metrics show. When it is the server that is stopping, the
  // client is still there and gets a 503 it can retry elsewhere.
  void abandon() {
    if (exchange->server_stopping()) {
      return fail({unavailable("the server is shutting down; retry on another replica"), {}, {}});
    }
    exchange->close_after();
    http::HttpResponse r = error_response(499, "the client closed the request");
    r.set_header("X-Request-Id", request_id);
    record("cancelled", 499);
    exchange->respond(r);
  }

  // The request's summary: one log line and its metrics. `failed_event` is the final event of
  // the page that failed, if one did; the timings are the first page's.
  void record(std::string_view result, int status,
              const engine::StreamEvent* failed_event = nullptr) {
    if (logged) return;
    logged = true;
    log::ScopedRequestId scoped(request_id);
    const engine::StreamEvent* first =
        !pages.empty() && pages[0].finished ? &pages[0].final_event : nullptr;
    const engine::FailureReason failure =
        failed_event ? failed_event->failure : engine::FailureReason::kNone;
    if (failure == engine::FailureReason::kStepFailed) {
      // The client was told only that it failed; the cause is for the operator.
      log::get("chat")->error("{}", failed_event->error.message());
    }
    const engine::Timings t = first ? first->timings : engine::Timings{};
    handler->metrics_->observe_request(
        {.finish_reason = result,
         .failure = failure != engine::FailureReason::kNone ? engine::failure_reason_name(failure)
                                                            : std::string_view(),
         .queue_s = t.queue_ms / 1000,
         .ttft_s = t.ttft_ms / 1000,
         .e2e_s = pages.size() == 1 ? t.total_ms / 1000 : seconds_since(arrived),
         .prepare_s = t.prepare_ms / 1000,
         .encode_s = t.encode_ms / 1000,
         .has_timings = first && t.total_ms > 0});
    log::get("chat")->info(
        "chat {} {}: {} images, {} pages, prompt {} tokens ({} image, {} cached), completion {}, "
        "ttft {:.0f} ms, {:.0f} ms total, finish {}",
        status, request.stream ? "stream" : "json", request.images.size(), pages.size(),
        usage.prompt_tokens, usage.image_tokens, usage.cached_tokens, completion_tokens, t.ttft_ms,
        seconds_since(arrived) * 1000, result);
  }
};

ChatHandler::ChatHandler(ChatHandlerOptions options, ServingState state, ServerMetrics* metrics)
    : options_(std::move(options)),
      state_(std::move(state)),
      metrics_(metrics),
      fetcher_(options_.fetch) {}

void ChatHandler::handle(http::Exchange& exchange, const std::string& request_id) {
  ++active_;
  Call call;
  call.handler = this;
  call.exchange = &exchange;
  call.request_id = request_id;
  call.id = "chatcmpl-" + request_id;
  run(call);
}

void ChatHandler::run(Call& call) {
  const http::HttpRequest& req = call.exchange->request();
  json body = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded())
    return call.fail({invalid_argument("the request body is not valid JSON"), {}, {}});
  if (!body.is_object()) {
    return call.fail({invalid_argument("the request body must be a JSON object"), {}, {}});
  }
  if (ApiError e = parse_chat_request(body, options_.limits, &call.request); !e.ok()) {
    return call.fail(e);
  }
  body = json();  // the images are still in request.images; the parsed tree is not needed
  ChatRequest& r = call.request;
  if (r.model != options_.model_id) {
    return call.fail({not_found("the model '" + r.model + "' does not exist; this server serves '" +
                                options_.model_id + "' (GET /v1/models)"),
                      "model", "model_not_found"});
  }
  auto prompt = r.prompt_text();
  if (!prompt.ok()) return call.fail({prompt.status(), "messages", {}});
  if (state_.draining()) {
    return call.fail(
        {unavailable("the server is shutting down; retry on another replica"), {}, {}});
  }
  call.engine = state_.engine();
  call.tokenizer = call.engine ? call.engine->tokenizer() : nullptr;
  if (!call.engine || !call.tokenizer || call.engine->state() != engine::EngineState::kReady) {
    return call.fail({unavailable("the model is still loading; retry shortly"), {}, {}});
  }
  call.end_ids = r.sampling.stop_token_ids;
  if (auto eos = call.tokenizer->token_to_id(tokenizer::kEosToken)) call.end_ids.push_back(*eos);

  engine::GenerateRequest g;
  g.request_id = call.request_id;
  g.prompt = std::move(prompt).value();
  g.sampling = r.sampling;
  g.cache_salt = r.cache_salt;
  // One deadline for all of the request's fetches; they stop when the client leaves or the
  // server begins to drain.
  FetchControl control;
  control.deadline = Clock::now() + milliseconds(options_.fetch.total_timeout_ms);
  control.cancelled = [&] { return call.gone() || state_.draining(); };
  for (ImageInput& image : r.images) {
    auto bytes = fetcher_.fetch(image.url, control);
    if (call.client_left) return call.abandon();
    if (!bytes.ok()) {
      if (state_.draining()) break;  // answered 503 below
      const StatusCode code = bytes.status().code();
      return call.fail({bytes.status(), image.param,
                        code == StatusCode::kDeadlineExceeded    ? "image_fetch_timeout"
                        : code == StatusCode::kResourceExhausted ? ""
                                                                 : "invalid_image_url"});
    }
    g.images.push_back(std::move(bytes).value());
    image.url = std::string();  // a data: URI can be megabytes; its bytes are in g now
  }
  if (state_.draining()) {
    return call.fail(
        {unavailable("the server is shutting down; retry on another replica"), {}, {}});
  }

  // A PDF becomes one engine request per selected page; anything else is one engine request.
  const auto is_pdf = [](const engine::ImageSource& s) {
    return engine::looks_like_pdf(s.encoded);
  };
  if (auto pdf = std::find_if(g.images.begin(), g.images.end(), is_pdf); pdf != g.images.end()) {
    const std::string& param = r.images[pdf - g.images.begin()].param;
    if (g.images.size() > 1) {
      return call.fail({invalid_argument("a PDF must be the only image or file of its request "
                                         "(send one request per document)"),
                        param,
                        {}});
    }
    auto document = engine::Document::open_pdf(std::move(pdf->encoded), options_.document,
                                               r.pages.value_or(engine::PageRange{}));
    if (!document.ok()) {
      Status s = document.status();
      // A range past the last page is the client's mistake like any other bad field.
      if (s.code() == StatusCode::kOutOfRange)
        return call.fail({invalid_argument(s.message()), "pages", {}});
      return call.fail({s, s.code() == StatusCode::kPayloadTooLarge ? std::string() : param, {}});
    }
    call.document = std::move(document).value();
    g.images.clear();
    call.page_template = std::move(g);
    for (const engine::DocumentPage& p : call.document->pages()) {
      Page& page = call.pages.emplace_back();
      page.page_number = p.number;
      page.width = p.width;
      page.height = p.height;
    }
  } else {
    if (r.pages) {
      return call.fail(
          {invalid_argument("pages: selects pages of a PDF, and this request has none"),
           "pages",
           {}});
    }
    call.pages.emplace_back().request = std::move(g);
  }

  call.submit_pages();
  Page& first_page = call.pages[0];
  if (!first_page.submit_error.ok()) return call.fail({first_page.submit_error, {}, {}});
  // The first event says whether the engine took the request (images decoded, prompt within the
  // context): until then the answer can still be a 4xx.
  std::optional<engine::StreamEvent> first;
  while (!first) {
    first = call.next_event(first_page, options_.keepalive_interval_ms);
    if (call.client_left) return call.abandon();
  }
  // Usually the bare "accepted" event; an engine that sends tokens right away is served too.
  std::string pending = call.take(first_page, std::move(*first));
  if (first_page.finished) {
    if (auto failed = call.failure(first_page)) return call.fail(*failed, &first_page.final_event);
  }
  if (r.stream) return stream(call, std::move(pending));
  answer_json(call);
}

// Non-streaming: every page in order, then one answer; a page that fails (even ahead of the one
// being read) is the answer at once.
void ChatHandler::answer_json(Call& call) {
  std::string content;
  json page_objects = json::array();
  for (; !call.finished(); ++call.current) {
    Page& page = call.pages[call.current];
    while (!page.finished) {
      if (call.failed_ahead < call.pages.size() && call.failed_ahead != call.current) {
        Page& failed = call.pages[call.failed_ahead];
        while (!failed.finished) {
          if (auto e = call.next_event(failed, options_.keepalive_interval_ms)) {
            call.take(failed, std::move(*e), false);
          } else if (call.client_left) {
            return call.abandon();
          }
        }
        return call.fail(*call.failure(failed), &failed.final_event);
      }
      bool live = false;
      auto e = call.next_event(page, options_.keepalive_interval_ms, &live);
      if (call.client_left) return call.abandon();
      if (e) call.take(page, std::move(*e), live);
    }
    if (auto failed = call.failure(page)) return call.fail(*failed, &page.final_event);
    content += page.content;
    content += call.page_end();
    if (auto object = call.page_object(page)) page_objects.push_back(std::move(*object));
  }
  json choice = {{"index", 0},
                 {"message", {{"role", "assistant"}, {"content", content}, {"refusal", nullptr}}},
                 {"logprobs", nullptr},
                 {"finish_reason", call.finish_reason()}};
  if (json reason = call.stop_reason(); !reason.is_null()) choice["stop_reason"] = reason;
  json answer = {{"id", call.id},
                 {"object", "chat.completion"},
                 {"created", call.created},
                 {"model", options_.model_id},
                 {"system_fingerprint", system_fingerprint()},
                 {"choices", json::array({choice})},
                 {"usage", usage_json(call.usage, call.completion_tokens)}};
  if (call.has_page_objects()) answer["pages"] = std::move(page_objects);
  http::HttpResponse response;
  response.headers = call.headers();
  response.body = dump(answer);
  // Recorded before it is sent: a client holding the answer reads metrics that count it.
  call.record(call.outcome(), 200);
  call.exchange->respond(response);
}

void ChatHandler::stream(Call& c, std::string pending) {
  SseWriter sse(*c.exchange);
  // A write that fails means the client left: the request is recorded as cancelled and ~Call
  // cancels it in the engine.
  auto left = [&] {
    if (c.exchange->server_stopping()) {  // the client is still there: tell it why it ends
      sse.event(error_event({unavailable("the server is shutting down; retry"), {}, {}}));
      sse.done();
      c.record("cancelled", 200);
      sse.end();
      return;
    }
    c.record("cancelled", 499);
  };
  if (!sse.start(c.headers())) return left();
  if (!sse.event(c.choice_chunk({{"role", "assistant"}, {"content", ""}}, nullptr))) return left();
  std::string delta = std::move(pending);
  for (; !c.finished(); ++c.current) {
    Page& page = c.pages[c.current];
    while (!page.finished) {
      if (!delta.empty() && !sse.event(c.choice_chunk({{"content", delta}}, nullptr)))
        return left();
      delta.clear();
      bool live = false;
      auto e = c.next_event(page, options_.keepalive_interval_ms, &live);
      if (c.client_left) return left();
      if (!e) {
        if (!sse.keep_alive()) return left();
        continue;
      }
      delta = c.take(page, std::move(*e), live);
    }
    if (auto failed = c.failure(page)) {
      sse.event(error_event(*failed));
      if (!sse.done()) return left();
      return c.record(page.final_event.finish_reason == engine::FinishReason::kCancelled
                          ? "cancelled"
                          : "error",
                      200, &page.final_event);
    }
    // The page's last chunk: the rest of its text, the page split, and its page object. What
    // the page held is freed then: a long document streams in the memory of a few pages.
    delta += c.page_end();
    std::optional<json> object = c.page_object(page);
    if (!delta.empty() || object) {
      json last = c.choice_chunk({{"content", delta}}, nullptr);
      if (object) last["pages"] = json::array({std::move(*object)});
      if (!sse.event(last)) return left();
    }
    delta.clear();
    page.content = std::string();
    page.text.reset();
    page.final_event.prompt_ids = {};
  }
  json last = c.choice_chunk(json::object(), c.finish_reason());
  if (json reason = c.stop_reason(); !reason.is_null()) last["choices"][0]["stop_reason"] = reason;
  if (!sse.event(last)) return left();
  if (c.request.include_usage) {
    json usage = c.chunk(json::array());
    usage["usage"] = usage_json(c.usage, c.completion_tokens);
    if (!sse.event(usage)) return left();
  }
  if (!sse.done()) return left();
  c.record(c.outcome(), 200);
  sse.end();
}

}  // namespace dsocr::server

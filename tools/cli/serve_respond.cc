// fastkv serve: one completion request, from admission to a streamed (SSE) or collected answer.
#include <httplib.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <deque>
#include <filesystem>
#include <functional>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/serve_http.h"
#include "core/parse_number.h"
#include "engine/app.h"
#include "engine/batch.h"
#include "engine/stop_strings.h"
#include "kernels/matmul.h"
#include "kv/method_spec.h"
#include "serve/request.h"
#include "serve/scheduler.h"

namespace fkv::cli::serving {
namespace {

// Detokenises a token stream and applies the stop strings: text that could be the start of a stop
// string is held back until it is known not to be one.
class TextStream {
 public:
  TextStream(const Tokenizer& tok, std::vector<std::string> stops)
      : dec_(tok, /*skip_special_tokens=*/true), stops_(std::move(stops)) {}
  std::string push(int32_t id) { return stops_.push(dec_.push(id)); }
  std::string finish() {
    std::string out = stops_.push(dec_.flush());
    return out + stops_.finish();
  }
  bool stopped() const { return stops_.matched(); }

 private:
  StreamDecoder dec_;
  StopStringMatcher stops_;
};

json usage_json(const Job& j, int completion_tokens) {
  return {{"prompt_tokens", j.prompt.size()},
          {"completion_tokens", completion_tokens},
          {"total_tokens", j.prompt.size() + completion_tokens},
          {"kv_method", j.method_spec},
          {"kv_cache_bytes", j.kv_bytes},
          {"kv_cache_bytes_after_prefill", j.kv_bytes_after_prefill},
          {"kv_cache_bytes_reserved", j.reserve_bytes},
          {"queue_seconds", j.queue_s},
          {"prefill_seconds", j.prefill_s},
          {"decode_seconds", j.decode_s}};
}

// The per-response state an HTTP thread keeps while it streams or collects a job.
struct ResponseState {
  ServeContext* ctx;
  Parsed req;
  std::string id;
  int64_t created;
  TextStream text;
  std::string collected;  // non-streaming: the whole text
  json logprobs_acc;      // non-streaming: accumulated logprobs
  int consumed = 0;       // tokens turned into text
  int text_offset = 0;
  bool ended = false;
  bool role_sent = false;  // chat streams open with a {"role": "assistant"} delta
  std::chrono::steady_clock::time_point last_write = std::chrono::steady_clock::now();
  ResponseState(ServeContext* c, Parsed p)
      : ctx(c),
        req(std::move(p)),
        id(strfmt("%s-%llu", req.chat ? "chatcmpl" : "cmpl",
                  static_cast<unsigned long long>(c->next_id.fetch_add(1)))),
        created(static_cast<int64_t>(std::time(nullptr))),
        text(*c->tok, req.stop) {
    ctx->open_responses.fetch_add(1);
    if (req.chat) {
      logprobs_acc = {{"content", json::array()}};
    } else {
      logprobs_acc = {{"tokens", json::array()},
                      {"token_logprobs", json::array()},
                      {"top_logprobs", json::array()},
                      {"text_offset", json::array()}};
    }
  }
  ~ResponseState() {
    req.job->cancelled.store(true);  // a no-op once finished; frees the sequence otherwise
    ctx->open_responses.fetch_sub(1);
  }

  std::string token_text(int32_t t) const { return ctx->tok->token_bytes(t); }

  // The logprobs of one token in the endpoint's format.
  json token_logprobs(const serve::TokenEvent& ev) {
    if (req.chat) {
      auto bytes_of = [](const std::string& s) {
        json b = json::array();
        for (unsigned char c : s) b.push_back(static_cast<int>(c));
        return b;
      };
      json top = json::array();
      for (const auto& [id, lp] : ev.top) {
        const std::string t = token_text(id);
        top.push_back({{"token", t}, {"logprob", lp}, {"bytes", bytes_of(t)}});
      }
      const std::string t = token_text(ev.id);
      return {{"token", t}, {"logprob", ev.logprob}, {"bytes", bytes_of(t)}, {"top_logprobs", top}};
    }
    json top = json::object();
    for (const auto& [id, lp] : ev.top) top[token_text(id)] = lp;
    return {{"token", token_text(ev.id)}, {"logprob", ev.logprob}, {"top", top}};
  }

  json chunk(const std::string& piece, const json* lp, const char* finish) const {
    json choice = {{"index", 0}};
    if (req.chat) {
      choice["delta"] =
          piece.empty() && finish != nullptr ? json::object() : json{{"content", piece}};
      choice["logprobs"] = lp ? json{{"content", json::array({*lp})}} : json(nullptr);
    } else {
      choice["text"] = piece;
      if (lp) {
        json top = json::array();
        top.push_back((*lp)["top"]);
        choice["logprobs"] = {{"tokens", json::array({(*lp)["token"]})},
                              {"token_logprobs", json::array({(*lp)["logprob"]})},
                              {"top_logprobs", top},
                              {"text_offset", json::array({text_offset})}};
      } else {
        choice["logprobs"] = nullptr;
      }
    }
    choice["finish_reason"] = finish ? json(finish) : json(nullptr);
    return {{"id", id},
            {"object", req.chat ? "chat.completion.chunk" : "text_completion"},
            {"created", created},
            {"model", ctx->model_id},
            {"choices", json::array({choice})}};
  }

  json final_body(const char* finish) const {
    json choice = {{"index", 0}, {"finish_reason", finish}};
    if (req.chat) {
      choice["message"] = {{"role", "assistant"}, {"content", collected}};
      choice["logprobs"] = req.logprobs ? logprobs_acc : json(nullptr);
    } else {
      choice["text"] = collected;
      choice["logprobs"] = req.logprobs ? logprobs_acc : json(nullptr);
    }
    return {{"id", id},
            {"object", req.chat ? "chat.completion" : "text_completion"},
            {"created", created},
            {"model", ctx->model_id},
            {"choices", json::array({choice})},
            {"usage", usage_json(*req.job, consumed)}};
  }

  void accumulate_logprobs(const json& lp) {
    if (req.chat) {
      logprobs_acc["content"].push_back(lp);
    } else {
      logprobs_acc["tokens"].push_back(lp["token"]);
      logprobs_acc["token_logprobs"].push_back(lp["logprob"]);
      logprobs_acc["top_logprobs"].push_back(lp["top"]);
      logprobs_acc["text_offset"].push_back(text_offset);
    }
  }
};

// Waits for the job's next events (or its end) for at most `wait`; moves them out.
bool take_events(Job& job, std::chrono::milliseconds wait, std::deque<serve::TokenEvent>& evs) {
  std::unique_lock<std::mutex> lock(job.mu);
  job.cv.wait_for(lock, wait, [&] { return !job.events.empty() || job.finished; });
  evs.swap(job.events);
  return job.finished && job.events.empty();
}

// After a stop string the HTTP side cancels the job; wait until the scheduler has let it go so
// that usage carries its timing.
void wait_finished(Job& job) {
  std::unique_lock<std::mutex> lock(job.mu);
  job.cv.wait_for(lock, std::chrono::seconds(30), [&] { return job.finished; });
}

constexpr auto kPoll = std::chrono::milliseconds(200);

void respond(ServeContext& ctx, Parsed parsed, httplib::Response& res) {
  auto state = std::make_shared<ResponseState>(&ctx, std::move(parsed));
  const bool stream = state->req.stream;
  res.status = 200;
  auto provider = [state, stream](size_t, httplib::DataSink& sink) -> bool {
    ResponseState& s = *state;
    Job& job = *s.req.job;
    auto write = [&](const std::string& data) {
      if (!sink.write(data.data(), data.size())) {
        job.cancelled.store(true);
        return false;
      }
      return true;
    };
    auto sse = [&](const json& j) {
      s.last_write = std::chrono::steady_clock::now();
      return write("data: " + dump(j) + "\n\n");
    };
    if (s.ended) return false;
    if (stream && s.req.chat && !s.role_sent) {
      s.role_sent = true;
      json first = s.chunk("", nullptr, nullptr);
      first["choices"][0]["delta"] = {{"role", "assistant"}, {"content", ""}};
      if (!sse(first)) return false;
    }
    std::deque<serve::TokenEvent> evs;
    const bool finished = take_events(job, kPoll, evs);
    // Probe the connection when nothing was written for a poll interval (a non-streaming answer
    // writes nothing until the end), so that a client that left is noticed and its sequence
    // freed within a couple of polls. SSE comments and leading JSON whitespace are ignored.
    const auto now = std::chrono::steady_clock::now();
    if (!finished && now - s.last_write >= kPoll) {
      s.last_write = now;
      if (!write(stream ? ": keep-alive\n\n" : " ")) return false;
    }
    if (evs.empty() && !finished) return true;
    for (const auto& ev : evs) {
      if (s.text.stopped()) break;
      std::string piece = s.text.push(ev.id);
      s.consumed += 1;
      json lp;
      const bool with_lp = s.req.logprobs;
      if (with_lp) lp = s.token_logprobs(ev);
      if (stream) {
        if (!sse(s.chunk(piece, with_lp ? &lp : nullptr, nullptr))) return false;
      } else {
        s.collected += piece;
        if (with_lp) s.accumulate_logprobs(lp);
      }
      s.text_offset += static_cast<int>(piece.size());
    }
    if (!s.text.stopped() && !finished) return true;
    std::string finish_reason = "stop";
    if (s.text.stopped()) {
      job.cancelled.store(true);
      wait_finished(job);
    } else {
      std::string error;
      {
        std::lock_guard<std::mutex> lock(job.mu);
        error = job.error;
        finish_reason = job.finish_reason;
      }
      if (!error.empty()) {
        ApiError e;
        e.status = 500;
        e.type = "server_error";
        e.message = error;
        s.ended = true;
        s.ctx->http_5xx.fetch_add(1);
        if (stream) {
          sse(error_json(e));
          write("data: [DONE]\n\n");
        } else {
          write(dump(error_json(e)));
        }
        sink.done();
        return true;
      }
      std::string rest = s.text.finish();
      if (s.text.stopped()) finish_reason = "stop";
      if (!rest.empty()) {
        if (stream) {
          if (!sse(s.chunk(rest, nullptr, nullptr))) return false;
        } else {
          s.collected += rest;
        }
      }
    }
    if (finish_reason == "cancelled") finish_reason = "stop";
    s.ended = true;
    if (stream) {
      if (!sse(s.chunk("", nullptr, finish_reason.c_str()))) return false;
      if (s.req.include_usage) {
        json u = s.chunk("", nullptr, nullptr);
        u["choices"] = json::array();
        u["usage"] = usage_json(job, s.consumed);
        if (!sse(u)) return false;
      }
      if (!write("data: [DONE]\n\n")) return false;
    } else {
      if (!write(dump(s.final_body(finish_reason.c_str())))) return false;
    }
    s.ctx->http_ok.fetch_add(1);
    sink.done();
    return true;
  };
  res.set_chunked_content_provider(stream ? "text/event-stream" : "application/json", provider,
                                   [state](bool success) {
                                     if (!success) state->req.job->cancelled.store(true);
                                   });
  if (stream) res.set_header("Cache-Control", "no-cache");
}

}  // namespace

void handle_completion(ServeContext& ctx, bool chat, const httplib::Request& req,
                       httplib::Response& res) {
  if (!authorised(ctx, req, res)) return;
  if (ctx.scheduler->stopping()) {
    ApiError e;
    e.status = 503;
    e.type = "server_error";
    e.message = "the server is shutting down";
    return send_error(ctx, res, e);
  }
  Parsed parsed;
  if (auto e = parse_request(ctx, req.body, chat, parsed)) return send_error(ctx, res, *e);
  switch (ctx.scheduler->submit(parsed.job)) {
    case Scheduler::Submit::kQueued:
      return respond(ctx, std::move(parsed), res);
    case Scheduler::Submit::kQueueFull: {
      ApiError e;
      e.status = 503;
      e.type = "server_error";
      e.code = "queue_full";
      e.message = "the server's request queue is full; retry later";
      ctx.rejected_queue_full.fetch_add(1);
      return send_error(ctx, res, e);
    }
    case Scheduler::Submit::kStopping: {
      ApiError e;
      e.status = 503;
      e.type = "server_error";
      e.message = "the server is shutting down";
      return send_error(ctx, res, e);
    }
  }
}

}  // namespace fkv::cli::serving

// fastkv serve: an OpenAI-compatible HTTP server (cpp-httplib) over the batched engine step.
// HTTP threads validate a request, turn it into a Job and stream its tokens; one scheduler thread
// (serve/scheduler.h); request validation is serve/request.h owns the model and runs the steps.
// Design: docs/SERVING.md.
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
#include "core/parse_number.h"
#include "engine/app.h"
#include "engine/batch.h"
#include "kernels/matmul.h"
#include "kv/method_spec.h"
#include "serve/request.h"
#include "serve/scheduler.h"

namespace fkv::cli {
namespace {

using json = nlohmann::json;
using serve::ApiError;
using serve::bad;
using serve::dump;
using serve::error_json;
using serve::Job;
using serve::Parsed;
using serve::Scheduler;

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(dump(error_json(e)), "application/json");
}

// ---- the server ----

// The request side's context (model, tokenizer, defaults) and the HTTP side's state.
struct ServeContext : serve::RequestContext {
  Scheduler* scheduler = nullptr;
  std::string model_id;
  std::string api_key;
  std::atomic<uint64_t> next_id{1};
  std::atomic<int> open_responses{0};
  // Prometheus counters of the HTTP side.
  std::atomic<uint64_t> http_ok{0}, http_4xx{0}, http_5xx{0}, rejected_queue_full{0};
};

// send_error, counted in the context's 4xx / 5xx counters.
void send_error(ServeContext& ctx, httplib::Response& res, const ApiError& e) {
  (e.status >= 500 ? ctx.http_5xx : ctx.http_4xx).fetch_add(1);
  send_error(res, e);
}

// Detokenises a token stream and applies the stop strings: text that could be the start of a stop
// string is held back until it is known not to be one.
class TextStream {
 public:
  TextStream(const Tokenizer& tok, std::vector<std::string> stops)
      : dec_(tok, /*skip_special_tokens=*/true), stops_(std::move(stops)) {}
  std::string push(int32_t id) {
    pending_ += dec_.push(id);
    return release(false);
  }
  std::string finish() {
    pending_ += dec_.flush();
    return release(true);
  }
  bool stopped() const { return stopped_; }

 private:
  std::string release(bool all) {
    size_t best = std::string::npos;
    for (const auto& s : stops_) best = std::min(best, pending_.find(s));
    if (best != std::string::npos) {
      stopped_ = true;
      std::string out = pending_.substr(0, best);
      pending_.clear();
      return out;
    }
    size_t hold = 0;
    if (!all) {
      for (const auto& s : stops_) {
        for (size_t k = std::min(s.size() - 1, pending_.size()); k > hold; --k) {
          if (pending_.compare(pending_.size() - k, k, s, 0, k) == 0) {
            hold = k;
            break;
          }
        }
      }
    }
    std::string out = pending_.substr(0, pending_.size() - hold);
    pending_.erase(0, pending_.size() - hold);
    return out;
  }
  StreamDecoder dec_;
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
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
// Bounds on what one connection can hold (docs/SERVING.md, "Bounds"): an idle keep-alive
// connection is closed after kKeepAliveIdleSeconds; a read or write that makes no progress for
// its timeout ends the connection.
constexpr int kKeepAliveIdleSeconds = 5;
constexpr int kReadTimeoutSeconds = 10;
constexpr int kWriteTimeoutSeconds = 10;

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

// The token of an "Authorization: Bearer TOKEN" header (the scheme is case-insensitive, RFC
// 7235), or nullopt for another scheme.
std::optional<std::string> bearer_token(const std::string& h) {
  constexpr std::string_view kScheme = "bearer ";
  if (h.size() < kScheme.size()) return std::nullopt;
  for (size_t i = 0; i < kScheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(h[i])) != kScheme[i]) return std::nullopt;
  }
  // Spaces may follow the scheme; the token itself is taken as sent (a key has no edge spaces,
  // --api-key refuses them, so "KEY " is not the key).
  const size_t begin = h.find_first_not_of(' ', kScheme.size());
  if (begin == std::string::npos) return std::string();
  return h.substr(begin);
}

// Compares every byte whatever the first difference, so the time does not tell how much of a
// guess was right.
bool same_secret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  }
  return diff == 0;
}

bool authorised(ServeContext& ctx, const httplib::Request& req, httplib::Response& res) {
  if (ctx.api_key.empty()) return true;
  const std::string h = req.get_header_value("Authorization");
  if (const auto token = bearer_token(h); token && same_secret(*token, ctx.api_key)) return true;
  ApiError e;
  e.status = 401;
  e.message = h.empty() ? "missing API key: send 'Authorization: Bearer KEY'" : "invalid API key";
  e.code = "invalid_api_key";
  send_error(ctx, res, e);
  return false;
}

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

std::string metrics_text(ServeContext& ctx) {
  const serve::SchedulerMetrics m = ctx.scheduler->metrics();
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help, double value,
                    const char* labels = "") {
    out += strfmt("# HELP %s %s\n# TYPE %s %s\n%s%s %.17g\n", name, help, name, type, name, labels,
                  value);
  };
  out +=
      "# HELP fastkv_http_requests_total HTTP answers by outcome: ok counts completions, the "
      "errors count every endpoint.\n"
      "# TYPE fastkv_http_requests_total counter\n";
  out += strfmt("fastkv_http_requests_total{outcome=\"ok\"} %llu\n",
                static_cast<unsigned long long>(ctx.http_ok.load()));
  out += strfmt("fastkv_http_requests_total{outcome=\"client_error\"} %llu\n",
                static_cast<unsigned long long>(ctx.http_4xx.load()));
  out += strfmt("fastkv_http_requests_total{outcome=\"server_error\"} %llu\n",
                static_cast<unsigned long long>(ctx.http_5xx.load()));
  metric("fastkv_rejected_queue_full_total", "counter",
         "Requests refused with 503 because the queue was full.",
         static_cast<double>(ctx.rejected_queue_full.load()));
  metric("fastkv_sequences_finished_total", "counter",
         "Sequences that ran to a stop or max_tokens.", static_cast<double>(m.jobs_done));
  metric("fastkv_sequences_cancelled_total", "counter",
         "Sequences cancelled (client gone or stop string).",
         static_cast<double>(m.jobs_cancelled));
  metric("fastkv_sequences_failed_total", "counter", "Sequences ended by an engine error.",
         static_cast<double>(m.jobs_failed));
  metric("fastkv_queue_depth", "gauge", "Requests waiting for admission.",
         static_cast<double>(m.queue_depth));
  metric("fastkv_running_sequences", "gauge", "Sequences in the decode batch.",
         static_cast<double>(m.running));
  metric("fastkv_prefilling_sequences", "gauge", "Sequences whose prompt is being prefilled.",
         static_cast<double>(m.prefilling));
  metric("fastkv_last_batch_size", "gauge", "Sequences in the last decode step.", m.last_batch);
  metric("fastkv_decode_tokens_per_second", "gauge",
         "Generated tokens per second of decode step time over the last 5 s.", m.recent_decode_tps);
  metric("fastkv_prompt_tokens_total", "counter", "Prompt tokens prefilled.",
         static_cast<double>(m.prompt_tokens));
  metric("fastkv_generated_tokens_total", "counter", "Tokens generated by finished sequences.",
         static_cast<double>(m.generated_tokens));
  metric("fastkv_decode_steps_total", "counter", "Batched decode steps run.",
         static_cast<double>(m.decode_steps));
  metric("fastkv_prefill_pieces_total", "counter", "Prefill pieces run between decode steps.",
         static_cast<double>(m.prefill_pieces));
  metric("fastkv_prefill_seconds_total", "counter", "Seconds spent in prefill.", m.prefill_s);
  metric("fastkv_decode_seconds_total", "counter", "Seconds spent in batched decode steps.",
         m.decode_s);
  metric("fastkv_kv_bytes_in_use", "gauge", "Bytes of K/V rows held by the running sequences.",
         static_cast<double>(m.kv_bytes_in_use));
  metric("fastkv_kv_bytes_reserved", "gauge",
         "Worst-case cache bytes reserved by admitted sequences.",
         static_cast<double>(m.kv_bytes_reserved));
  metric("fastkv_kv_bytes_limit", "gauge", "The --kv-memory bound (0: none).",
         static_cast<double>(ctx.kv_memory));
  return out;
}

// "512M", "2G", "1048576", "64KiB": binary units.
Expected<size_t> parse_size(const std::string& text, const std::string& what) {
  size_t i = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') ++i;
  std::string unit = text.substr(i);
  for (auto& ch : unit) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  uint64_t mult = 1;
  if (unit.empty() || unit == "B") {
    mult = 1;
  } else if (unit == "K" || unit == "KB" || unit == "KIB") {
    mult = uint64_t{1} << 10;
  } else if (unit == "M" || unit == "MB" || unit == "MIB") {
    mult = uint64_t{1} << 20;
  } else if (unit == "G" || unit == "GB" || unit == "GIB") {
    mult = uint64_t{1} << 30;
  } else if (unit == "T" || unit == "TB" || unit == "TIB") {
    mult = uint64_t{1} << 40;
  } else {
    return Status::error(strfmt("%s: '%s' is not a size (digits with an optional K, M, G or T)",
                                what.c_str(), text.c_str()));
  }
  auto n = parse_uint64(text.substr(0, i), what);
  if (!n)
    return Status::error(strfmt("%s: '%s' is not a size (digits with an optional K, M, G or T)",
                                what.c_str(), text.c_str()));
  if (*n > std::numeric_limits<uint64_t>::max() / mult) {
    return Status::error(strfmt("%s: '%s' is too large", what.c_str(), text.c_str()));
  }
  return static_cast<size_t>(*n * mult);
}

// HTTP connections: one thread each, made on demand up to `max_threads` and kept for reuse; more
// connections wait in FIFO order for a free one. cpp-httplib's fixed pool let idle keep-alive
// connections (each holding its thread up to the keep-alive timeout) starve /health.
class ConnectionThreads : public httplib::TaskQueue {
 public:
  explicit ConnectionThreads(size_t max_threads) : max_threads_(std::max<size_t>(1, max_threads)) {}
  ~ConnectionThreads() override { shutdown(); }
  void enqueue(std::function<void()> fn) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    tasks_.push_back(std::move(fn));
    // Idle threads that have not yet woken still count as idle: start one more whenever the
    // queued tasks outnumber them.
    if (tasks_.size() > idle_ && threads_.size() < max_threads_) {
      threads_.emplace_back([this] { work(); });
    } else {
      cv_.notify_one();
    }
  }
  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_ && threads_.empty()) return;
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

 private:
  void work() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      ++idle_;
      cv_.wait(lock, [&] { return stopping_ || !tasks_.empty(); });
      --idle_;
      if (tasks_.empty()) return;  // stopping, nothing left to run
      auto fn = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      fn();
      lock.lock();
    }
  }
  const size_t max_threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  std::vector<std::thread> threads_;
  size_t idle_ = 0;
  bool stopping_ = false;
};

// Whether another socket listens on host:port (bind fails with EADDRINUSE), for a clear error.
bool port_in_use(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0) return false;
  bool in_use = false;
  for (addrinfo* ai = res; ai != nullptr && !in_use; ai = ai->ai_next) {
    const int fd = ::socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0) continue;
    int yes = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno == EADDRINUSE) in_use = true;
    ::close(fd);
  }
  freeaddrinfo(res);
  return in_use;
}

// The Content-Length header of a request with a body, checked before any of the body is read:
// a malformed or repeated value is a 400, one over --max-body a 413 (cpp-httplib itself would
// wait for the body until its read timeout first).
std::optional<ApiError> check_content_length(const httplib::Request& req, size_t max_body) {
  if (!req.has_header("Content-Length")) return std::nullopt;
  ApiError e;
  if (req.get_header_value_count("Content-Length") != 1) {
    e.message = "more than one Content-Length header";
    return e;
  }
  const std::string v = req.get_header_value("Content-Length");
  const bool digits =
      !v.empty() && std::all_of(v.begin(), v.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
  if (!digits) {
    e.message =
        strfmt("Content-Length %s is not a byte count (decimal digits)", dump(json(v)).c_str());
    return e;
  }
  const size_t first = v.find_first_not_of('0');
  const std::string_view significant =
      first == std::string::npos ? std::string_view("0") : std::string_view(v).substr(first);
  // Over 19 digits cannot fit in 64 bits; any such length is over every --max-body.
  uint64_t n = 0;
  if (significant.size() <= 19) n = std::stoull(std::string(significant));
  if (significant.size() > 19 || n > max_body) {
    e.status = 413;
    e.message = strfmt("Content-Length %s is larger than the server's --max-body %zu bytes",
                       v.c_str(), max_body);
    return e;
  }
  return std::nullopt;
}

const std::vector<ArgSpec>& serve_specs() {
  static const std::vector<ArgSpec> specs = [] {
    std::vector<ArgSpec> s = {
        {"model", ArgKind::kString, "model folder (HF layout), .gguf file, or a known short name"},
        {"host", ArgKind::kString, "address to bind (default 127.0.0.1: loopback only)"},
        {"port", ArgKind::kInt, "TCP port (default 8080; 0 picks a free one and prints it)"},
        {"parallel", ArgKind::kInt, "sequences decoded together at most (default 4)"},
        {"queue", ArgKind::kInt,
         "requests waiting for admission at most; more get 503 (default 64)"},
        {"kv-memory", ArgKind::kString,
         "bound on the KV-cache bytes of all admitted requests, e.g. 512M, 2G (default 1G; 0 = "
         "none)"},
        {"api-key", ArgKind::kString, "require 'Authorization: Bearer KEY' on the /v1 endpoints"},
        {"threads", ArgKind::kInt, "worker threads (default: all cores)"},
        {"max-body", ArgKind::kString, "largest request body accepted (default 4M)"},
        {"prefill-chunk", ArgKind::kInt,
         "rows x layers of prefill run between two decode steps (default 512; at least one layer)"},
        {"default-max-tokens", ArgKind::kInt,
         "max_tokens when a request gives none (default 256, capped by the context)"},
        {"model-name", ArgKind::kString,
         "the id /v1/models reports (default: the model file name)"},
        {"max-connections", ArgKind::kInt,
         "HTTP connections served at once, idle keep-alive ones included (default 1024); more "
         "wait for a free one"},
    };
    for (const ArgSpec& m : method_arg_specs()) s.push_back(m);
    return s;
  }();
  return specs;
}

}  // namespace

int cmd_serve(const std::vector<std::string>& args) {
  const char* usage =
      "usage: fastkv serve --model PATH|NAME [--host 127.0.0.1] [--port 8080] [--parallel N]\n"
      "         [--queue N] [--kv-memory SIZE] [--api-key KEY] [--threads N]\n"
      "         [--method SPEC [method options]]\n\n"
      "OpenAI-compatible server: POST /v1/completions, POST /v1/chat/completions (stream or not),\n"
      "GET /v1/models[/ID], /health, /metrics. --method is the default KV method; a request may "
      "choose\n"
      "its own with \"kv_compression\": {\"method\": \"fastkv\", \"tsp_rate\": 0.2} or a spec "
      "string.\n"
      "SIGTERM (or SIGINT) stops admitting, finishes what is queued and running, and exits 0.";
  if (wants_help(args)) {
    print_help(usage, serve_specs());
    return 0;
  }
  auto pa = parse_args(args, serve_specs(), "serve");
  if (!pa) return fail(pa.status());
  if (!pa->has("model")) return fail(Status::error("serve: missing --model PATH"));
  auto port = get_int(*pa, "port", 8080, 0, 65535);
  if (!port) return fail(port.status());
  auto parallel = get_int(*pa, "parallel", 4, 1, 1024);
  if (!parallel) return fail(parallel.status());
  auto queue = get_int(*pa, "queue", 64, 1, 100000);
  if (!queue) return fail(queue.status());
  auto chunk = get_int(*pa, "prefill-chunk", 512, 1, 1 << 30);
  if (!chunk) return fail(chunk.status());
  auto default_max = get_int(*pa, "default-max-tokens", 256, 1, 1 << 30);
  if (!default_max) return fail(default_max.status());
  auto kv_memory = parse_size(pa->str("kv-memory", "1G"), "--kv-memory");
  if (!kv_memory) return fail(kv_memory.status());
  auto max_body = parse_size(pa->str("max-body", "4M"), "--max-body");
  if (!max_body) return fail(max_body.status());
  if (*max_body == 0) return fail(Status::error("--max-body must be positive"));
  if (pa->has("api-key")) {
    // An empty key (say, from an unset variable) would silently serve without one, and a header
    // value cannot carry edge spaces or control characters, so such a key could never match.
    const std::string key = pa->str("api-key");
    const bool printable = std::all_of(key.begin(), key.end(), [](char ch) {
      return static_cast<unsigned char>(ch) >= 0x20 && ch != 0x7f;
    });
    if (key.empty() || !printable || key.front() == ' ' || key.back() == ' ') {
      return fail(Status::error(
          "--api-key is empty or has edge spaces or control characters: give a printable key, or "
          "omit --api-key to serve without one"));
    }
  }
  if (pa->has("model-name")) {
    const std::string name = pa->str("model-name");
    const bool printable = std::all_of(name.begin(), name.end(), [](char ch) {
      return static_cast<unsigned char>(ch) >= 0x20 && ch != 0x7f;
    });
    if (name.empty() || !printable || name.find_first_not_of(' ') == std::string::npos) {
      return fail(Status::error(strfmt(
          "--model-name %s is empty, blank or has control characters: give the id clients send "
          "as \"model\", or omit it to use the model file name",
          serve::dump(json(name)).c_str())));
    }
  }
  auto max_connections = get_int(*pa, "max-connections", 1024, 1, 65536);
  if (!max_connections) return fail(max_connections.status());
  if (auto st = apply_threads(*pa); !st) return fail(st);
  const std::string host = pa->str("host", "127.0.0.1");

  auto path = resolve_model_path(pa->str("model"));
  if (!path) return fail(path.status());
  auto model = Model::load(*path);
  if (!model) return fail(model.status());
  auto tok = load_tokenizer_for(**model);
  if (!tok) return fail(tok.status());
  auto popts = policy_options(*pa);
  if (!popts) return fail(popts.status());
  if (auto p = make_policy(*popts, (*model)->policy_info()); !p) return fail(p.status());

  // SIGTERM/SIGINT are taken by one thread with sigwait: blocked here, before any thread starts.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  serve::SchedulerOptions so;
  so.parallel = static_cast<int>(*parallel);
  so.queue = static_cast<int>(*queue);
  so.kv_memory = *kv_memory;
  so.prefill_rows = static_cast<int>(*chunk);
  so.threads = pa->has("threads") ? num_threads() : 0;
  Scheduler scheduler(**model, so);

  ServeContext ctx;
  ctx.model = model->get();
  ctx.tok = &*tok;
  ctx.scheduler = &scheduler;
  ctx.api_key = pa->str("api-key");
  ctx.default_method = *popts;
  ctx.default_max_tokens = static_cast<int>(*default_max);
  ctx.kv_memory = *kv_memory;
  ctx.stop_ids = stop_ids_for(*tok, (*model)->config());
  ctx.model_id = pa->has("model-name") ? pa->str("model-name")
                                       : std::filesystem::path(*path).filename().string();

  httplib::Server svr;
  // Connection threads on demand (ConnectionThreads): an idle or slow connection holds only its
  // own thread, for at most the keep-alive / read timeouts below (docs/SERVING.md, "Bounds").
  const size_t max_conn = static_cast<size_t>(*max_connections);
  svr.new_task_queue = [max_conn] { return new ConnectionThreads(max_conn); };
  svr.set_payload_max_length(*max_body);
  svr.set_keep_alive_timeout(kKeepAliveIdleSeconds);
  svr.set_read_timeout(kReadTimeoutSeconds, 0);
  svr.set_write_timeout(kWriteTimeoutSeconds, 0);
  // SO_REUSEADDR only: cpp-httplib's default adds SO_REUSEPORT, with which a second server on the
  // same port starts and takes half of the connections. The listening socket is kept to widen its
  // backlog after bind (cpp-httplib listens with a backlog of 5).
  int listen_fd = -1;
  svr.set_socket_options([&listen_fd](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    listen_fd = sock;
  });
  svr.set_error_handler([&ctx](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    ApiError e;
    e.status = res.status;
    e.message = res.status == 413   ? "the request body is larger than the server's --max-body"
                : res.status == 404 ? "no such endpoint"
                : res.status == 400 ? "malformed HTTP request"
                                    : strfmt("HTTP %d", res.status);
    if (res.status >= 500) e.type = "server_error";
    res.set_content(dump(error_json(e)), "application/json");
    (res.status >= 500 ? ctx.http_5xx : ctx.http_4xx).fetch_add(1);
  });
  // A request with neither Content-Length nor Transfer-Encoding has no body (RFC 9112 6.3), but
  // cpp-httplib would read one until the read timeout (30 s) before answering: answer at once.
  const size_t max_body_bytes = *max_body;
  svr.set_pre_routing_handler([&ctx, max_body_bytes](const httplib::Request& req,
                                                     httplib::Response& res) {
    if (auto e = check_content_length(req, max_body_bytes)) {
      send_error(ctx, res, *e);
      res.set_header("Connection", "close");  // the body is not read: the stream cannot go on
      return httplib::Server::HandlerResponse::Handled;
    }
    const bool takes_body = req.method == "POST" || req.method == "PUT" || req.method == "PATCH";
    if (!takes_body || req.has_header("Content-Length") || req.has_header("Transfer-Encoding")) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    ApiError e;
    e.status = 411;
    e.message = strfmt("%s needs a Content-Length header or a chunked body", req.method.c_str());
    send_error(ctx, res, e);
    return httplib::Server::HandlerResponse::Handled;
  });
  svr.set_exception_handler(
      [&ctx](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        ApiError e;
        e.status = 500;
        e.type = "server_error";
        try {
          if (ep) std::rethrow_exception(ep);
          e.message = "internal error";
        } catch (const std::exception& ex) {
          e.message = std::string("internal error: ") + ex.what();
        } catch (...) {
          e.message = "internal error";
        }
        send_error(ctx, res, e);
      });
  svr.Post("/v1/completions", [&ctx](const httplib::Request& req, httplib::Response& res) {
    handle_completion(ctx, false, req, res);
  });
  svr.Post("/v1/chat/completions", [&ctx](const httplib::Request& req, httplib::Response& res) {
    handle_completion(ctx, true, req, res);
  });
  auto model_object = [&ctx] {
    return json{{"id", ctx.model_id},
                {"object", "model"},
                {"created", 0},
                {"owned_by", "fastkv"},
                {"context_length", ctx.model->config().n_ctx},
                {"default_kv_method", format_method_spec(ctx.default_method)}};
  };
  svr.Get("/v1/models", [&ctx, model_object](const httplib::Request& req, httplib::Response& res) {
    if (!authorised(ctx, req, res)) return;
    res.set_content(dump(json{{"object", "list"}, {"data", json::array({model_object()})}}),
                    "application/json");
  });
  // GET /v1/models/{id} (the client's models.retrieve): the one model, by the id /v1/models lists.
  svr.Get(R"(/v1/models/(.+))",
          [&ctx, model_object](const httplib::Request& req, httplib::Response& res) {
            if (!authorised(ctx, req, res)) return;
            const std::string id = req.matches[1];
            if (id != ctx.model_id) {
              ApiError e;
              e.status = 404;
              e.message = strfmt("model %s is not served here (this server serves %s)",
                                 dump(json(id)).c_str(), dump(json(ctx.model_id)).c_str());
              e.code = "model_not_found";
              e.param = "model";
              send_error(ctx, res, e);
              return;
            }
            res.set_content(dump(model_object()), "application/json");
          });
  // The right path with the wrong method: 405 naming the method to use, not "no such endpoint".
  auto wrong_method = [&ctx](const char* allow) {
    return [&ctx, allow](const httplib::Request& req, httplib::Response& res) {
      ApiError e;
      e.status = 405;
      e.message =
          strfmt("%s %s: this endpoint takes %s", req.method.c_str(), req.path.c_str(), allow);
      send_error(ctx, res, e);
      res.set_header("Allow", allow);
    };
  };
  for (const char* path : {"/v1/completions", "/v1/chat/completions"}) {
    svr.Get(path, wrong_method("POST"));
    svr.Put(path, wrong_method("POST"));
    svr.Delete(path, wrong_method("POST"));
    svr.Patch(path, wrong_method("POST"));
    svr.Options(path, wrong_method("POST"));
  }
  for (const char* path : {"/v1/models", R"(/v1/models/(.+))", "/health", "/metrics"}) {
    svr.Post(path, wrong_method("GET"));
    svr.Put(path, wrong_method("GET"));
    svr.Delete(path, wrong_method("GET"));
    svr.Patch(path, wrong_method("GET"));
    svr.Options(path, wrong_method("GET"));
  }
  svr.Get("/health", [&ctx](const httplib::Request&, httplib::Response& res) {
    const bool stopping = ctx.scheduler->stopping();
    res.status = stopping ? 503 : 200;
    res.set_content(dump(json{{"status", stopping ? "stopping" : "ok"}}), "application/json");
  });
  svr.Get("/metrics", [&ctx](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_text(ctx), "text/plain; version=0.0.4");
  });

  int bound_port = static_cast<int>(*port);
  if (bound_port == 0) {
    bound_port = svr.bind_to_any_port(host);
    if (bound_port < 0) return fail(Status::error(strfmt("cannot bind %s", host.c_str())));
  } else if (!svr.bind_to_port(host, bound_port)) {
    if (port_in_use(host, bound_port)) {
      return fail(
          Status::error(strfmt("port %d is already in use (on %s): stop the other "
                               "server or choose another --port",
                               bound_port, host.c_str())));
    }
    return fail(Status::error(
        strfmt("cannot bind %s:%d (not an address of this machine?)", host.c_str(), bound_port)));
  }
  // A backlog for bursts of connections up to --max-connections (the kernel caps it at somaxconn).
  if (listen_fd >= 0) ::listen(listen_fd, static_cast<int>(std::min<size_t>(max_conn, 4096)));

  std::thread engine([&scheduler] { scheduler.run(); });
  std::atomic<bool> signalled{false};
  std::thread signals([&] {
    int sig = 0;
    sigwait(&sigs, &sig);
    if (sig == 0) return;
    signalled.store(true);
    std::fprintf(stderr, "[fastkv serve] signal %d: finishing queued and running requests\n", sig);
    scheduler.stop();
  });
  std::thread closer([&] {
    // After the scheduler has ended (stop + everything finished), wait for the responses to be
    // written, then close the listener so that listen_after_bind returns.
    engine.join();
    for (int i = 0; i < 300 && ctx.open_responses.load() > 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    svr.stop();
  });
  std::fprintf(stderr,
               "[fastkv serve] model=%s method=%s listening on http://%s:%d parallel=%lld "
               "queue=%lld kv_memory=%zu threads=%d\n",
               ctx.model_id.c_str(), format_method_spec(ctx.default_method).c_str(), host.c_str(),
               bound_port, static_cast<long long>(*parallel), static_cast<long long>(*queue),
               *kv_memory, num_threads());
  std::fflush(stderr);
  const bool listened = svr.listen_after_bind();
  if (!signalled.load()) {
    // The listener ended without a signal (an error): end the other threads.
    scheduler.stop();
    pthread_kill(signals.native_handle(), SIGTERM);
  }
  signals.join();
  closer.join();
  std::fprintf(stderr, "[fastkv serve] stopped\n");
  return listened || signalled.load() ? 0 : 1;
}

}  // namespace fkv::cli

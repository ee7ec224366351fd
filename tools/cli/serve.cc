// fastkv serve: an OpenAI-compatible HTTP server (cpp-httplib) over the batched engine step.
// HTTP threads validate a request, turn it into a Job and stream its tokens; one scheduler thread
// (cli/serve_scheduler.h) owns the model and runs the steps. Design: docs/SERVING.md.
#include <httplib.h>
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/serve_scheduler.h"
#include "core/parse_number.h"
#include "engine/app.h"
#include "engine/batch.h"
#include "kernels/matmul.h"
#include "kv/method_spec.h"

namespace fkv::cli {
namespace {

using json = nlohmann::json;
using serve::Job;
using serve::Scheduler;

// ---- errors, OpenAI style: {"error": {"message", "type", "param", "code"}} ----

struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // empty: null
  std::string code;   // empty: null
};

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json error_json(const ApiError& e) {
  json err = {{"message", e.message}, {"type", e.type}};
  err["param"] = e.param.empty() ? json(nullptr) : json(e.param);
  err["code"] = e.code.empty() ? json(nullptr) : json(e.code);
  return {{"error", err}};
}

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(dump(error_json(e)), "application/json");
}

ApiError bad(const std::string& param, const std::string& message) {
  ApiError e;
  e.param = param;
  e.message = message;
  return e;
}

// ---- typed reads of request fields (null counts as absent) ----

const json* field(const json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<ApiError> read_int(const json& body, const char* key, int64_t lo, int64_t hi,
                                 std::optional<int64_t>& out) {
  const json* v = field(body, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number_integer())
    return bad(key, strfmt("'%s' must be an integer, got %s", key, dump(*v).c_str()));
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(hi)) {
    return bad(key, strfmt("'%s' must be in [%lld, %lld], got %s", key, static_cast<long long>(lo),
                           static_cast<long long>(hi), dump(*v).c_str()));
  }
  const int64_t x = v->get<int64_t>();
  if (x < lo || x > hi) {
    return bad(key, strfmt("'%s' must be in [%lld, %lld], got %s", key, static_cast<long long>(lo),
                           static_cast<long long>(hi), dump(*v).c_str()));
  }
  out = x;
  return std::nullopt;
}

std::optional<ApiError> read_number(const json& body, const char* key, double lo, double hi,
                                    std::optional<double>& out) {
  const json* v = field(body, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number())
    return bad(key, strfmt("'%s' must be a number, got %s", key, dump(*v).c_str()));
  const double x = v->get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) {
    return bad(key, strfmt("'%s' must be in [%g, %g], got %s", key, lo, hi, dump(*v).c_str()));
  }
  out = x;
  return std::nullopt;
}

std::optional<ApiError> read_bool(const json& body, const char* key, bool& out) {
  const json* v = field(body, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean())
    return bad(key, strfmt("'%s' must be true or false, got %s", key, dump(*v).c_str()));
  out = v->get<bool>();
  return std::nullopt;
}

// ---- the server ----

struct ServeContext {
  const Model* model = nullptr;
  const Tokenizer* tok = nullptr;
  Scheduler* scheduler = nullptr;
  std::string model_id;
  std::string api_key;
  PolicyOptions default_method;
  int default_max_tokens = 256;
  size_t kv_memory = 0;
  std::vector<int32_t> stop_ids;
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

// What a validated request becomes, besides its Job.
struct Parsed {
  std::shared_ptr<Job> job;
  bool chat = false;
  bool stream = false;
  bool include_usage = false;
  bool logprobs = false;
  std::vector<std::string> stop;
};

std::optional<ApiError> parse_kv_compression(const ServeContext& ctx, const json& body,
                                             PolicyOptions& out) {
  const json* v = field(body, "kv_compression");
  if (v == nullptr) {
    out = ctx.default_method;
    return std::nullopt;
  }
  if (v->is_string()) {
    auto po = parse_method_spec(v->get<std::string>());
    if (!po) return bad("kv_compression", "kv_compression: " + po.error());
    out = *po;
  } else if (v->is_object()) {
    const json* m = field(*v, "method");
    if (m == nullptr || !m->is_string()) {
      return bad("kv_compression.method",
                 "kv_compression: 'method' must be a string (fullkv, fastkv, snapkv, ...)");
    }
    auto po = parse_method_spec(m->get<std::string>());
    if (!po) return bad("kv_compression.method", "kv_compression: " + po.error());
    out = *po;
    for (auto it = v->begin(); it != v->end(); ++it) {
      if (it.key() == "method") continue;
      std::string text;
      const json& val = it.value();
      if (val.is_string()) {
        text = val.get<std::string>();
      } else if (val.is_boolean()) {
        text = val.get<bool>() ? "true" : "false";
      } else if (val.is_number()) {
        text = val.dump();
      } else {
        return bad("kv_compression." + it.key(),
                   strfmt("kv_compression: '%s' must be a number, string or boolean, got %s",
                          it.key().c_str(), dump(val).c_str()));
      }
      if (auto st = set_method_option(out, it.key(), text); !st) {
        return bad("kv_compression." + it.key(), "kv_compression: " + st.message());
      }
    }
  } else {
    return bad("kv_compression",
               "kv_compression must be an object {\"method\": ..., option: value} or a spec "
               "string like \"fastkv:tsp_rate=0.2\"");
  }
  // The method's own checks against the model (ranges, exclusive options), as the CLI runs them.
  auto policy = make_policy(out, ctx.model->policy_info());
  if (!policy) return bad("kv_compression", "kv_compression: " + policy.error());
  return std::nullopt;
}

std::optional<ApiError> parse_messages(const ServeContext& ctx, const json& body,
                                       std::vector<int32_t>& ids) {
  const json* v = field(body, "messages");
  if (v == nullptr || !v->is_array() || v->empty()) {
    return bad("messages", "'messages' must be a non-empty array of {role, content}");
  }
  std::vector<ChatMessage> msgs;
  for (size_t i = 0; i < v->size(); ++i) {
    const json& m = (*v)[i];
    const std::string p = strfmt("messages[%zu]", i);
    if (!m.is_object()) return bad(p, p + " must be an object {role, content}");
    const json* role = field(m, "role");
    if (role == nullptr || !role->is_string())
      return bad(p + ".role", p + ".role must be a string");
    // Any other role would reach the template as-is (a typo renders as a speaker of that name).
    if (const std::string& r = role->get_ref<const std::string&>();
        r != "system" && r != "user" && r != "assistant") {
      return bad(p + ".role", strfmt("%s.role %s is not one of system, user, assistant", p.c_str(),
                                     dump(*role).c_str()));
    }
    const json* content = field(m, "content");
    std::string text;
    if (content == nullptr) {
      text.clear();
    } else if (content->is_string()) {
      text = content->get<std::string>();
    } else if (content->is_array()) {
      for (const json& part : *content) {
        const json* type = part.is_object() ? field(part, "type") : nullptr;
        const json* t = part.is_object() ? field(part, "text") : nullptr;
        if (type == nullptr || !type->is_string() || type->get<std::string>() != "text" ||
            t == nullptr || !t->is_string()) {
          return bad(p + ".content",
                     p + ".content parts must be {\"type\": \"text\", \"text\": ...}");
        }
        text += t->get<std::string>();
      }
    } else {
      return bad(p + ".content", p + ".content must be a string or an array of text parts");
    }
    msgs.push_back({role->get<std::string>(), text});
  }
  auto rendered = render_chat(*ctx.tok, msgs, "");
  if (!rendered) return bad("messages", rendered.error());
  // As encode_prompt with chat: the template writes BOS itself.
  ids = ctx.tok->encode(*rendered, /*add_special_tokens=*/false);
  if (ids.empty()) return bad("messages", "the messages encode to no tokens");
  return std::nullopt;
}

std::optional<ApiError> parse_prompt(const ServeContext& ctx, const json& body,
                                     std::vector<int32_t>& ids) {
  const json* v = field(body, "prompt");
  if (v == nullptr) return bad("prompt", "'prompt' is required");
  const json* p = v;
  if (v->is_array() && v->size() == 1 && ((*v)[0].is_string() || (*v)[0].is_array())) p = &(*v)[0];
  if (p->is_string()) {
    PromptOptions po;
    auto enc = encode_prompt(*ctx.tok, p->get<std::string>(), po);
    if (!enc) return bad("prompt", enc.error());
    ids = std::move(enc.value());
    return std::nullopt;
  }
  if (p->is_array() && !p->empty() && (*p)[0].is_number_integer()) {
    for (size_t i = 0; i < p->size(); ++i) {
      const json& t = (*p)[i];
      if (!t.is_number_integer() || t.get<int64_t>() < 0 ||
          t.get<int64_t>() >= ctx.model->config().n_vocab) {
        return bad("prompt", strfmt("prompt token %zu (%s) is not a token id in [0, %d)", i,
                                    dump(t).c_str(), ctx.model->config().n_vocab));
      }
      ids.push_back(t.get<int32_t>());
    }
    return std::nullopt;
  }
  if (v->is_array() && v->size() > 1) {
    return bad("prompt", "only one prompt per request is supported (send one request each)");
  }
  return bad("prompt", "'prompt' must be a string, a one-element array of strings, or token ids");
}

std::optional<ApiError> parse_request(ServeContext& ctx, const std::string& text, bool chat,
                                      Parsed& out) {
  json body = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return bad("", "the request body is not valid JSON");
  if (!body.is_object()) return bad("", "the request body must be a JSON object");
  out.chat = chat;
  auto job = std::make_shared<Job>();
  if (const json* m = field(body, "model"); m != nullptr && !m->is_string()) {
    return bad("model", "'model' must be a string");
  }
  std::optional<int64_t> n;
  if (auto e = read_int(body, "n", 1, 1 << 20, n)) return e;
  if (n && *n != 1)
    return bad("n", strfmt("'n' must be 1 (got %lld): send one request per completion",
                           static_cast<long long>(*n)));
  std::optional<int64_t> best_of;
  if (auto e = read_int(body, "best_of", 1, 1 << 20, best_of)) return e;
  if (best_of && *best_of != 1) return bad("best_of", "'best_of' other than 1 is not supported");
  for (const char* k : {"presence_penalty", "frequency_penalty"}) {
    std::optional<double> pen;
    if (auto e = read_number(body, k, -2.0, 2.0, pen)) return e;
    if (pen && *pen != 0.0) return bad(k, strfmt("'%s' is not supported (only 0)", k));
  }
  bool echo = false;
  if (auto e = read_bool(body, "echo", echo)) return e;
  if (echo) return bad("echo", "'echo' is not supported");
  if (const json* lb = field(body, "logit_bias");
      lb != nullptr && !(lb->is_object() && lb->empty())) {
    return bad("logit_bias", "'logit_bias' is not supported");
  }
  // Fields that would change the output's meaning are refused, not ignored.
  for (const char* k : {"tools", "functions"}) {
    if (const json* t = field(body, k);
        t != nullptr && !t->is_null() && !(t->is_array() && t->empty())) {
      return bad(k, strfmt("'%s' (function calling) is not supported", k));
    }
  }
  for (const char* k : {"tool_choice", "function_call"}) {
    if (const json* t = field(body, k);
        t != nullptr && !t->is_null() && !(t->is_string() && (*t == "none" || *t == "auto"))) {
      return bad(k, strfmt("'%s' other than \"none\" or \"auto\" is not supported (no tools)", k));
    }
  }
  if (const json* rf = field(body, "response_format"); rf != nullptr && !rf->is_null()) {
    const json* type = rf->is_object() ? field(*rf, "type") : nullptr;
    if (type == nullptr || !type->is_string()) {
      return bad("response_format", "'response_format' must be an object {\"type\": ...}");
    }
    if (*type != "text") {
      return bad("response_format.type",
                 strfmt("'response_format' type %s is not supported (only \"text\")",
                        dump(*type).c_str()));
    }
  }
  if (const json* sf = field(body, "suffix");
      sf != nullptr && !sf->is_null() &&
      !(sf->is_string() && sf->get_ref<const std::string&>().empty())) {
    return bad("suffix", "'suffix' (insertion) is not supported");
  }

  if (chat) {
    if (auto e = parse_messages(ctx, body, job->prompt)) return e;
  } else {
    if (auto e = parse_prompt(ctx, body, job->prompt)) return e;
  }
  const int n_ctx = ctx.model->config().n_ctx;
  const int n_prompt = static_cast<int>(job->prompt.size());
  if (n_prompt >= n_ctx) {
    ApiError e =
        bad(chat ? "messages" : "prompt",
            strfmt("the prompt has %d tokens; the model's context length is %d", n_prompt, n_ctx));
    e.code = "context_length_exceeded";
    return e;
  }
  std::optional<int64_t> max_tokens;
  const char* max_key = "max_tokens";
  if (chat && field(body, "max_completion_tokens") != nullptr) max_key = "max_completion_tokens";
  if (auto e = read_int(body, max_key, 1, std::numeric_limits<int32_t>::max(), max_tokens))
    return e;
  if (max_tokens) {
    if (n_prompt + *max_tokens > n_ctx) {
      ApiError e = bad(
          max_key, strfmt("%s %lld + the prompt's %d tokens exceed the model's context length %d",
                          max_key, static_cast<long long>(*max_tokens), n_prompt, n_ctx));
      e.code = "context_length_exceeded";
      return e;
    }
    job->max_tokens = static_cast<int>(*max_tokens);
  } else {
    job->max_tokens = std::min(ctx.default_max_tokens, n_ctx - n_prompt);
  }

  std::optional<double> temperature, top_p;
  if (auto e = read_number(body, "temperature", 0.0, 2.0, temperature)) return e;
  if (auto e = read_number(body, "top_p", 0.0, 1.0, top_p)) return e;
  if (top_p && *top_p <= 0.0) return bad("top_p", "'top_p' must be in (0, 1]");
  job->sampler.temperature = static_cast<float>(temperature.value_or(1.0));
  job->sampler.top_p = static_cast<float>(top_p.value_or(1.0));
  if (const json* seed = field(body, "seed")) {
    if (!seed->is_number_integer() || (!seed->is_number_unsigned() && seed->get<int64_t>() < 0)) {
      return bad("seed",
                 strfmt("'seed' must be an integer in [0, 2^64), got %s", dump(*seed).c_str()));
    }
    job->sampler.seed = seed->get<uint64_t>();
  }
  // Not OpenAI fields, but what llama.cpp's server and vLLM accept too: top_k, and ignore_eos
  // (benchmarks: decode a fixed number of tokens).
  std::optional<int64_t> top_k;
  if (auto e = read_int(body, "top_k", 0, std::numeric_limits<int32_t>::max(), top_k)) return e;
  job->sampler.top_k = static_cast<int>(top_k.value_or(0));
  if (auto st = validate_sampler_config(job->sampler); !st) return bad("", st.message());
  bool ignore_eos = false;
  if (auto e = read_bool(body, "ignore_eos", ignore_eos)) return e;

  if (const json* stop = field(body, "stop")) {
    if (stop->is_string()) {
      out.stop.push_back(stop->get<std::string>());
    } else if (stop->is_array() && stop->size() <= 4) {
      for (const json& s : *stop) {
        if (!s.is_string()) return bad("stop", "'stop' entries must be strings");
        out.stop.push_back(s.get<std::string>());
      }
    } else {
      return bad("stop", "'stop' must be a string or an array of at most 4 strings");
    }
    for (const auto& s : out.stop) {
      if (s.empty()) return bad("stop", "'stop' strings must not be empty");
    }
  }
  if (auto e = read_bool(body, "stream", out.stream)) return e;
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) return bad("stream_options", "'stream_options' must be an object");
    if (!out.stream) return bad("stream_options", "'stream_options' needs \"stream\": true");
    if (auto e = read_bool(*so, "include_usage", out.include_usage)) {
      e->param = "stream_options.include_usage";
      return e;
    }
  }
  if (chat) {
    bool lp = false;
    if (auto e = read_bool(body, "logprobs", lp)) return e;
    std::optional<int64_t> top;
    if (auto e = read_int(body, "top_logprobs", 0, 20, top)) return e;
    if (top && !lp) return bad("top_logprobs", "'top_logprobs' needs \"logprobs\": true");
    out.logprobs = lp;
    job->top_logprobs = lp ? static_cast<int>(top.value_or(0)) : -1;
  } else {
    std::optional<int64_t> lp;
    if (auto e = read_int(body, "logprobs", 0, 20, lp)) return e;
    out.logprobs = lp.has_value();
    job->top_logprobs = lp ? static_cast<int>(*lp) : -1;
  }
  if (auto e = parse_kv_compression(ctx, body, job->method)) return e;
  job->method_spec = format_method_spec(job->method);
  if (!ignore_eos) job->stop_ids = ctx.stop_ids;
  job->reserve_bytes =
      worst_case_kv_bytes(job->method, ctx.model->config(), n_prompt, job->max_tokens);
  if (ctx.kv_memory != 0 && job->reserve_bytes > ctx.kv_memory) {
    ApiError e =
        bad(max_key, strfmt("this request can need %zu bytes of KV cache under %s, more than "
                            "the server's --kv-memory %zu; shorten the prompt or max_tokens, or "
                            "use a compressing kv_compression",
                            job->reserve_bytes, job->method_spec.c_str(), ctx.kv_memory));
    e.code = "kv_memory_exceeded";
    return e;
  }
  out.job = std::move(job);
  return std::nullopt;
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
  const size_t begin = h.find_first_not_of(' ', kScheme.size());
  if (begin == std::string::npos) return std::string();
  return h.substr(begin, h.find_last_not_of(' ') + 1 - begin);
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
  // Every admitted or queued request holds an HTTP thread while it streams; a few more serve
  // /health, /metrics and the requests that are refused.
  const size_t http_threads = static_cast<size_t>(*parallel + *queue + 8);
  svr.new_task_queue = [http_threads] { return new httplib::ThreadPool(http_threads); };
  svr.set_payload_max_length(*max_body);
  svr.set_read_timeout(30, 0);
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
  svr.set_pre_routing_handler([&ctx](const httplib::Request& req, httplib::Response& res) {
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
  }
  for (const char* path : {"/v1/models", "/health", "/metrics"}) {
    svr.Post(path, wrong_method("GET"));
    svr.Put(path, wrong_method("GET"));
    svr.Delete(path, wrong_method("GET"));
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
    return fail(
        Status::error(strfmt("cannot bind %s:%d (in use, or not an address of this machine?)",
                             host.c_str(), bound_port)));
  }

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

#include "serve/request.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/status.h"
#include "engine/app.h"
#include "engine/batch.h"
#include "kv/method_spec.h"

namespace fkv::serve {

using json = nlohmann::json;

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json error_json(const ApiError& e) {
  json err = {{"message", e.message}, {"type", e.type}};
  err["param"] = e.param.empty() ? json(nullptr) : json(e.param);
  err["code"] = e.code.empty() ? json(nullptr) : json(e.code);
  return {{"error", err}};
}

ApiError bad(const std::string& param, const std::string& message) {
  ApiError e;
  e.param = param;
  e.message = message;
  return e;
}

namespace {

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

std::optional<ApiError> parse_kv_compression(const RequestContext& ctx, const json& body,
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
      const MethodOptionInfo* info = method_option_info(it.key());
      const json& val = it.value();
      std::string text;
      // Each option takes its own JSON type, as the top-level fields do: "0.2" (a string) is not
      // a rate. Unknown keys fall through to set_method_option, whose error lists the valid ones.
      const char* want = nullptr;
      bool typed_ok = true;
      if (info == nullptr) {
        text = val.is_string() ? val.get<std::string>() : val.dump();
      } else if (info->kind == MethodOptionKind::kInt) {
        typed_ok = val.is_number_integer();
        if (typed_ok) text = val.dump();
        want = "an integer";
      } else if (info->kind == MethodOptionKind::kFloat) {
        typed_ok = val.is_number();
        if (typed_ok) text = val.dump();
        want = "a number";
      } else if (info->kind == MethodOptionKind::kString) {
        typed_ok = val.is_string();
        if (typed_ok) text = val.get<std::string>();
        want = "a string";
      } else {
        typed_ok = val.is_boolean();
        if (typed_ok) text = val.get<bool>() ? "true" : "false";
        want = "true or false";
      }
      if (!typed_ok) {
        return bad("kv_compression." + it.key(), strfmt("kv_compression: '%s' must be %s, got %s",
                                                        it.key().c_str(), want, dump(val).c_str()));
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

std::optional<ApiError> parse_messages(const RequestContext& ctx, const json& body,
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
    // Without tools every message is text: a missing, null or empty-array content is a client
    // bug (it would render as an empty turn), not an empty message. "" is an empty message.
    if (content == nullptr) {
      return bad(p + ".content",
                 strfmt("%s.content is missing or null; give a string or an array of text parts",
                        p.c_str()));
    } else if (content->is_string()) {
      text = content->get<std::string>();
    } else if (content->is_array()) {
      if (content->empty()) {
        return bad(p + ".content",
                   p + ".content is an empty array; give at least one {\"type\": \"text\"} part");
      }
      for (const json& part : *content) {
        const json* type = part.is_object() ? field(part, "type") : nullptr;
        const json* t = part.is_object() ? field(part, "text") : nullptr;
        if (type == nullptr || !type->is_string() || type->get<std::string>() != "text" ||
            t == nullptr || !t->is_string()) {
          return bad(p + ".content",
                     strfmt("%s.content parts must be {\"type\": \"text\", \"text\": ...}, got %s",
                            p.c_str(), dump(part).substr(0, 80).c_str()));
        }
        text += t->get<std::string>();
      }
    } else {
      return bad(p + ".content",
                 strfmt("%s.content must be a string or an array of text parts, got %s", p.c_str(),
                        dump(*content).substr(0, 80).c_str()));
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

std::optional<ApiError> parse_prompt(const RequestContext& ctx, const json& body,
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
  if (p->is_array() && !p->empty() && (*p)[0].is_number()) {
    for (size_t i = 0; i < p->size(); ++i) {
      const json& t = (*p)[i];
      if (!t.is_number_integer() || t.get<int64_t>() < 0 ||
          t.get<int64_t>() >= ctx.model->config().n_vocab) {
        return bad("prompt",
                   strfmt("prompt token %zu (%s) is not a token id (an integer in [0, %d))", i,
                          dump(t).c_str(), ctx.model->config().n_vocab));
      }
      ids.push_back(t.get<int32_t>());
    }
    return std::nullopt;
  }
  if (v->is_array() && v->size() > 1 && std::all_of(v->begin(), v->end(), [](const json& e) {
        return e.is_string() || e.is_array();
      })) {
    return bad("prompt", strfmt("'prompt' holds %zu prompts; one prompt per request is supported "
                                "(send one request each)",
                                v->size()));
  }
  if (v->is_array() && v->empty()) return bad("prompt", "'prompt' is an empty array");
  return bad("prompt", strfmt("'prompt' must be a string, a one-element array of strings, or an "
                              "array of token ids, got %s",
                              dump(*v).substr(0, 80).c_str()));
}

}  // namespace

std::optional<ApiError> parse_request(const RequestContext& ctx, const std::string& text, bool chat,
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
  if (const json* tp = field(body, "top_p")) {
    // (0, 1]: 0 would keep no token.
    if (!tp->is_number() || !std::isfinite(tp->get<double>()) || tp->get<double>() <= 0.0 ||
        tp->get<double>() > 1.0) {
      return bad("top_p", strfmt("'top_p' must be a number in (0, 1], got %s", dump(*tp).c_str()));
    }
    top_p = tp->get<double>();
  }
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

}  // namespace fkv::serve

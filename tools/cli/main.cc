// fastkv command-line interface: `fastkv generate`, `fastkv tokenize`.
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "chat/chat_template.h"
#include "core/mmap_file.h"
#include "engine/app.h"
#include "engine/engine.h"
#include "kernels/matmul.h"
#include "kv/policy.h"

#ifdef FKV_OPENMP
#include <omp.h>
#endif

namespace {

using fkv::Expected;
using fkv::Status;
using fkv::strfmt;

// ---- argument parsing ----------------------------------------------------------------------

enum class ArgKind { kFlag, kString, kInt, kFloat };
struct ArgSpec {
  const char* name;  // without the leading "--"
  ArgKind kind;
  const char* help;
};

struct ParsedArgs {
  std::map<std::string, std::string> values;
  bool has(const std::string& k) const { return values.count(k) != 0; }
  std::string str(const std::string& k, const std::string& def = "") const {
    auto it = values.find(k);
    return it == values.end() ? def : it->second;
  }
};

Expected<long long> parse_int(const std::string& flag, const std::string& s) {
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || errno != 0) {
    return Status::error(strfmt("--%s expects an integer, got '%s'", flag.c_str(), s.c_str()));
  }
  return v;
}
Expected<double> parse_float(const std::string& flag, const std::string& s) {
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || errno != 0 || !std::isfinite(v)) {
    return Status::error(strfmt("--%s expects a number, got '%s'", flag.c_str(), s.c_str()));
  }
  return v;
}

Expected<ParsedArgs> parse_args(const std::vector<std::string>& args,
                                const std::vector<ArgSpec>& specs, const std::string& command) {
  ParsedArgs out;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string a = args[i];
    if (a.rfind("--", 0) != 0) {
      return Status::error(strfmt("%s: unexpected argument '%s' (see fastkv %s --help)",
                                  command.c_str(), a.c_str(), command.c_str()));
    }
    std::string name = a.substr(2);
    std::optional<std::string> inline_value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    const ArgSpec* spec = nullptr;
    for (const auto& s : specs) {
      if (name == s.name) spec = &s;
    }
    if (spec == nullptr) {
      return Status::error(strfmt("%s: unknown option '--%s' (see fastkv %s --help)",
                                  command.c_str(), name.c_str(), command.c_str()));
    }
    if (out.has(name)) {
      return Status::error(strfmt("%s: option '--%s' given twice", command.c_str(), name.c_str()));
    }
    if (spec->kind == ArgKind::kFlag) {
      if (inline_value) {
        return Status::error(
            strfmt("%s: option '--%s' takes no value", command.c_str(), name.c_str()));
      }
      out.values[name] = "1";
      continue;
    }
    std::string value;
    if (inline_value) {
      value = *inline_value;
    } else {
      if (i + 1 >= args.size()) {
        return Status::error(
            strfmt("%s: option '--%s' needs a value", command.c_str(), name.c_str()));
      }
      value = args[++i];
    }
    if (spec->kind == ArgKind::kInt) {
      auto v = parse_int(name, value);
      if (!v) return v.status();
    } else if (spec->kind == ArgKind::kFloat) {
      auto v = parse_float(name, value);
      if (!v) return v.status();
    }
    out.values[name] = value;
  }
  return out;
}

void print_help(const char* usage, const std::vector<ArgSpec>& specs) {
  std::printf("%s\n\nOptions:\n", usage);
  for (const auto& s : specs) {
    const char* meta = s.kind == ArgKind::kFlag ? "" : s.kind == ArgKind::kString ? " VALUE" : " N";
    std::printf("  --%s%s\n      %s\n", s.name, meta, s.help);
  }
}

bool wants_help(const std::vector<std::string>& args) {
  for (const auto& a : args) {
    if (a == "--help" || a == "-h") return true;
  }
  return false;
}

int fail(const Status& st) {
  std::fflush(stdout);
  std::fprintf(stderr, "fastkv: error: %s\n", st.message().c_str());
  return 1;
}

Expected<std::string> read_prompt(const ParsedArgs& pa) {
  if (pa.has("prompt") && pa.has("prompt-file")) {
    return Status::error("give either --prompt or --prompt-file, not both");
  }
  if (pa.has("prompt")) return pa.str("prompt");
  if (pa.has("prompt-file")) return fkv::read_text_file(pa.str("prompt-file"));
  return Status::error("missing --prompt TEXT or --prompt-file FILE");
}

// ---- generate --------------------------------------------------------------------------------

const std::vector<ArgSpec>& generate_specs() {
  static const std::vector<ArgSpec> specs = {
      {"model", ArgKind::kString, "model folder (HF layout), .gguf file, or a known short name"},
      {"prompt", ArgKind::kString, "prompt text"},
      {"prompt-file", ArgKind::kString, "read the prompt from a file"},
      {"chat", ArgKind::kFlag, "wrap the prompt as a user message in the model's chat template"},
      {"system", ArgKind::kString, "system message (with --chat)"},
      {"chat-template", ArgKind::kString, "Jinja chat template file to use instead of the model's"},
      {"max-new-tokens", ArgKind::kInt, "tokens to generate at most (default 128)"},
      {"temperature", ArgKind::kFloat, "sampling temperature; 0 = greedy (default 0)"},
      {"top-k", ArgKind::kInt, "keep the k most likely tokens (0 = off)"},
      {"top-p", ArgKind::kFloat, "nucleus sampling mass in (0, 1] (1 = off)"},
      {"seed", ArgKind::kInt, "RNG seed (default 0); same seed, same output on every machine"},
      {"threads", ArgKind::kInt, "worker threads (default: all cores)"},
      {"method", ArgKind::kString,
       "KV method: fullkv (default), fastkv, snapkv, pyramidkv, adakv, "
       "streamingllm, h2o, gemfilter, pyramidinfer"},
      {"tsp-layer", ArgKind::kInt, "fastkv: layer after which only selected tokens propagate"},
      {"tsp-rate", ArgKind::kFloat, "fastkv: share of tokens propagated after the TSP layer"},
      {"tsp-len", ArgKind::kInt, "fastkv: tokens propagated after the TSP layer (absolute)"},
      {"retain-rate", ArgKind::kFloat, "share of prompt KV entries each layer keeps"},
      {"kv-budget", ArgKind::kInt, "KV entries each layer keeps (absolute)"},
      {"window", ArgKind::kInt, "observation window W"},
      {"kernel", ArgKind::kInt, "pooling kernel size"},
      {"pooling", ArgKind::kString, "max | avg"},
      {"mode", ArgKind::kString, "fastkv: proportional | constant"},
      {"filter-layer", ArgKind::kInt, "gemfilter: layer whose attention selects the tokens"},
      {"per-query-head", ArgKind::kFlag,
       "snapkv: select per query head (parity with the reference)"},
      {"dump-selection", ArgKind::kString, "write what prefill kept to this JSON file"},
      {"no-stream", ArgKind::kFlag, "print the answer at the end instead of token by token"},
  };
  return specs;
}

Expected<fkv::PolicyOptions> policy_options(const ParsedArgs& pa) {
  fkv::PolicyOptions po;
  po.method = pa.str("method", "fullkv");
  auto geti = [&](const char* k, std::optional<int>& out) {
    if (pa.has(k)) out = static_cast<int>(std::strtoll(pa.str(k).c_str(), nullptr, 10));
  };
  auto getf = [&](const char* k, std::optional<double>& out) {
    if (pa.has(k)) out = std::strtod(pa.str(k).c_str(), nullptr);
  };
  geti("tsp-layer", po.tsp_layer);
  getf("tsp-rate", po.tsp_rate);
  geti("tsp-len", po.tsp_len);
  getf("retain-rate", po.retain_rate);
  geti("kv-budget", po.kv_budget);
  geti("window", po.window);
  geti("kernel", po.kernel);
  geti("filter-layer", po.filter_layer);
  if (pa.has("pooling")) po.pooling = pa.str("pooling");
  if (pa.has("mode")) po.mode = pa.str("mode");
  po.per_query_head = pa.has("per-query-head");
  return po;
}

int cmd_generate(const std::vector<std::string>& args) {
  const char* usage =
      "usage: fastkv generate --model PATH (--prompt TEXT | --prompt-file FILE) [--chat]\n"
      "         [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S]\n"
      "         [--threads N] [--method NAME [method options]] [--dump-selection FILE]\n\n"
      "Prints the continuation on stdout as it is generated and a timing line on stderr.";
  if (wants_help(args)) {
    print_help(usage, generate_specs());
    return 0;
  }
  auto pa = parse_args(args, generate_specs(), "generate");
  if (!pa) return fail(pa.status());
  if (!pa->has("model")) return fail(Status::error("generate: missing --model PATH"));
  auto prompt_text = read_prompt(*pa);
  if (!prompt_text) return fail(prompt_text.status());

  fkv::GenerationRequest req;
  req.max_new_tokens =
      static_cast<int>(std::strtoll(pa->str("max-new-tokens", "128").c_str(), nullptr, 10));
  if (req.max_new_tokens < 0) return fail(Status::error("--max-new-tokens must be >= 0"));
  req.sampler.temperature =
      static_cast<float>(std::strtod(pa->str("temperature", "0").c_str(), nullptr));
  req.sampler.top_k = static_cast<int>(std::strtoll(pa->str("top-k", "0").c_str(), nullptr, 10));
  req.sampler.top_p = static_cast<float>(std::strtod(pa->str("top-p", "1").c_str(), nullptr));
  req.sampler.seed = static_cast<uint64_t>(std::strtoll(pa->str("seed", "0").c_str(), nullptr, 10));
  if (auto st = fkv::validate_sampler_config(req.sampler); !st) return fail(st);
  if (pa->has("threads")) {
    const long long t = std::strtoll(pa->str("threads").c_str(), nullptr, 10);
    if (t < 1 || t > 1024)
      return fail(Status::error(strfmt("--threads must be in [1, 1024], got %lld", t)));
    fkv::set_num_threads(static_cast<int>(t));
#ifdef FKV_OPENMP
    omp_set_num_threads(static_cast<int>(t));  // engine and scoring regions too
#endif
  }

  auto path = fkv::resolve_model_path(pa->str("model"));
  if (!path) return fail(path.status());
  auto model = fkv::Model::load(*path);
  if (!model) return fail(model.status());
  auto tok = fkv::load_tokenizer_for(**model);
  if (!tok) return fail(tok.status());
  const fkv::ModelConfig& cfg = (*model)->config();

  auto popts = policy_options(*pa);
  if (!popts) return fail(popts.status());
  auto policy = fkv::make_policy(*popts, (*model)->policy_info());
  if (!policy) return fail(policy.status());

  // Prompt -> token ids (through the chat template with --chat).
  std::string text = *prompt_text;
  bool add_special = true;
  if (pa->has("chat")) {
    std::string tmpl = tok->chat_template();
    if (pa->has("chat-template")) {
      auto t = fkv::read_text_file(pa->str("chat-template"));
      if (!t) return fail(t.status());
      tmpl = *t;
    }
    if (tmpl.empty()) {
      return fail(
          Status::error(strfmt("--chat: model '%s' has no chat template; give one with "
                               "--chat-template FILE",
                               path->c_str())));
    }
    std::vector<fkv::ChatMessage> msgs;
    if (pa->has("system")) msgs.push_back({"system", pa->str("system")});
    msgs.push_back({"user", text});
    fkv::ChatRenderOptions ro;
    ro.add_generation_prompt = true;
    ro.bos_token = tok->bos_token();
    ro.eos_token = tok->eos_token();
    auto rendered = fkv::render_chat_template(tmpl, msgs, ro);
    if (!rendered) return fail(Status::error("chat template: " + rendered.error()));
    text = *rendered;
    add_special = false;  // the template writes BOS itself, as apply_chat_template does
  } else if (pa->has("system") || pa->has("chat-template")) {
    return fail(Status::error("--system and --chat-template need --chat"));
  }
  req.prompt = tok->encode(text, add_special);
  if (req.prompt.empty()) {
    // An empty prompt on a tokenizer without BOS: start from BOS if there is one.
    if (tok->bos_id() >= 0)
      req.prompt.push_back(tok->bos_id());
    else
      return fail(Status::error("the prompt encodes to no tokens"));
  }
  for (int32_t id : tok->end_of_generation_ids()) req.stop_ids.push_back(id);
  for (int id : cfg.eos_token_ids) req.stop_ids.push_back(id);

  fkv::SessionOptions so;
  so.max_new_tokens = req.max_new_tokens;
  fkv::Session session(**model, **policy, so);
  fkv::StreamDecoder stream(*tok, /*skip_special_tokens=*/true);
  const bool streaming = !pa->has("no-stream");
  std::string collected;
  auto on_token = [&](int32_t id) {
    std::string piece = stream.push(id);
    if (streaming) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    } else {
      collected += piece;
    }
    return true;
  };
  auto result = fkv::generate(session, req, on_token);
  if (!result) return fail(result.status());
  std::string rest = stream.flush();
  if (streaming) {
    std::fwrite(rest.data(), 1, rest.size(), stdout);
  } else {
    collected += rest;
    std::fwrite(collected.data(), 1, collected.size(), stdout);
  }
  std::fputc('\n', stdout);
  std::fflush(stdout);

  if (pa->has("dump-selection")) {
    std::ofstream out(pa->str("dump-selection"));
    out << session.selection().to_json() << "\n";
    if (!out) {
      return fail(Status::error(
          strfmt("cannot write --dump-selection file '%s'", pa->str("dump-selection").c_str())));
    }
  }
  const fkv::Timing& t = session.timing();
  const double prefill_tps = t.prefill_s > 0 ? t.n_prompt / t.prefill_s : 0.0;
  const double decode_tps = t.decode_s > 0 ? t.n_decoded / t.decode_s : 0.0;
  std::fprintf(stderr,
               "[fastkv] method=%s prompt_tokens=%d generated=%zu prefill=%.3fs (%.1f tok/s) "
               "decode=%.1f tok/s kv_bytes_after_prefill=%zu kv_bytes=%zu threads=%d\n",
               (*policy)->name().c_str(), t.n_prompt, result->tokens.size(), t.prefill_s,
               prefill_tps, decode_tps, t.kv_bytes_after_prefill, session.kv_bytes(),
               fkv::num_threads());
  return 0;
}

// ---- tokenize --------------------------------------------------------------------------------

int cmd_tokenize(const std::vector<std::string>& args) {
  static const std::vector<ArgSpec> specs = {
      {"model", ArgKind::kString, "model folder, .gguf file or short name (its tokenizer is used)"},
      {"tokenizer", ArgKind::kString, "tokenizer.json or tokenizer.model file"},
      {"text", ArgKind::kString, "text to tokenize"},
      {"file", ArgKind::kString, "read the text from a file"},
      {"decode", ArgKind::kFlag, "also print each token's piece"},
      {"no-special", ArgKind::kFlag, "do not add BOS/special tokens"},
  };
  const char* usage =
      "usage: fastkv tokenize (--model PATH | --tokenizer FILE) (--text TEXT | --file FILE)\n"
      "         [--decode] [--no-special]\n\n"
      "Prints the token ids as one JSON array on the last line of stdout.";
  if (wants_help(args)) {
    print_help(usage, specs);
    return 0;
  }
  auto pa = parse_args(args, specs, "tokenize");
  if (!pa) return fail(pa.status());
  if (pa->has("model") == pa->has("tokenizer")) {
    return fail(Status::error("tokenize: give exactly one of --model or --tokenizer"));
  }
  if (pa->has("text") == pa->has("file")) {
    return fail(Status::error("tokenize: give exactly one of --text or --file"));
  }
  std::string text;
  if (pa->has("text")) {
    text = pa->str("text");
  } else {
    auto t = fkv::read_text_file(pa->str("file"));
    if (!t) return fail(t.status());
    text = *t;
  }
  std::optional<fkv::Tokenizer> tok;
  if (pa->has("model")) {
    auto path = fkv::resolve_model_path(pa->str("model"));
    if (!path) return fail(path.status());
    auto model = fkv::Model::load(*path);
    if (!model) return fail(model.status());
    auto t = fkv::load_tokenizer_for(**model);
    if (!t) return fail(t.status());
    tok.emplace(std::move(t.value()));
  } else {
    const std::string f = pa->str("tokenizer");
    auto t = f.ends_with(".model") ? fkv::Tokenizer::from_sentencepiece_model(f)
                                   : fkv::Tokenizer::from_hf_json(f);
    if (!t) return fail(t.status());
    tok.emplace(std::move(t.value()));
  }
  const std::vector<int32_t> ids = tok->encode(text, !pa->has("no-special"));
  if (pa->has("decode")) {
    for (int32_t id : ids) {
      std::printf("%d\t%s\n", id, nlohmann::json(tok->id_to_token(id)).dump().c_str());
    }
  }
  std::printf("%s\n", nlohmann::json(ids).dump().c_str());
  return 0;
}

void print_main_help() {
  std::printf(
      "fastkv: long-context LLM inference with FastKV and baseline KV-cache compression.\n\n"
      "usage: fastkv COMMAND [options]\n\n"
      "Commands:\n"
      "  generate   generate text from a prompt (streams to stdout, timing on stderr)\n"
      "  tokenize   print the token ids of a text\n\n"
      "Run 'fastkv COMMAND --help' for a command's options.\n");
}

}  // namespace

int main(int argc, char** argv) {
  fkv::ensure_passive_openmp_wait(argv);
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    print_main_help();
    return args.empty() ? 2 : 0;
  }
  const std::string cmd = args[0];
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (cmd == "generate") return cmd_generate(rest);
  if (cmd == "tokenize") return cmd_tokenize(rest);
  std::fprintf(stderr, "fastkv: error: unknown command '%s' (commands: generate, tokenize)\n",
               cmd.c_str());
  return 2;
}

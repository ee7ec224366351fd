// fastkv command-line interface: `fastkv generate`, `fastkv tokenize`.
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "chat/chat_template.h"
#include "core/file_io.h"
#include "core/mmap_file.h"
#include "core/parse_number.h"
#include "engine/app.h"
#include "engine/engine.h"
#include "kernels/matmul.h"
#include "kv/method_spec.h"
#include "kv/policy.h"

#ifdef FKV_OPENMP
#include <omp.h>
#endif

namespace {

using fkv::Expected;
using fkv::Status;
using fkv::strfmt;

// ---- argument parsing ----------------------------------------------------------------------

enum class ArgKind { kFlag, kString, kInt, kFloat };  // kInt/kFloat: shown as N in --help
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

// Typed reads of parsed flags: full-width parse, range check, then narrow (core/parse_number.h).
Expected<int64_t> get_int(const ParsedArgs& pa, const std::string& flag, int64_t def, int64_t lo,
                          int64_t hi) {
  if (!pa.has(flag)) return def;
  return fkv::parse_int_in_range(pa.str(flag), "--" + flag, lo, hi);
}
Expected<double> get_float(const ParsedArgs& pa, const std::string& flag, double def, double lo,
                           double hi) {
  if (!pa.has(flag)) return def;
  return fkv::parse_double_in_range(pa.str(flag), "--" + flag, lo, hi);
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
    // Numbers are parsed (with their ranges) where they are read: get_int / get_float.
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
  if (pa.has("prompt-file")) return fkv::read_text_file(pa.str("prompt-file"), "--prompt-file");
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
       "KV method spec NAME[:key=value,...]: fullkv (default), fastkv, snapkv, pyramidkv, "
       "adakv, streamingllm, h2o, gemfilter, pyramidinfer; e.g. "
       "fastkv:tsp_rate=0.2,retain_rate=0.1"},
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

// --method takes a spec ("fastkv" or "fastkv:tsp_rate=0.2,retain_rate=0.1", the parser bench,
// eval, serve and Python share); the per-option flags (--tsp-rate ...) add to it.
Expected<fkv::PolicyOptions> policy_options(const ParsedArgs& pa) {
  const std::string spec = pa.str("method", "fullkv");
  auto po = fkv::parse_method_spec(spec);
  if (!po) return po.status();
  const std::string spec_canonical = fkv::format_method_spec(*po);
  for (const auto& info : fkv::method_option_infos()) {
    std::string flag = info.key;
    for (char& ch : flag)
      if (ch == '_') ch = '-';
    if (!pa.has(flag)) continue;
    if (spec_canonical.find(std::string(info.key) + "=") != std::string::npos) {
      return Status::error(strfmt("--%s repeats option %s of --method '%s'; give it once",
                                  flag.c_str(), info.key, spec.c_str()));
    }
    const std::string value = info.kind == fkv::MethodOptionKind::kBool ? "true" : pa.str(flag);
    if (auto st = fkv::set_method_option(*po, info.key, value); !st) {
      return Status::error(strfmt("--%s: %s", flag.c_str(), st.message().c_str()));
    }
  }
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
  if (pa->has("dump-selection")) {
    // Found before the generation runs, not after.
    if (auto st = fkv::check_output_path(pa->str("dump-selection"), "--dump-selection"); !st)
      return fail(st);
  }
  auto prompt_text = read_prompt(*pa);
  if (!prompt_text) return fail(prompt_text.status());

  fkv::GenerationRequest req;
  // The context bound is checked once the model is known; this bound keeps the int narrowing exact.
  auto max_new = get_int(*pa, "max-new-tokens", 128, 0, 1 << 30);
  if (!max_new) return fail(max_new.status());
  req.max_new_tokens = static_cast<int>(*max_new);
  auto temperature = get_float(*pa, "temperature", 0.0, 0.0, 1e6);
  if (!temperature) return fail(temperature.status());
  req.sampler.temperature = static_cast<float>(*temperature);
  auto top_k = get_int(*pa, "top-k", 0, 0, std::numeric_limits<int>::max());
  if (!top_k) return fail(top_k.status());
  req.sampler.top_k = static_cast<int>(*top_k);
  auto top_p = get_float(*pa, "top-p", 1.0, 0.0, 1.0);
  if (!top_p) return fail(top_p.status());
  req.sampler.top_p = static_cast<float>(*top_p);
  if (pa->has("seed")) {
    auto seed = fkv::parse_uint64(pa->str("seed"), "--seed");
    if (!seed) return fail(seed.status());
    req.sampler.seed = *seed;
  }
  if (auto st = fkv::validate_sampler_config(req.sampler); !st) return fail(st);
  if (pa->has("threads")) {
    auto t = get_int(*pa, "threads", 0, 1, 1024);
    if (!t) return fail(t.status());
    fkv::set_num_threads(static_cast<int>(*t));
#ifdef FKV_OPENMP
    omp_set_num_threads(static_cast<int>(*t));  // engine and scoring regions too
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
      auto t = fkv::read_text_file(pa->str("chat-template"), "--chat-template",
                                   /*allow_empty=*/false);
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
    auto st = fkv::write_file_atomic(pa->str("dump-selection"),
                                     session.selection().to_json() + "\n", "--dump-selection");
    if (!st) return fail(st);
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
    auto t = fkv::read_text_file(pa->str("file"), "--file");
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

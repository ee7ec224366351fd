// fastkv generate: one prompt, streamed continuation on stdout, timing line on stderr.
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/file_io.h"
#include "core/parse_number.h"
#include "engine/app.h"
#include "engine/bench.h"
#include "engine/engine.h"
#include "kernels/matmul.h"
#include "kv/policy.h"

namespace fkv::cli {
namespace {

Expected<std::string> read_prompt(const ParsedArgs& pa) {
  if (pa.has("prompt") && pa.has("prompt-file")) {
    return Status::error("give either --prompt or --prompt-file, not both");
  }
  if (pa.has("prompt")) return pa.str("prompt");
  if (pa.has("prompt-file")) return read_text_file(pa.str("prompt-file"), "--prompt-file");
  return Status::error("missing --prompt TEXT or --prompt-file FILE");
}

const std::vector<ArgSpec>& generate_specs() {
  static const std::vector<ArgSpec> specs = [] {
    std::vector<ArgSpec> s = {
        {"model", ArgKind::kString, "model folder (HF layout), .gguf file, or a known short name"},
        {"prompt", ArgKind::kString, "prompt text"},
        {"prompt-file", ArgKind::kString, "read the prompt from a file"},
        {"chat", ArgKind::kFlag, "wrap the prompt as a user message in the model's chat template"},
        {"system", ArgKind::kString, "system message (with --chat)"},
        {"chat-template", ArgKind::kString,
         "Jinja chat template file to use instead of the model's"},
        {"max-new-tokens", ArgKind::kInt, "tokens to generate at most (default 128)"},
        {"temperature", ArgKind::kFloat, "sampling temperature; 0 = greedy (default 0)"},
        {"top-k", ArgKind::kInt, "keep the k most likely tokens (0 = off)"},
        {"top-p", ArgKind::kFloat, "nucleus sampling mass in (0, 1] (1 = off)"},
        {"seed", ArgKind::kInt,
         "RNG seed in [0, 2^64) (default 0); same seed, same output on every machine"},
        {"threads", ArgKind::kInt, "worker threads (default: all cores)"},
        {"kv-dtype", ArgKind::kString, "KV cache element type: f16 (default) | bf16 | f32"},
        {"ubatch", ArgKind::kInt,
         "prompt rows per chunk through the projections and MLP (default 512; rounded up to a "
         "multiple of 32); attention always sees the whole prompt"},
    };
    for (const ArgSpec& m : method_arg_specs()) s.push_back(m);
    s.push_back({"dump-selection", ArgKind::kString, "write what prefill kept to this JSON file"});
    s.push_back(
        {"no-stream", ArgKind::kFlag, "print the answer at the end instead of token by token"});
    s.push_back({"ignore-eos", ArgKind::kFlag,
                 "decode all --max-new-tokens tokens past end-of-text (benchmarks; as the server's "
                 "\"ignore_eos\")"});
    return s;
  }();
  return specs;
}

// --max-new-tokens, --temperature, --top-k, --top-p, --seed (validated).
Status read_sampling(const ParsedArgs& pa, GenerationRequest& req) {
  // The context bound is checked once the model is known; this bound keeps the narrowing exact.
  auto max_new = get_int(pa, "max-new-tokens", 128, 0, 1 << 30);
  if (!max_new) return max_new.status();
  req.max_new_tokens = static_cast<int>(*max_new);
  auto temperature = get_float(pa, "temperature", 0.0, 0.0, 1e6);
  if (!temperature) return temperature.status();
  req.sampler.temperature = static_cast<float>(*temperature);
  auto top_k = get_int(pa, "top-k", 0, 0, std::numeric_limits<int>::max());
  if (!top_k) return top_k.status();
  req.sampler.top_k = static_cast<int>(*top_k);
  // top_p is in (0, 1] (0 would keep no token): one message for every value outside, as the
  // sampler's own check words it.
  auto top_p = get_float(pa, "top-p", 1.0, -std::numeric_limits<double>::max(),
                         std::numeric_limits<double>::max());
  if (!top_p) return top_p.status();
  if (!(*top_p > 0.0 && *top_p <= 1.0)) {
    return Status::error(strfmt("--top-p must be in (0, 1], got '%s'", pa.str("top-p").c_str()));
  }
  req.sampler.top_p = static_cast<float>(*top_p);
  if (pa.has("seed")) {
    auto seed = parse_uint64(pa.str("seed"), "--seed");
    if (!seed) return seed.status();
    req.sampler.seed = *seed;
  }
  return validate_sampler_config(req.sampler);
}

}  // namespace

int cmd_generate(const std::vector<std::string>& args) {
  const char* usage =
      "usage: fastkv generate --model PATH (--prompt TEXT | --prompt-file FILE) [--chat]\n"
      "         [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S]\n"
      "         [--threads N] [--method SPEC [method options]] [--dump-selection FILE]\n\n"
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
    if (auto st = check_output_path(pa->str("dump-selection"), "--dump-selection"); !st)
      return fail(st);
  }
  auto prompt_text = read_prompt(*pa);
  if (!prompt_text) return fail(prompt_text.status());

  GenerationRequest req;
  if (auto st = read_sampling(*pa, req); !st) return fail(st);
  if (auto st = apply_threads(*pa); !st) return fail(st);
  PromptOptions prompt_opts;
  prompt_opts.chat = pa->has("chat");
  if (!prompt_opts.chat && (pa->has("system") || pa->has("chat-template"))) {
    return fail(Status::error("--system and --chat-template need --chat"));
  }
  prompt_opts.system = pa->str("system");
  if (pa->has("chat-template")) {
    auto t = read_text_file(pa->str("chat-template"), "--chat-template", /*allow_empty=*/false);
    if (!t) return fail(t.status());
    prompt_opts.chat_template = *t;
  }

  auto path = resolve_model_path(pa->str("model"));
  if (!path) return fail(path.status());
  auto model = Model::load(*path);
  if (!model) return fail(model.status());
  auto tok = load_tokenizer_for(**model);
  if (!tok) return fail(tok.status());
  const ModelConfig& cfg = (*model)->config();

  auto popts = policy_options(*pa);
  if (!popts) return fail(popts.status());
  auto policy = make_policy(*popts, (*model)->policy_info());
  if (!policy) return fail(policy.status());

  auto ids = encode_prompt(*tok, *prompt_text, prompt_opts);
  if (!ids) return fail(Status::error(strfmt("%s: %s", path->c_str(), ids.error().c_str())));
  req.prompt = std::move(ids.value());
  if (!pa->has("ignore-eos")) req.stop_ids = stop_ids_for(*tok, cfg);

  SessionOptions so;
  so.max_new_tokens = req.max_new_tokens;
  auto ubatch = get_int(*pa, "ubatch", so.ubatch, 1, 1 << 20);
  if (!ubatch) return fail(ubatch.status());
  so.ubatch = static_cast<int>(*ubatch);
  if (pa->has("kv-dtype")) {
    auto kv = parse_kv_dtype(pa->str("kv-dtype"));
    if (!kv) return fail(Status::error("--kv-dtype: " + kv.error()));
    so.kv_dtype = *kv;
  }
  Session session(**model, **policy, so);
  StreamDecoder stream(*tok, /*skip_special_tokens=*/true);
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
  auto result = generate(session, req, on_token);
  if (!result) return fail(result.status());
  std::string rest = stream.flush();
  if (streaming) {
    std::fwrite(rest.data(), 1, rest.size(), stdout);
  } else {
    collected += rest;
    std::fwrite(collected.data(), 1, collected.size(), stdout);
  }
  std::fputc('\n', stdout);
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    return fail(Status::error("cannot write the generated text to stdout"));
  }

  if (pa->has("dump-selection")) {
    auto st = write_file_atomic(pa->str("dump-selection"), session.selection().to_json() + "\n",
                                "--dump-selection");
    if (!st) return fail(st);
  }
  const Timing& t = session.timing();
  const double prefill_tps = t.prefill_s > 0 ? t.n_prompt / t.prefill_s : 0.0;
  const double decode_tps = t.decode_s > 0 ? t.n_decoded / t.decode_s : 0.0;
  std::fprintf(stderr,
               "[fastkv] method=%s prompt_tokens=%d generated=%zu prefill=%.3fs (%.1f tok/s) "
               "decode=%.1f tok/s kv_bytes_after_prefill=%zu kv_bytes=%zu threads=%d\n",
               (*policy)->name().c_str(), t.n_prompt, result->tokens.size(), t.prefill_s,
               prefill_tps, decode_tps, t.kv_bytes_after_prefill, session.kv_bytes(),
               num_threads());
  return 0;
}

}  // namespace fkv::cli

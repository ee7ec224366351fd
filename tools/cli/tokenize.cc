// fastkv tokenize: the token ids of a text.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/file_io.h"
#include "engine/app.h"

namespace fkv::cli {

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
    auto t = read_text_file(pa->str("file"), "--file");
    if (!t) return fail(t.status());
    text = *t;
  }
  std::optional<Tokenizer> tok;
  if (pa->has("model")) {
    auto path = resolve_model_path(pa->str("model"));
    if (!path) return fail(path.status());
    auto model = Model::load(*path);
    if (!model) return fail(model.status());
    auto t = load_tokenizer_for(**model);
    if (!t) return fail(t.status());
    tok.emplace(std::move(t.value()));
  } else {
    const std::string f = pa->str("tokenizer");
    auto t =
        f.ends_with(".model") ? Tokenizer::from_sentencepiece_model(f) : Tokenizer::from_hf_json(f);
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

}  // namespace fkv::cli

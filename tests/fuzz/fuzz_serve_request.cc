// libFuzzer target: arbitrary bytes as the body of a /v1/completions (first byte even) or
// /v1/chat/completions (odd) request, through the server's own validation (serve/request.h) on a
// tiny Qwen3 model with the Qwen3 tokenizer and chat template. Every body must become a job that
// fits the context, or an error naming a status and a message; never a crash or a hang.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "engine/app.h"
#include "model/model.h"
#include "serve/request.h"
#include "tokenizer/tokenizer.h"

namespace {

struct Fixture {
  std::unique_ptr<fkv::Model> model;
  std::unique_ptr<fkv::Tokenizer> tok;
  fkv::serve::RequestContext ctx;
};

const Fixture& fixture() {
  static const Fixture* f = [] {
    auto* fx = new Fixture;
    auto model = fkv::Model::load(std::string(FKV_SOURCE_DIR) + "/tests/data/models/tiny-qwen3");
    const std::string dir = std::string(FKV_SHARED_DIR) + "/tokenizers/qwen3";
    auto tok =
        fkv::Tokenizer::from_hf_json(dir + "/tokenizer.json", dir + "/tokenizer_config.json");
    if (!model || !tok) {
      std::fprintf(stderr, "fuzz_serve_request: cannot load the fixture: %s\n",
                   !model ? model.error().c_str() : tok.error().c_str());
      std::abort();
    }
    fx->model = std::move(model.value());
    fx->tok = std::make_unique<fkv::Tokenizer>(std::move(tok.value()));
    fx->ctx.model = fx->model.get();
    fx->ctx.tok = fx->tok.get();
    fx->ctx.default_max_tokens = 64;
    fx->ctx.kv_memory = size_t{1} << 20;
    fx->ctx.stop_ids = fkv::stop_ids_for(*fx->tok, fx->model->config());
    return fx;
  }();
  return *f;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const Fixture& f = fixture();
  const bool chat = (data[0] & 1) != 0;
  const std::string body(reinterpret_cast<const char*>(data + 1), size - 1);
  fkv::serve::Parsed parsed;
  auto err = fkv::serve::parse_request(f.ctx, body, chat, parsed);
  if (err) {
    // An error always says what is wrong, with a 4xx status.
    if (err->message.empty() || err->status < 400 || err->status > 499) __builtin_trap();
    return 0;
  }
  // An accepted request is a job the scheduler can run: prompt ids in the vocabulary, room for
  // max_tokens in the context, a reservation within --kv-memory.
  const auto& job = *parsed.job;
  const int n_ctx = f.model->config().n_ctx;
  if (job.prompt.empty() || job.max_tokens < 1 ||
      static_cast<int64_t>(job.prompt.size()) + job.max_tokens > n_ctx ||
      job.reserve_bytes > f.ctx.kv_memory) {
    __builtin_trap();
  }
  return 0;
}

// `fastkv serve`'s request side, apart from HTTP: an OpenAI completions / chat body (JSON text)
// is validated field by field into a scheduler Job, or refused with an OpenAI-style error naming
// the field, what it got and what it expects. Kept free of the HTTP library so that the fuzzer
// (tests/fuzz/fuzz_serve_request.cc) and the server run the same code.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "kv/policy.h"
#include "model/model.h"
#include "serve/scheduler.h"
#include "tokenizer/tokenizer.h"

namespace fkv::serve {

// ---- errors, OpenAI style: {"error": {"message", "type", "param", "code"}} ----

struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // empty: null
  std::string code;   // empty: null
};

// JSON text of j; invalid UTF-8 in strings is replaced, never thrown on.
std::string dump(const nlohmann::json& j);
nlohmann::json error_json(const ApiError& e);
// A 400 invalid_request_error for `param`.
ApiError bad(const std::string& param, const std::string& message);

// What the request side needs of the server: the model, its tokenizer and the server's defaults.
struct RequestContext {
  const Model* model = nullptr;
  const Tokenizer* tok = nullptr;
  PolicyOptions default_method;
  int default_max_tokens = 256;
  size_t kv_memory = 0;  // --kv-memory (0: none)
  std::vector<int32_t> stop_ids;
};

// What a validated request becomes, besides its Job.
struct Parsed {
  std::shared_ptr<Job> job;
  bool chat = false;
  bool stream = false;
  bool include_usage = false;
  bool logprobs = false;
  std::vector<std::string> stop;
};

// Validates a POST body of /v1/completions (chat = false) or /v1/chat/completions (chat = true);
// on success `out` holds the job, ready for Scheduler::submit.
std::optional<ApiError> parse_request(const RequestContext& ctx, const std::string& text, bool chat,
                                      Parsed& out);

}  // namespace fkv::serve

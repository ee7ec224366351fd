// fastkv._core: the engine as a Python extension (pybind11). The public API, its docstrings and
// argument checks live in python/fastkv/__init__.py; this layer maps engine objects one to one,
// releases the GIL around every model computation, and turns engine errors into ValueError
// (arguments) or OSError (files) carrying the engine's message.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <type_traits>

#include "engine/app.h"
#include "engine/engine.h"
#include "engine/stop_strings.h"
#include "io/gguf.h"
#include "kernels/matmul.h"
#include "kv/method_spec.h"
#include "kv/policy.h"

namespace py = pybind11;

namespace fkv::py_binding {
namespace {

// Raised as OSError / FileNotFoundError by the translator registered in the module.
struct FileError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct MissingFileError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void check_ok(const Status& st) {
  if (!st) throw py::value_error(st.message());
}
template <class T>
T value_or_raise(Expected<T> e) {
  if (!e) throw py::value_error(e.error());
  return std::move(e).value();
}

std::string type_name(py::handle obj) { return py::str(py::type::handle_of(obj).attr("__name__")); }

// ---- model ----------------------------------------------------------------------------------

struct ModelHandle {
  std::unique_ptr<Model> model;
  std::shared_ptr<Tokenizer> tokenizer;  // null when the model ships none
  std::string tokenizer_error;           // why, then
  int threads = 0;                       // 0: leave the thread count as it is
};
using ModelPtr = std::shared_ptr<ModelHandle>;

// Kernel thread counts are per calling thread (core/thread_pool.h), so every call that computes
// sets it on the thread it runs on (the Python thread, or a stream's worker).
void apply_threads(int threads) {
  if (threads <= 0) return;
  set_num_threads(threads);
}

ModelPtr load_model(const std::string& name_or_path, int threads) {
  if (threads < 0 || threads > 1024) {
    throw py::value_error(strfmt("threads must be in [1, 1024], got %d", threads));
  }
  // The pool reads it lazily (and aborts on a bad value): check it where Python can raise.
  if (Status st = check_engine_environment(); !st) throw py::value_error(st.message());
  auto handle = std::make_shared<ModelHandle>();
  handle->threads = threads;
  py::gil_scoped_release nogil;
  auto path = resolve_model_path(name_or_path);
  if (!path) throw MissingFileError(path.error());
  auto model = Model::load(*path);
  if (!model) throw FileError(model.error());
  handle->model = std::move(model.value());
  auto tok = load_tokenizer_for(*handle->model);
  if (tok) {
    handle->tokenizer = std::make_shared<Tokenizer>(std::move(tok.value()));
  } else {
    handle->tokenizer_error = tok.error();
  }
  apply_threads(threads);
  return handle;
}

const char* arch_label(Arch a) {
  switch (a) {
    case Arch::kLlama:
      return "llama";
    case Arch::kMistral:
      return "mistral";
    case Arch::kQwen2:
      return "qwen2";
    case Arch::kQwen3:
      return "qwen3";
  }
  return "unknown";
}

// HF config.json names, so that m.config["num_hidden_layers"] reads as in transformers.
py::dict config_dict(const ModelHandle& mh) {
  const ModelConfig& c = mh.model->config();
  py::dict d;
  d["model_type"] = arch_label(c.arch);
  d["architecture"] = c.arch_name;
  d["name_or_path"] = c.model_name;
  d["num_hidden_layers"] = c.n_layers;
  d["hidden_size"] = c.d_model;
  d["num_attention_heads"] = c.n_heads;
  d["num_key_value_heads"] = c.n_kv_heads;
  d["head_dim"] = c.head_dim;
  d["intermediate_size"] = c.d_ff;
  d["vocab_size"] = c.n_vocab;
  d["max_position_embeddings"] = c.n_ctx;
  d["rms_norm_eps"] = c.rms_eps;
  d["rope_theta"] = c.rope_theta;
  py::dict rope;
  rope["rope_type"] = c.rope_scaling.type;
  rope["factor"] = c.rope_scaling.factor;
  rope["low_freq_factor"] = c.rope_scaling.low_freq_factor;
  rope["high_freq_factor"] = c.rope_scaling.high_freq_factor;
  rope["original_max_position_embeddings"] = c.rope_scaling.original_max_position_embeddings;
  d["rope_scaling"] = rope;
  d["sliding_window"] = c.sliding_window > 0 ? py::object(py::int_(c.sliding_window)) : py::none();
  d["tie_word_embeddings"] = c.tie_embeddings;
  d["attention_bias"] = c.attn_qkv_bias;
  d["qk_norm"] = c.qk_norm;
  d["eos_token_id"] = c.eos_token_ids;
  d["bos_token_id"] = c.bos_token_id >= 0 ? py::object(py::int_(c.bos_token_id)) : py::none();
  d["format"] = mh.model->is_gguf() ? "gguf" : "safetensors";
  d["weight_bytes"] = mh.model->weight_bytes();
  return d;
}

// ---- argument conversion --------------------------------------------------------------------

[[noreturn]] void raise_out_of_vocab(const std::string& value, size_t i, const char* what,
                                     int n_vocab) {
  throw py::value_error(strfmt("token id %s at %s position %zu is outside the vocabulary [0, %d)",
                               value.c_str(), what, i, n_vocab));
}

// A sequence of ints or a 1-D integer NumPy array -> int32 ids. Values beyond int32 are reported
// here (they cannot be narrowed); the engine reports the rest of the vocabulary range.
// `what` names the argument in type errors, `where` the positions as the engine words them
// ("prompt", "extend").
std::vector<int32_t> to_ids(py::handle obj, const char* what, const char* where, int n_vocab) {
  if (py::isinstance<py::str>(obj) || py::isinstance<py::bytes>(obj)) {
    throw py::type_error(
        strfmt("%s must be a sequence of token ids (ints), not %s; encode text "
               "with the tokenizer first",
               what, type_name(obj).c_str()));
  }
  std::vector<int32_t> ids;
  if (py::isinstance<py::array>(obj)) {
    auto arr = py::reinterpret_borrow<py::array>(obj);
    if (arr.ndim() != 1) {
      throw py::value_error(strfmt("%s must be a 1-D array of token ids, got %d dimensions", what,
                                   static_cast<int>(arr.ndim())));
    }
    const char kind = arr.dtype().kind();
    if (arr.size() > 0 && kind != 'i' && kind != 'u') {
      throw py::type_error(strfmt("%s must hold integer token ids, got dtype %s", what,
                                  std::string(py::str(arr.dtype())).c_str()));
    }
    if (kind == 'u') {
      auto u = py::array_t<uint64_t, py::array::c_style | py::array::forcecast>::ensure(arr);
      for (py::ssize_t i = 0; i < u.size(); ++i) {
        if (u.data()[i] > static_cast<uint64_t>(INT32_MAX))
          raise_out_of_vocab(std::to_string(u.data()[i]), i, where, n_vocab);
        ids.push_back(static_cast<int32_t>(u.data()[i]));
      }
      return ids;
    }
    auto s = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(arr);
    for (py::ssize_t i = 0; i < s.size(); ++i) {
      const int64_t v = s.data()[i];
      if (v < INT32_MIN || v > INT32_MAX) raise_out_of_vocab(std::to_string(v), i, where, n_vocab);
      ids.push_back(static_cast<int32_t>(v));
    }
    return ids;
  }
  if (!py::isinstance<py::iterable>(obj)) {
    throw py::type_error(
        strfmt("%s must be a sequence of token ids (ints), not %s", what, type_name(obj).c_str()));
  }
  size_t i = 0;
  for (py::handle item : obj) {
    if (PyFloat_Check(item.ptr()) || !PyIndex_Check(item.ptr())) {
      throw py::type_error(
          strfmt("%s[%zu] must be an int token id, not %s", what, i, type_name(item).c_str()));
    }
    py::object index = py::reinterpret_steal<py::object>(PyNumber_Index(item.ptr()));
    if (!index) throw py::error_already_set();
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
    if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
    if (overflow != 0 || v < INT32_MIN || v > INT32_MAX) {
      raise_out_of_vocab(py::str(index), i, where, n_vocab);
    }
    ids.push_back(static_cast<int32_t>(v));
    ++i;
  }
  return ids;
}

int32_t to_token(py::handle obj, int n_vocab) {
  if (PyFloat_Check(obj.ptr()) || !PyIndex_Check(obj.ptr())) {
    throw py::type_error(strfmt("token must be an int token id, not %s", type_name(obj).c_str()));
  }
  py::object index = py::reinterpret_steal<py::object>(PyNumber_Index(obj.ptr()));
  if (!index) throw py::error_already_set();
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
  if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
  if (overflow != 0 || v < INT32_MIN || v > INT32_MAX) {
    throw py::value_error(strfmt("token id %s is outside the vocabulary [0, %d)",
                                 std::string(py::str(index)).c_str(), n_vocab));
  }
  return static_cast<int32_t>(v);
}

// NumPy arrays that own the engine's buffer (no copy).
template <class T>
py::array_t<T> to_numpy(std::vector<T>&& v, std::vector<py::ssize_t> shape) {
  auto* heap = new std::vector<T>(std::move(v));
  py::capsule owner(heap, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>(shape, heap->data(), owner);
}
template <class T>
py::array_t<T> to_numpy(const std::vector<T>& v) {
  return to_numpy(std::vector<T>(v), {static_cast<py::ssize_t>(v.size())});
}

std::unique_ptr<KvPolicy> policy_for(const ModelHandle& mh, const std::string& spec) {
  PolicyOptions opts = value_or_raise(parse_method_spec(spec));
  return value_or_raise(make_policy(opts, mh.model->policy_info()));
}

// "name[:k=v,...]" plus (key, text value) pairs -> canonical spec; the one parser checks names,
// keys and values.
std::string canonical_method_spec(const std::string& spec,
                                  const std::vector<std::pair<std::string, std::string>>& extra) {
  PolicyOptions opts = value_or_raise(parse_method_spec(spec));
  for (const auto& [key, value] : extra) check_ok(set_method_option(opts, key, value));
  const std::string canonical = format_method_spec(opts);
  value_or_raise(parse_method_spec(canonical));  // does every key apply to the method?
  return canonical;
}

// ---- tokenizer ------------------------------------------------------------------------------

using TokenizerPtr = std::shared_ptr<Tokenizer>;

TokenizerPtr tokenizer_from_file(const std::string& path, const std::string& config_path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(path, ec)) throw MissingFileError(path + ": no such tokenizer file or folder");
  fs::path p(path);
  std::string config = config_path;
  if (fs::is_directory(p, ec)) {
    if (fs::exists(p / "tokenizer.json", ec)) {
      if (config.empty() && fs::exists(p / "tokenizer_config.json", ec))
        config = (p / "tokenizer_config.json").string();
      p = p / "tokenizer.json";
    } else if (fs::exists(p / "tokenizer.model", ec)) {
      p = p / "tokenizer.model";
    } else {
      throw MissingFileError(path + ": no tokenizer.json or tokenizer.model in this folder");
    }
  }
  py::gil_scoped_release nogil;
  const std::string ext = p.extension().string();
  Expected<Tokenizer> tok = Status::error("unset");
  if (ext == ".gguf") {
    auto file = GgufFile::open(p.string());
    if (!file) throw FileError(file.error());
    tok = Tokenizer::from_gguf(*file);
  } else if (ext == ".model") {
    tok = Tokenizer::from_sentencepiece_model(p.string());
  } else {
    tok = Tokenizer::from_hf_json(p.string(), config);
  }
  if (!tok) throw FileError(tok.error());
  return std::make_shared<Tokenizer>(std::move(tok.value()));
}

TokenizerPtr tokenizer_from_json(const std::string& json, const std::string& config_json) {
  auto tok = Tokenizer::from_hf_json_string(json, config_json);
  if (!tok) throw py::value_error(tok.error());
  return std::make_shared<Tokenizer>(std::move(tok.value()));
}

TokenizerPtr model_tokenizer(const ModelPtr& mh) {
  if (!mh->tokenizer) throw FileError(mh->tokenizer_error);
  return TokenizerPtr(mh, mh->tokenizer.get());  // keeps the model alive
}

std::vector<ChatMessage> to_messages(const std::vector<std::pair<std::string, std::string>>& m) {
  std::vector<ChatMessage> out;
  for (const auto& [role, content] : m) out.push_back({role, content});
  return out;
}

// ---- generation -----------------------------------------------------------------------------

struct GenerateArgs {
  std::vector<int32_t> prompt;
  int max_new_tokens = 128;
  SamplerConfig sampler;
  std::vector<int32_t> stop_ids;  // besides the model's end-of-generation ids
  std::vector<std::string> stop_strings;
  std::string method;
};

struct GenerateOutput {
  std::vector<int32_t> prompt;
  std::vector<int32_t> tokens;
  bool has_text = false;
  std::string text;
  std::string finish_reason;
  std::string method;
  Timing timing;
  size_t kv_bytes = 0;
};

py::dict timing_dict(const Timing& t) {
  py::dict d;
  d["n_prompt"] = t.n_prompt;
  d["n_decoded"] = t.n_decoded;
  d["prefill_s"] = t.prefill_s;
  d["decode_s"] = t.decode_s;
  d["prefill_tokens_per_s"] = t.prefill_s > 0 ? t.n_prompt / t.prefill_s : 0.0;
  d["decode_tokens_per_s"] = t.decode_s > 0 ? t.n_decoded / t.decode_s : 0.0;
  return d;
}

py::dict output_dict(const GenerateOutput& o) {
  py::dict d;
  d["text"] = o.has_text ? py::object(py::str(o.text)) : py::none();
  d["token_ids"] = o.tokens;
  d["prompt_ids"] = o.prompt;
  d["finish_reason"] = o.finish_reason;
  d["method"] = o.method;
  d["timing"] = timing_dict(o.timing);
  d["kv_bytes"] = o.kv_bytes;
  d["kv_bytes_after_prefill"] = o.timing.kv_bytes_after_prefill;
  return d;
}

// Checks what can be checked before any work (engine messages) and builds the policy.
std::unique_ptr<KvPolicy> prepare_generation(const ModelHandle& mh, const GenerateArgs& args) {
  if (args.max_new_tokens < 0) {
    throw py::value_error(strfmt("max_new_tokens must be >= 0, got %d", args.max_new_tokens));
  }
  check_ok(validate_sampler_config(args.sampler));
  for (const std::string& s : args.stop_strings) {
    if (s.empty()) throw py::value_error("stop strings must not be empty");
  }
  if (!args.stop_strings.empty() && !mh.tokenizer) {
    throw FileError("stop strings need the model's tokenizer: " + mh.tokenizer_error);
  }
  return policy_for(mh, args.method);
}

// The one generation path of the module: app.h's generate() with the stream decoder of the CLI;
// emit(piece) gets each releasable text piece ("" when there is no tokenizer) and returns false
// to stop. Runs without the GIL.
Expected<GenerateOutput> run_generation(const ModelHandle& mh, const GenerateArgs& args,
                                        KvPolicy& policy,
                                        const std::function<bool(const std::string&)>& emit,
                                        std::function<bool()> interrupted) {
  apply_threads(mh.threads);
  const ModelConfig& cfg = mh.model->config();
  const Tokenizer* tok = mh.tokenizer.get();
  GenerationRequest req;
  req.prompt = args.prompt;
  req.max_new_tokens = args.max_new_tokens;
  req.sampler = args.sampler;
  if (tok != nullptr) {
    req.stop_ids = stop_ids_for(*tok, cfg);
  } else {
    for (int id : cfg.eos_token_ids) req.stop_ids.push_back(id);
  }
  for (int32_t id : args.stop_ids) {
    if (std::find(req.stop_ids.begin(), req.stop_ids.end(), id) == req.stop_ids.end())
      req.stop_ids.push_back(id);
  }
  SessionOptions so;
  so.max_new_tokens = args.max_new_tokens;
  so.interrupted = std::move(interrupted);
  Session session(*mh.model, policy, so);
  std::optional<StreamDecoder> decoder;
  if (tok != nullptr) decoder.emplace(*tok, /*skip_special_tokens=*/true);
  StopStringMatcher matcher(args.stop_strings);
  GenerateOutput out;
  out.prompt = args.prompt;
  out.has_text = tok != nullptr;
  bool cancelled = false;
  auto on_token = [&](int32_t id) {
    std::string piece = decoder ? matcher.push(decoder->push(id)) : std::string();
    out.text += piece;
    if (!emit(piece)) {
      cancelled = true;
      return false;
    }
    return !matcher.matched();
  };
  auto result = generate(session, req, on_token);
  if (!result) return result.status();
  if (decoder && !matcher.matched() && !cancelled) {
    std::string rest = matcher.push(decoder->flush());
    if (!matcher.matched()) rest += matcher.finish();
    out.text += rest;
    if (!rest.empty()) emit(rest);
  }
  out.tokens = std::move(result->tokens);
  out.finish_reason = matcher.matched()        ? "stop_string"
                      : result->stopped_on_eos ? "stop"
                      : cancelled              ? "cancelled"
                                               : "length";
  out.method = format_method_spec(value_or_raise(parse_method_spec(args.method)));
  out.timing = session.timing();
  out.kv_bytes = session.kv_bytes();
  return out;
}

// SessionOptions::interrupted for a call made without the GIL from a Python thread: takes the GIL
// and runs Python's pending signal handlers (only the main thread's run); true once one raised
// (KeyboardInterrupt for Ctrl-C), which then stays set for the caller to re-raise. *raised says so.
std::function<bool()> python_signal_check(bool* raised) {
  return [raised] {
    if (*raised) return true;
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) *raised = true;
    return *raised;
  };
}

py::dict generate_blocking(const ModelPtr& mh, GenerateArgs args) {
  std::unique_ptr<KvPolicy> policy = prepare_generation(*mh, args);
  bool interrupted = false;
  Expected<GenerateOutput> out = Status::error("unset");
  {
    py::gil_scoped_release nogil;
    int count = 0;
    // Ctrl-C in a notebook stops the loop (checked every few tokens; only the main thread
    // receives signals).
    auto emit = [&](const std::string&) {
      if (++count % 8 != 0) return true;
      py::gil_scoped_acquire gil;
      if (PyErr_CheckSignals() != 0) {
        interrupted = true;
        return false;
      }
      return true;
    };
    // Ctrl-C also stops a long prompt's prefill within one chunk or layer.
    out = run_generation(*mh, args, *policy, emit, python_signal_check(&interrupted));
  }
  if (interrupted) throw py::error_already_set();
  if (!out) throw py::value_error(out.error());
  return output_dict(*out);
}

// stream=True: the generation runs on its own thread (without the GIL) and hands text pieces
// to the Python iterator through a queue; closing the iterator stops the generation.
class GenerationStream {
 public:
  GenerationStream(ModelPtr mh, GenerateArgs args) : state_(std::make_shared<State>()) {
    std::shared_ptr<KvPolicy> policy = prepare_generation(*mh, args);
    worker_ = std::thread([state = state_, mh = std::move(mh), args = std::move(args), policy] {
      Expected<GenerateOutput> out = Status::error("unset");
      try {
        out = run_generation(*mh, args, *policy,
                             [&](const std::string& piece) {
                               if (state->cancel.load()) return false;
                               if (!piece.empty()) {
                                 std::lock_guard<std::mutex> lock(state->mu);
                                 state->pieces.push_back(piece);
                               }
                               state->cv.notify_one();
                               return true;
                             },
                             /*interrupted=*/{});
      } catch (const std::exception& e) {
        out = Status::error(e.what());
      }
      std::lock_guard<std::mutex> lock(state->mu);
      if (out) {
        state->output = std::move(out.value());
      } else {
        state->error = out.error();
      }
      state->done = true;
      state->cv.notify_all();
    });
  }
  ~GenerationStream() { close(); }
  GenerationStream(const GenerationStream&) = delete;
  GenerationStream& operator=(const GenerationStream&) = delete;

  // The next piece; nullopt at the end. Raises the generation's error once.
  std::optional<std::string> next() {
    py::gil_scoped_release nogil;
    std::unique_lock<std::mutex> lock(state_->mu);
    for (;;) {
      if (!state_->pieces.empty()) {
        std::string piece = std::move(state_->pieces.front());
        state_->pieces.pop_front();
        return piece;
      }
      if (state_->done) {
        ended_ = true;
        if (!state_->error.empty() && !error_raised_) {
          error_raised_ = true;
          throw py::value_error(state_->error);
        }
        return std::nullopt;
      }
      state_->cv.wait_for(lock, std::chrono::milliseconds(100));
      lock.unlock();
      {
        py::gil_scoped_acquire gil;
        if (PyErr_CheckSignals() != 0) throw py::error_already_set();
      }
      lock.lock();
    }
  }

  void close() {
    state_->cancel.store(true);
    if (worker_.joinable()) {
      py::gil_scoped_release nogil;
      worker_.join();
    }
    ended_ = true;
  }

  // None until the caller has seen the end (the iterator exhausted, or close()): the engine
  // thread may finish while pieces are still queued, and the answer must not depend on that race.
  py::object result() const {
    if (!ended_) return py::none();
    std::lock_guard<std::mutex> lock(state_->mu);
    if (!state_->output) return py::none();
    return output_dict(*state_->output);
  }

 private:
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::string> pieces;
    bool done = false;
    std::atomic<bool> cancel{false};
    std::optional<GenerateOutput> output;
    std::string error;
  };
  std::shared_ptr<State> state_;
  std::thread worker_;
  bool error_raised_ = false;
  std::atomic<bool> ended_{false};  // the caller has seen the end (set by next() or close())
};

// ---- sessions -------------------------------------------------------------------------------

class SessionHandle {
 public:
  SessionHandle(ModelPtr mh, const std::string& method, int max_new_tokens) : mh_(std::move(mh)) {
    if (max_new_tokens < 0) {
      throw py::value_error(strfmt("max_new_tokens must be >= 0, got %d", max_new_tokens));
    }
    policy_ = policy_for(*mh_, method);
    method_ = format_method_spec(value_or_raise(parse_method_spec(method)));
    SessionOptions so;
    so.max_new_tokens = max_new_tokens;
    // Ctrl-C stops a prefill or extend within one chunk or layer; the session then refuses further
    // calls (its cache is half-written), saying so.
    so.interrupted = python_signal_check(&signal_raised_);
    session_ = std::make_unique<Session>(*mh_->model, *policy_, so);
  }

  py::array_t<float> prefill(py::handle ids_obj) {
    std::vector<int32_t> ids = to_ids(ids_obj, "ids", "prompt", n_vocab());
    return run([&](std::vector<float>& logits) { return session_->prefill(ids, logits); });
  }
  py::array_t<float> extend(py::handle ids_obj) {
    std::vector<int32_t> ids = to_ids(ids_obj, "ids", "extend", n_vocab());
    return run([&](std::vector<float>& logits) { return session_->extend(ids, logits); });
  }
  py::array_t<float> decode(py::handle token_obj) {
    const int32_t token = to_token(token_obj, n_vocab());
    return run([&](std::vector<float>& logits) { return session_->decode(token, logits); });
  }

  py::dict kept_positions() {
    SelectionRecord sel;
    {
      py::gil_scoped_release nogil;
      std::lock_guard<std::mutex> lock(mu_);
      sel = session_->selection();
    }
    if (sel.n_prompt == 0) throw py::value_error("kept_positions before prefill");
    py::list layers;
    for (const auto& layer : sel.layers) {
      py::list heads;
      for (const auto& kept : layer.kept) heads.append(to_numpy(kept));
      layers.append(heads);
    }
    py::dict d;
    d["layers"] = layers;
    d["tsp"] = sel.tsp ? py::object(to_numpy(sel.tsp->positions)) : py::none();
    return d;
  }

  py::list cache_positions() {
    std::vector<std::vector<std::vector<int32_t>>> pos;
    {
      py::gil_scoped_release nogil;
      std::lock_guard<std::mutex> lock(mu_);
      pos = session_->cache_positions();
    }
    py::list layers;
    for (const auto& layer : pos) {
      py::list heads;
      for (const auto& head : layer) heads.append(to_numpy(head));
      layers.append(heads);
    }
    return layers;
  }

  size_t kv_bytes() {
    return locked([&] { return session_->kv_bytes(); });
  }
  int next_pos() {
    return locked([&] { return session_->next_pos(); });
  }
  py::dict timing() {
    return timing_dict(locked([&] { return session_->timing(); }));
  }
  const std::string& method() const { return method_; }

 private:
  int n_vocab() const { return mh_->model->config().n_vocab; }

  template <class F>
  std::invoke_result_t<F> locked(F f) {
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(mu_);
    return f();
  }

  // One engine call without the GIL, one at a time per session; returns its logits.
  template <class F>
  py::array_t<float> run(F call) {
    std::vector<float> logits;
    Status st = Status::ok();
    {
      py::gil_scoped_release nogil;
      std::lock_guard<std::mutex> lock(mu_);
      apply_threads(mh_->threads);
      signal_raised_ = false;
      st = call(logits);
    }
    if (signal_raised_) throw py::error_already_set();
    check_ok(st);
    const auto n = static_cast<py::ssize_t>(logits.size());
    return to_numpy(std::move(logits), {n});
  }

  ModelPtr mh_;
  std::unique_ptr<KvPolicy> policy_;
  std::unique_ptr<Session> session_;
  std::string method_;
  std::mutex mu_;
  bool signal_raised_ = false;  // the running call was stopped by a Python signal handler
};

py::array_t<float> all_logits(const ModelPtr& mh, py::handle ids_obj) {
  const int n_vocab = mh->model->config().n_vocab;
  std::vector<int32_t> ids = to_ids(ids_obj, "ids", "prompt", n_vocab);
  std::unique_ptr<KvPolicy> policy = policy_for(*mh, "fullkv");
  std::vector<float> logits;  // [n, n_vocab]
  Status st = Status::ok();
  {
    py::gil_scoped_release nogil;
    apply_threads(mh->threads);
    SessionOptions so;
    so.max_new_tokens = 0;
    Session session(*mh->model, *policy, so);
    st = session.prefill_all_logits(ids, logits);
  }
  check_ok(st);
  return to_numpy(std::move(logits), {static_cast<py::ssize_t>(ids.size()), n_vocab});
}

const char* kind_label(MethodOptionKind k) {
  switch (k) {
    case MethodOptionKind::kInt:
      return "int";
    case MethodOptionKind::kFloat:
      return "float";
    case MethodOptionKind::kString:
      return "str";
    case MethodOptionKind::kBool:
      return "bool";
  }
  return "str";
}

py::list option_infos(const std::vector<MethodOptionInfo>& infos) {
  py::list out;
  for (const MethodOptionInfo& i : infos) {
    py::dict d;
    d["key"] = i.key;
    d["kind"] = kind_label(i.kind);
    d["help"] = i.help;
    out.append(d);
  }
  return out;
}

std::optional<int32_t> optional_id(int32_t id) {
  return id >= 0 ? std::optional<int32_t>(id) : std::nullopt;
}

}  // namespace
}  // namespace fkv::py_binding

PYBIND11_MODULE(_core, m) {
  using namespace fkv;
  using namespace fkv::py_binding;
  m.doc() = "fastkv engine binding (internal; use the fastkv package)";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const MissingFileError& e) {
      PyErr_SetString(PyExc_FileNotFoundError, e.what());
    } catch (const FileError& e) {
      PyErr_SetString(PyExc_OSError, e.what());
    }
  });

  m.def("policy_names", &policy_names);
  m.def("method_option_infos", [] { return option_infos(method_option_infos()); });
  m.def("method_options", [](const std::string& method) {
    return option_infos(value_or_raise(method_options(method)));
  });
  m.def("canonical_method_spec", &canonical_method_spec, py::arg("spec"),
        py::arg("options") = std::vector<std::pair<std::string, std::string>>());
  m.def("known_model_names", &known_model_names);
  m.def("model_cache_dir", &model_cache_dir);

  py::class_<Tokenizer, TokenizerPtr>(m, "Tokenizer")
      .def_static("from_file", &tokenizer_from_file, py::arg("path"), py::arg("config") = "")
      .def_static("from_json_string", &tokenizer_from_json, py::arg("json"), py::arg("config") = "")
      .def(
          "encode",
          [](const Tokenizer& t, const std::string& text, bool add_special_tokens) {
            py::gil_scoped_release nogil;
            return t.encode(text, add_special_tokens);
          },
          py::arg("text"), py::arg("add_special_tokens"))
      .def(
          "decode",
          [](const Tokenizer& t, py::handle ids_obj, bool skip_special_tokens) {
            std::vector<int32_t> ids = to_ids(ids_obj, "ids", "ids", t.vocab_size());
            for (size_t i = 0; i < ids.size(); ++i) {
              if (ids[i] < 0 || ids[i] >= t.vocab_size())
                raise_out_of_vocab(std::to_string(ids[i]), i, "ids", t.vocab_size());
            }
            py::gil_scoped_release nogil;
            return t.decode(ids, skip_special_tokens);
          },
          py::arg("ids"), py::arg("skip_special_tokens"))
      .def(
          "render_chat",
          [](const Tokenizer& t, const std::vector<std::pair<std::string, std::string>>& messages,
             bool add_generation_prompt, const std::string& chat_template) {
            return value_or_raise(
                render_chat(t, to_messages(messages), chat_template, add_generation_prompt));
          },
          py::arg("messages"), py::arg("add_generation_prompt"), py::arg("chat_template"))
      .def(
          "encode_prompt",
          [](const Tokenizer& t, const std::string& text, bool chat, const std::string& system,
             const std::string& chat_template) {
            PromptOptions po;
            po.chat = chat;
            po.system = system;
            po.chat_template = chat_template;
            return value_or_raise(encode_prompt(t, text, po));
          },
          py::arg("text"), py::arg("chat"), py::arg("system"), py::arg("chat_template"))
      .def_property_readonly("vocab_size", &Tokenizer::vocab_size)
      .def_property_readonly("bos_token_id",
                             [](const Tokenizer& t) { return optional_id(t.bos_id()); })
      .def_property_readonly("eos_token_id",
                             [](const Tokenizer& t) { return optional_id(t.eos_id()); })
      .def_property_readonly("bos_token", &Tokenizer::bos_token)
      .def_property_readonly("eos_token", &Tokenizer::eos_token)
      .def_property_readonly("chat_template", &Tokenizer::chat_template)
      .def_property_readonly("end_of_generation_ids", &Tokenizer::end_of_generation_ids)
      .def("id_to_token",
           [](const Tokenizer& t, py::handle id_obj) {
             const int32_t id = to_token(id_obj, t.vocab_size());
             if (id < 0 || id >= t.vocab_size()) {
               throw py::value_error(
                   strfmt("token id %d is outside the vocabulary [0, %d)", id, t.vocab_size()));
             }
             return t.id_to_token(id);
           })
      .def("token_to_id",
           [](const Tokenizer& t, const std::string& token) { return t.token_to_id(token); });

  py::class_<ModelHandle, ModelPtr>(m, "Model")
      .def(py::init(&load_model), py::arg("path_or_name"), py::arg("threads") = 0)
      .def_property_readonly("config", &config_dict)
      .def_property_readonly("path", [](const ModelHandle& h) { return h.model->path(); })
      .def_property_readonly("threads", [](const ModelHandle& h) { return h.threads; })
      .def_property_readonly("tokenizer", &model_tokenizer)
      .def_property_readonly("has_tokenizer",
                             [](const ModelHandle& h) { return h.tokenizer != nullptr; })
      .def("logits", &all_logits, py::arg("ids"))
      .def(
          "generate",
          [](const ModelPtr& mh, py::handle ids, int max_new_tokens, float temperature, int top_k,
             float top_p, uint64_t seed, const std::vector<int32_t>& stop_ids,
             const std::vector<std::string>& stop_strings, const std::string& method) {
            GenerateArgs a;
            a.prompt = to_ids(ids, "prompt", "prompt", mh->model->config().n_vocab);
            a.max_new_tokens = max_new_tokens;
            a.sampler = {temperature, top_k, top_p, seed};
            a.stop_ids = stop_ids;
            a.stop_strings = stop_strings;
            a.method = method;
            return generate_blocking(mh, std::move(a));
          },
          py::arg("ids"), py::arg("max_new_tokens"), py::arg("temperature"), py::arg("top_k"),
          py::arg("top_p"), py::arg("seed"), py::arg("stop_ids"), py::arg("stop_strings"),
          py::arg("method"))
      .def(
          "stream",
          [](const ModelPtr& mh, py::handle ids, int max_new_tokens, float temperature, int top_k,
             float top_p, uint64_t seed, const std::vector<int32_t>& stop_ids,
             const std::vector<std::string>& stop_strings, const std::string& method) {
            GenerateArgs a;
            a.prompt = to_ids(ids, "prompt", "prompt", mh->model->config().n_vocab);
            a.max_new_tokens = max_new_tokens;
            a.sampler = {temperature, top_k, top_p, seed};
            a.stop_ids = stop_ids;
            a.stop_strings = stop_strings;
            a.method = method;
            return std::make_unique<GenerationStream>(mh, std::move(a));
          },
          py::arg("ids"), py::arg("max_new_tokens"), py::arg("temperature"), py::arg("top_k"),
          py::arg("top_p"), py::arg("seed"), py::arg("stop_ids"), py::arg("stop_strings"),
          py::arg("method"))
      .def(
          "session",
          [](const ModelPtr& mh, const std::string& method, int max_new_tokens) {
            return std::make_unique<SessionHandle>(mh, method, max_new_tokens);
          },
          py::arg("method"), py::arg("max_new_tokens"));

  py::class_<GenerationStream>(m, "GenerationStream")
      .def("__iter__", [](py::object self) { return self; })
      .def("__next__",
           [](GenerationStream& s) {
             auto piece = s.next();
             if (!piece) throw py::stop_iteration();
             return *piece;
           })
      .def("close", &GenerationStream::close)
      .def_property_readonly("result", &GenerationStream::result);

  py::class_<SessionHandle>(m, "Session")
      .def("prefill", &SessionHandle::prefill, py::arg("ids"))
      .def("extend", &SessionHandle::extend, py::arg("ids"))
      .def("decode", &SessionHandle::decode, py::arg("token"))
      .def("kept_positions", &SessionHandle::kept_positions)
      .def("cache_positions", &SessionHandle::cache_positions)
      .def_property_readonly("kv_bytes", &SessionHandle::kv_bytes)
      .def_property_readonly("next_pos", &SessionHandle::next_pos)
      .def_property_readonly("timing", &SessionHandle::timing)
      .def_property_readonly("method", &SessionHandle::method);
}

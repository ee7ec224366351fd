#include "model/model.h"

#include <sys/mman.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/gguf.h"
#include "io/safetensors.h"
#include "quant/quant.h"
#include "quant/repack.h"

namespace fkv {
namespace fs = std::filesystem;
using json = nlohmann::json;

Model::~Model() = default;

namespace {

// Copies a 1-D tensor of any float dtype to f32 (norm weights, biases: tiny).
std::vector<float> to_f32(DType dtype, const uint8_t* data, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  dequantize_row(dtype, data, out.data(), n);
  return out;
}

// ---- Hugging Face layout --------------------------------------------------------------------

struct HfLoader {
  const SafetensorsArchive& st;
  const std::string& dir;

  Expected<const SafetensorsTensor*> get(const std::string& name,
                                         std::vector<int64_t> shape) const {
    const SafetensorsTensor* t = st.find(name);
    if (t == nullptr) {
      return Status::error(strfmt("%s: tensor '%s' not found (files: %zu)", dir.c_str(),
                                  name.c_str(), st.files().size()));
    }
    if (t->shape != shape) {
      auto fmt = [](const std::vector<int64_t>& s) {
        std::string out = "[";
        for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
        return out + "]";
      };
      return Status::error(strfmt("%s: tensor '%s' has shape %s, expected %s", t->file.c_str(),
                                  name.c_str(), fmt(t->shape).c_str(), fmt(shape).c_str()));
    }
    if (t->dtype != DType::kF32 && t->dtype != DType::kF16 && t->dtype != DType::kBF16) {
      return Status::error(strfmt("%s: tensor '%s' has dtype %s; weights must be F32, F16 or BF16",
                                  t->file.c_str(), name.c_str(), dtype_name(t->dtype)));
    }
    return t;
  }
  Status matrix(const std::string& name, int64_t rows, int64_t cols, WeightMatrix& out) const {
    auto t = get(name, {rows, cols});
    if (!t) return t.status();
    out.dtype = (*t)->dtype;
    out.data = (*t)->data;
    out.rows = rows;
    out.cols = cols;
    out.row_bytes = dtype_row_bytes(out.dtype, cols);
    out.name = name;
    return Status::ok();
  }
  Status vec(const std::string& name, int64_t n, std::vector<float>& out) const {
    auto t = get(name, {n});
    if (!t) return t.status();
    out = to_f32((*t)->dtype, (*t)->data, n);
    return Status::ok();
  }
};

}  // namespace

Expected<std::unique_ptr<Model>> Model::load(const std::string& path) {
  std::unique_ptr<Model> m(new Model());
  m->path_ = path;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    FKV_RETURN_IF_ERROR(m->load_hf(path));
  } else if (fs::is_regular_file(path, ec)) {
    if (!path.ends_with(".gguf")) {
      return Status::error(strfmt("%s: not a model folder or a .gguf file", path.c_str()));
    }
    FKV_RETURN_IF_ERROR(m->load_gguf(path));
  } else {
    return Status::error(strfmt("model path '%s' does not exist", path.c_str()));
  }
  FKV_RETURN_IF_ERROR(m->finish());
  return m;
}

Status Model::load_hf(const std::string& dir) {
  const std::string config_path = (fs::path(dir) / "config.json").string();
  auto text = read_text_file(config_path, "config", /*allow_empty=*/false);
  if (!text) return text.status();
  auto cfg = parse_hf_config(*text, config_path);
  if (!cfg) return cfg.status();
  config_ = *cfg;
  // generation_config.json may list more end-of-generation ids than config.json.
  const std::string gen_path = (fs::path(dir) / "generation_config.json").string();
  if (fs::exists(gen_path)) {
    auto gen_text = read_text_file(gen_path, "generation config", /*allow_empty=*/false);
    if (!gen_text) return gen_text.status();
    FKV_RETURN_IF_ERROR(apply_generation_config(*gen_text, gen_path, config_));
  }

  auto archive = SafetensorsArchive::open(dir);
  if (!archive) return archive.status();
  auto st = std::make_shared<SafetensorsArchive>(std::move(archive.value()));
  storage_ = st;
  HfLoader ld{*st, dir};
  const ModelConfig& c = config_;
  const int64_t q_dim = static_cast<int64_t>(c.n_heads) * c.head_dim;
  const int64_t kv_dim = static_cast<int64_t>(c.n_kv_heads) * c.head_dim;
  FKV_RETURN_IF_ERROR(ld.matrix("model.embed_tokens.weight", c.n_vocab, c.d_model, tok_embd_));
  FKV_RETURN_IF_ERROR(ld.vec("model.norm.weight", c.d_model, out_norm_));
  if (c.tie_embeddings) {
    lm_head_ = tok_embd_;
  } else {
    FKV_RETURN_IF_ERROR(ld.matrix("lm_head.weight", c.n_vocab, c.d_model, lm_head_));
  }
  layers_.resize(c.n_layers);
  for (int il = 0; il < c.n_layers; ++il) {
    LayerWeights& L = layers_[il];
    const std::string p = "model.layers." + std::to_string(il) + ".";
    FKV_RETURN_IF_ERROR(ld.vec(p + "input_layernorm.weight", c.d_model, L.attn_norm));
    FKV_RETURN_IF_ERROR(ld.vec(p + "post_attention_layernorm.weight", c.d_model, L.ffn_norm));
    FKV_RETURN_IF_ERROR(ld.matrix(p + "self_attn.q_proj.weight", q_dim, c.d_model, L.wq));
    FKV_RETURN_IF_ERROR(ld.matrix(p + "self_attn.k_proj.weight", kv_dim, c.d_model, L.wk));
    FKV_RETURN_IF_ERROR(ld.matrix(p + "self_attn.v_proj.weight", kv_dim, c.d_model, L.wv));
    FKV_RETURN_IF_ERROR(ld.matrix(p + "self_attn.o_proj.weight", c.d_model, q_dim, L.wo));
    FKV_RETURN_IF_ERROR(ld.matrix(p + "mlp.gate_proj.weight", c.d_ff, c.d_model, L.w_gate));
    FKV_RETURN_IF_ERROR(ld.matrix(p + "mlp.up_proj.weight", c.d_ff, c.d_model, L.w_up));
    FKV_RETURN_IF_ERROR(ld.matrix(p + "mlp.down_proj.weight", c.d_model, c.d_ff, L.w_down));
    if (c.attn_qkv_bias) {
      FKV_RETURN_IF_ERROR(ld.vec(p + "self_attn.q_proj.bias", q_dim, L.bq));
      FKV_RETURN_IF_ERROR(ld.vec(p + "self_attn.k_proj.bias", kv_dim, L.bk));
      FKV_RETURN_IF_ERROR(ld.vec(p + "self_attn.v_proj.bias", kv_dim, L.bv));
    }
    if (c.qk_norm) {
      FKV_RETURN_IF_ERROR(ld.vec(p + "self_attn.q_norm.weight", c.head_dim, L.q_norm));
      FKV_RETURN_IF_ERROR(ld.vec(p + "self_attn.k_norm.weight", c.head_dim, L.k_norm));
    }
  }
  for (const auto& [name, t] : st->tensors()) weight_bytes_ += t.n_bytes;
  return Status::ok();
}

// ---- GGUF -------------------------------------------------------------------------------------

Status Model::load_gguf(const std::string& file) {
  auto g = GgufFile::open(file);
  if (!g) return g.status();
  gguf_ = std::make_unique<GgufFile>(std::move(g.value()));
  const GgufFile& gf = *gguf_;
  auto arch = gf.get_string("general.architecture");
  if (!arch) return arch.status();
  ModelConfig& c = config_;
  c.arch_name = *arch;
  if (*arch == "llama") {
    c.arch = Arch::kLlama;
    c.rope_style = RopeStyle::kInterleaved;  // llama.cpp's converter permutes Q/K for this
  } else if (*arch == "qwen2") {
    c.arch = Arch::kQwen2;
    c.attn_qkv_bias = true;
    c.rope_style = RopeStyle::kNeox;
  } else {
    return Status::error(strfmt("%s: unsupported GGUF architecture '%s' (fastkv runs llama, qwen2)",
                                file.c_str(), arch->c_str()));
  }
  if (auto name = gf.get_string("general.name")) c.model_name = *name;
  const std::string a = *arch + ".";
  auto geti = [&](const std::string& key, int& out) -> Status {
    auto v = gf.get_int(a + key);
    if (!v) return v.status();
    if (*v <= 0 || *v > (1ll << 31) - 1) {
      return Status::error(strfmt("%s: %s%s = %lld is out of range", file.c_str(), a.c_str(),
                                  key.c_str(), static_cast<long long>(*v)));
    }
    out = static_cast<int>(*v);
    return Status::ok();
  };
  FKV_RETURN_IF_ERROR(geti("block_count", c.n_layers));
  FKV_RETURN_IF_ERROR(geti("embedding_length", c.d_model));
  FKV_RETURN_IF_ERROR(geti("feed_forward_length", c.d_ff));
  FKV_RETURN_IF_ERROR(geti("attention.head_count", c.n_heads));
  c.n_kv_heads = c.n_heads;
  if (gf.has(a + "attention.head_count_kv"))
    FKV_RETURN_IF_ERROR(geti("attention.head_count_kv", c.n_kv_heads));
  FKV_RETURN_IF_ERROR(geti("context_length", c.n_ctx));
  c.head_dim = c.d_model / c.n_heads;
  if (gf.has(a + "attention.key_length"))
    FKV_RETURN_IF_ERROR(geti("attention.key_length", c.head_dim));
  c.rot_dim = c.head_dim;
  if (gf.has(a + "rope.dimension_count"))
    FKV_RETURN_IF_ERROR(geti("rope.dimension_count", c.rot_dim));
  if (auto eps = gf.get_float(a + "attention.layer_norm_rms_epsilon"))
    c.rms_eps = static_cast<float>(*eps);
  c.rope_theta = 10000.0f;
  if (auto th = gf.get_float(a + "rope.freq_base")) c.rope_theta = static_cast<float>(*th);
  if (gf.has(a + "rope.scaling.type")) {
    auto type = gf.get_string(a + "rope.scaling.type");
    if (!type) return type.status();
    if (*type == "linear") {
      auto f = gf.get_float(a + "rope.scaling.factor");
      if (!f) return f.status();
      c.rope_scaling.type = "linear";
      c.rope_scaling.factor = static_cast<float>(*f);
    } else if (*type != "none") {
      return Status::error(
          strfmt("%s: rope scaling type '%s' is not supported", file.c_str(), type->c_str()));
    }
  }
  if (auto bos = gf.get_int("tokenizer.ggml.bos_token_id")) c.bos_token_id = static_cast<int>(*bos);
  if (auto eos = gf.get_int("tokenizer.ggml.eos_token_id"))
    c.eos_token_ids.push_back(static_cast<int>(*eos));

  // Tensors: ggml dims are [cols, rows] (dims[0] contiguous).
  auto find = [&](const std::string& name, int64_t rows, int64_t cols, bool matrix,
                  const GgufTensorInfo** out) -> Status {
    const GgufTensorInfo* t = gf.find_tensor(name);
    if (t == nullptr) {
      return Status::error(strfmt("%s: tensor '%s' not found", file.c_str(), name.c_str()));
    }
    std::vector<int64_t> want =
        matrix ? std::vector<int64_t>{cols, rows} : std::vector<int64_t>{cols};
    if (t->dims != want) {
      std::string got;
      for (size_t i = 0; i < t->dims.size(); ++i)
        got += (i ? ", " : "") + std::to_string(t->dims[i]);
      std::string exp;
      for (size_t i = 0; i < want.size(); ++i) exp += (i ? ", " : "") + std::to_string(want[i]);
      return Status::error(strfmt("%s: tensor '%s' has ggml dims [%s], expected [%s]", file.c_str(),
                                  name.c_str(), got.c_str(), exp.c_str()));
    }
    if (!can_dequantize(t->dtype)) {
      return Status::error(strfmt("%s: tensor '%s' has unsupported type %s", file.c_str(),
                                  name.c_str(), dtype_name(t->dtype)));
    }
    *out = t;
    return Status::ok();
  };
  auto matrix = [&](const std::string& name, int64_t rows, int64_t cols,
                    WeightMatrix& w) -> Status {
    const GgufTensorInfo* t = nullptr;
    FKV_RETURN_IF_ERROR(find(name, rows, cols, true, &t));
    w.dtype = t->dtype;
    w.data = t->data;
    w.rows = rows;
    w.cols = cols;
    w.row_bytes = dtype_row_bytes(t->dtype, cols);
    w.name = name;
    return Status::ok();
  };
  auto vec = [&](const std::string& name, int64_t n, std::vector<float>& v) -> Status {
    const GgufTensorInfo* t = nullptr;
    FKV_RETURN_IF_ERROR(find(name, 1, n, false, &t));
    v = to_f32(t->dtype, t->data, n);
    return Status::ok();
  };
  // Vocabulary size: the embedding's row count.
  if (const GgufTensorInfo* te = gf.find_tensor("token_embd.weight"); te && te->dims.size() == 2) {
    c.n_vocab = static_cast<int>(te->dims[1]);
  }
  FKV_RETURN_IF_ERROR(c.validate(file));
  const int64_t q_dim = static_cast<int64_t>(c.n_heads) * c.head_dim;
  const int64_t kv_dim = static_cast<int64_t>(c.n_kv_heads) * c.head_dim;
  FKV_RETURN_IF_ERROR(matrix("token_embd.weight", c.n_vocab, c.d_model, tok_embd_));
  FKV_RETURN_IF_ERROR(vec("output_norm.weight", c.d_model, out_norm_));
  if (gf.find_tensor("output.weight") != nullptr) {
    FKV_RETURN_IF_ERROR(matrix("output.weight", c.n_vocab, c.d_model, lm_head_));
  } else {
    c.tie_embeddings = true;
    lm_head_ = tok_embd_;
  }
  layers_.resize(c.n_layers);
  for (int il = 0; il < c.n_layers; ++il) {
    LayerWeights& L = layers_[il];
    const std::string p = "blk." + std::to_string(il) + ".";
    FKV_RETURN_IF_ERROR(vec(p + "attn_norm.weight", c.d_model, L.attn_norm));
    FKV_RETURN_IF_ERROR(vec(p + "ffn_norm.weight", c.d_model, L.ffn_norm));
    FKV_RETURN_IF_ERROR(matrix(p + "attn_q.weight", q_dim, c.d_model, L.wq));
    FKV_RETURN_IF_ERROR(matrix(p + "attn_k.weight", kv_dim, c.d_model, L.wk));
    FKV_RETURN_IF_ERROR(matrix(p + "attn_v.weight", kv_dim, c.d_model, L.wv));
    FKV_RETURN_IF_ERROR(matrix(p + "attn_output.weight", c.d_model, q_dim, L.wo));
    FKV_RETURN_IF_ERROR(matrix(p + "ffn_gate.weight", c.d_ff, c.d_model, L.w_gate));
    FKV_RETURN_IF_ERROR(matrix(p + "ffn_up.weight", c.d_ff, c.d_model, L.w_up));
    FKV_RETURN_IF_ERROR(matrix(p + "ffn_down.weight", c.d_model, c.d_ff, L.w_down));
    if (c.attn_qkv_bias) {
      FKV_RETURN_IF_ERROR(vec(p + "attn_q.bias", q_dim, L.bq));
      FKV_RETURN_IF_ERROR(vec(p + "attn_k.bias", kv_dim, L.bk));
      FKV_RETURN_IF_ERROR(vec(p + "attn_v.bias", kv_dim, L.bv));
    }
  }
  for (const auto& t : gf.tensors()) weight_bytes_ += t.n_bytes;
  return Status::ok();
}

Status Model::finish() {
  inv_freq_ = fkv::rope_inv_freq(config_);
  repack_x16_weights();  // the matrices whose type has an x16 kernel here
  return Status::ok();
}

void Model::repack_x16_weights() {
  const long page = ::sysconf(_SC_PAGESIZE);
  // Drops the pages wholly inside [p, p + bytes) of a read-only file mapping from this process
  // (the repack touched them all): RSS keeps one copy of the weights. A later read would fault
  // them in again from the file; nothing reads a repacked original.
  auto release = [&](const uint8_t* p, size_t bytes) {
    const uintptr_t lo = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
    const uintptr_t hi = (reinterpret_cast<uintptr_t>(p) + bytes) / page * page;
    if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
  };
  auto repackable = [](const WeightMatrix& w) {
    return w.layout == WeightLayout::kRows && x16_repack_enabled(w.dtype) && x16_layout_fits(w);
  };
  // in_place: the matrix is in a writable buffer of ours that nothing else reads.
  auto repack = [&](WeightMatrix& w, bool in_place) {
    const size_t bytes = w.row_bytes * static_cast<size_t>(w.rows);
    if (in_place) {
      uint8_t* data = const_cast<uint8_t*>(w.data);
      repack_x16(w.dtype, data, data, w.rows, w.cols);
    } else {
      repacked_.emplace_back(new uint8_t[bytes]);
      repack_x16(w.dtype, w.data, repacked_.back().get(), w.rows, w.cols);
      if (!weights_writable_) release(w.data, bytes);
      w.data = repacked_.back().get();
    }
    w.layout = WeightLayout::kX16;
  };
  for (LayerWeights& L : layers_) {
    for (WeightMatrix* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) {
      if (repackable(*w)) repack(*w, weights_writable_);
    }
  }
  // A tied lm_head shares the embedding's bytes, which token lookups read by row: it gets its own
  // repacked copy (the embedding's pages are released like the others: lookups fault in the few
  // rows they read).
  if (repackable(lm_head_)) repack(lm_head_, weights_writable_ && lm_head_.data != tok_embd_.data);
}

}  // namespace fkv

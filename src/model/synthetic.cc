#include "model/synthetic.h"

#include <cmath>
#include <cstring>
#include <memory>

#include "core/check.h"
#include "core/thread_pool.h"
#include "io/gguf.h"
#include "model/model.h"

namespace fkv {
namespace {

ModelConfig llama_base() {
  ModelConfig c;
  c.arch = Arch::kLlama;
  c.arch_name = "LlamaForCausalLM";
  c.rope_style = RopeStyle::kNeox;  // HF layout (GGUF files permute Q/K for interleaved instead)
  c.rms_eps = 1e-5f;
  c.rope_theta = 500000.0f;
  c.rope_scaling.type = "llama3";
  c.rope_scaling.low_freq_factor = 1.0f;
  c.rope_scaling.high_freq_factor = 4.0f;
  c.rope_scaling.original_max_position_embeddings = 8192;
  c.n_vocab = 128256;
  c.n_ctx = 131072;
  c.bos_token_id = 128000;
  c.eos_token_ids = {128001};
  return c;
}

// splitmix64: a tiny counter-based generator, so every block of every tensor has its own stream
// and the weights do not depend on the thread split.
inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Weights of std ~0.02 (the usual init), so activations stay finite through every layer.
constexpr float kWeightStd = 0.02f;

// Fills `rows` rows of a [rows, cols] matrix stored in `dtype` with random values.
void fill_random(DType dtype, int64_t rows, int64_t cols, uint64_t stream, uint8_t* dst) {
  const size_t row_bytes = dtype_row_bytes(dtype, cols);
  const float uniform_half_width = kWeightStd * std::sqrt(3.0f);
  parallel_for(rows, [&](int64_t r) {
    uint8_t* row = dst + static_cast<size_t>(r) * row_bytes;
    uint64_t state = mix64(stream ^ mix64(static_cast<uint64_t>(r)));
    auto next = [&] { return state = mix64(state); };
    auto uniform = [&] {  // in [-1, 1)
      return static_cast<float>(static_cast<int64_t>(next() >> 40) - (1ll << 23)) /
             static_cast<float>(1 << 23);
    };
    switch (dtype) {
      case DType::kF32: {
        float* out = reinterpret_cast<float*>(row);
        for (int64_t c = 0; c < cols; ++c) out[c] = uniform() * uniform_half_width;
        break;
      }
      case DType::kF16:
      case DType::kBF16: {
        uint16_t* out = reinterpret_cast<uint16_t*>(row);
        for (int64_t c = 0; c < cols; ++c) {
          const float v = uniform() * uniform_half_width;
          out[c] = dtype == DType::kF16 ? f32_to_f16(v) : f32_to_bf16(v);
        }
        break;
      }
      case DType::kQ4_0:
      case DType::kQ8_0: {
        // Block = f16 scale + quants; uniform quants have std 4.6 (4-bit) or 73.9 (8-bit).
        const int qbytes = dtype == DType::kQ4_0 ? 16 : 32;
        const float scale = kWeightStd / (dtype == DType::kQ4_0 ? 4.6f : 73.9f);
        const uint16_t d = f32_to_f16(scale);
        for (int64_t b = 0; b < cols / 32; ++b) {
          uint8_t* blk = row + b * (2 + qbytes);
          std::memcpy(blk, &d, 2);
          for (int i = 0; i < qbytes; i += 8) {
            const uint64_t bits = next();
            std::memcpy(blk + 2 + i, &bits, 8);
          }
        }
        break;
      }
      case DType::kQ4_K: {
        // Superblock: d, dmin | 6-bit scales sc_j in [4, 8) and mins m_j = 7.5 sc_j (so each
        // sub-block is centred) | random nibbles: values d * (sc_j q - m_j), std ~ 0.02.
        const float d = kWeightStd * std::sqrt(3.0f) / (7.5f * 6.0f);
        const uint16_t dh = f32_to_f16(d);
        for (int64_t b = 0; b < cols / 256; ++b) {
          uint8_t* blk = row + b * 144;
          std::memcpy(blk, &dh, 2);
          std::memcpy(blk + 2, &dh, 2);
          uint8_t sc[8], mn[8];
          const uint64_t bits = next();
          for (int j = 0; j < 8; ++j) {
            sc[j] = static_cast<uint8_t>(4 + ((bits >> (3 * j)) & 3));
            mn[j] = static_cast<uint8_t>(std::lround(7.5f * sc[j]));
          }
          uint8_t* s12 = blk + 4;  // ggml's packing (get_scale_min_k4 reads it back)
          for (int j = 0; j < 4; ++j) {
            s12[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
            s12[j + 4] = static_cast<uint8_t>(mn[j] | ((mn[j + 4] >> 4) << 6));
            s12[j + 8] = static_cast<uint8_t>((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
          }
          for (int i = 0; i < 128; i += 8) {
            const uint64_t q = next();
            std::memcpy(blk + 16 + i, &q, 8);
          }
        }
        break;
      }
      case DType::kQ6_K: {
        // Superblock: random 6-bit codes (q - 32 in [-32, 32)), scales 12, values d * 12 * code.
        const float d = kWeightStd * std::sqrt(3.0f) / (32.0f * 12.0f);
        const uint16_t dh = f32_to_f16(d);
        for (int64_t b = 0; b < cols / 256; ++b) {
          uint8_t* blk = row + b * 210;
          for (int i = 0; i < 192; i += 8) {
            const uint64_t q = next();
            std::memcpy(blk + i, &q, 8);
          }
          std::memset(blk + 192, 12, 16);
          std::memcpy(blk + 208, &dh, 2);
        }
        break;
      }
      default:
        FKV_CHECK(false, "synthetic weights in %s are not supported", dtype_name(dtype));
    }
  });
}

}  // namespace

std::vector<std::string> synthetic_model_names() {
  return {"llama-3.2-1b", "llama-3.1-8b", "qwen2.5-0.5b"};
}

Expected<ModelConfig> synthetic_config(const std::string& name) {
  ModelConfig c;
  if (name == "llama-3.2-1b") {
    c = llama_base();
    c.model_name = "synthetic Llama-3.2-1B shape";
    c.n_layers = 16;
    c.d_model = 2048;
    c.n_heads = 32;
    c.n_kv_heads = 8;
    c.head_dim = 64;
    c.d_ff = 8192;
    c.rope_scaling.factor = 32.0f;
    c.tie_embeddings = true;
  } else if (name == "llama-3.1-8b") {
    c = llama_base();
    // The name carries "Llama-3.1-8B" so FastKV/GemFilter pick the paper's layers (15 / 13).
    c.model_name = "synthetic Llama-3.1-8B shape";
    c.n_layers = 32;
    c.d_model = 4096;
    c.n_heads = 32;
    c.n_kv_heads = 8;
    c.head_dim = 128;
    c.d_ff = 14336;
    c.rope_scaling.factor = 8.0f;
    c.eos_token_ids = {128001, 128008, 128009};
  } else if (name == "qwen2.5-0.5b") {
    c.arch = Arch::kQwen2;
    c.arch_name = "Qwen2ForCausalLM";
    c.model_name = "synthetic Qwen2.5-0.5B shape";
    c.attn_qkv_bias = true;
    c.rope_style = RopeStyle::kNeox;
    c.n_layers = 24;
    c.d_model = 896;
    c.n_heads = 14;
    c.n_kv_heads = 2;
    c.head_dim = 64;
    c.d_ff = 4864;
    c.n_vocab = 151936;
    c.n_ctx = 32768;
    c.rms_eps = 1e-6f;
    c.rope_theta = 1000000.0f;
    c.tie_embeddings = true;
    c.bos_token_id = 151643;
    c.eos_token_ids = {151643};
  } else {
    std::string known;
    for (const auto& n : synthetic_model_names()) known += (known.empty() ? "" : ", ") + n;
    return Status::error(
        strfmt("unknown synthetic model '%s' (known shapes: %s)", name.c_str(), known.c_str()));
  }
  c.rot_dim = c.head_dim;
  return c;
}

Expected<DType> synthetic_weight_dtype(const std::string& name) {
  if (name == "f32") return DType::kF32;
  if (name == "f16") return DType::kF16;
  if (name == "bf16") return DType::kBF16;
  if (name == "q4_0") return DType::kQ4_0;
  if (name == "q8_0") return DType::kQ8_0;
  if (name == "q4_k_m") return DType::kQ4_K;
  return Status::error(
      strfmt("synthetic weight dtype '%s' is not one of f32, f16, bf16, q4_0, q8_0, q4_k_m",
             name.c_str()));
}

namespace {
// llama.cpp's Q4_K_M recipe (llama-quant.cpp): q6_K for the output matrix (the embedding when it
// is tied) and for attn_v / ffn_down in the layers use_more_bits picks (the first and last eighth,
// every third between); q4_K elsewhere.
bool use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }
}  // namespace

Expected<std::unique_ptr<Model>> Model::synthetic(const ModelConfig& config, DType dtype,
                                                  uint64_t seed) {
  FKV_RETURN_IF_ERROR(config.validate("synthetic config"));
  // kQ4_K stands for the Q4_K_M mix (q4_K and q6_K by tensor role).
  if (dtype != DType::kF32 && dtype != DType::kF16 && dtype != DType::kBF16 &&
      dtype != DType::kQ4_0 && dtype != DType::kQ8_0 && dtype != DType::kQ4_K) {
    return Status::error(
        strfmt("synthetic weights in %s are not supported (f32, f16, bf16, q4_0, q8_0, q4_k_m)",
               dtype_name(dtype)));
  }
  const ModelConfig& c = config;
  const int64_t block = dtype == DType::kQ4_K                            ? 256
                        : dtype == DType::kQ4_0 || dtype == DType::kQ8_0 ? 32
                                                                         : 1;
  const int64_t q_dim = static_cast<int64_t>(c.n_heads) * c.head_dim;
  const int64_t kv_dim = static_cast<int64_t>(c.n_kv_heads) * c.head_dim;
  for (int64_t cols : {static_cast<int64_t>(c.d_model), q_dim, static_cast<int64_t>(c.d_ff)}) {
    if (cols % block != 0) {
      return Status::error(strfmt("synthetic %s weights need widths divisible by %lld, got %lld",
                                  dtype == DType::kQ4_K ? "q4_k_m" : dtype_name(dtype),
                                  static_cast<long long>(block), static_cast<long long>(cols)));
    }
  }
  // The type of each matrix: `dtype`, except the Q4_K_M mix's q6_K roles.
  auto type_of = [&](bool more_bits_role, int il) {
    if (dtype != DType::kQ4_K) return dtype;
    return more_bits_role && (il < 0 || use_more_bits(il, c.n_layers)) ? DType::kQ6_K
                                                                       : DType::kQ4_K;
  };
  std::unique_ptr<Model> m(new Model());
  m->config_ = c;
  m->path_ = "synthetic:" + c.model_name;
  // One owned buffer per matrix, kept alive by storage_.
  auto buffers = std::make_shared<std::vector<std::unique_ptr<uint8_t[]>>>();
  m->storage_ = buffers;
  m->weights_writable_ = true;
  uint64_t stream = mix64(seed);
  auto matrix = [&](const std::string& name, int64_t rows, int64_t cols, WeightMatrix& w, DType t) {
    w.dtype = t;
    w.rows = rows;
    w.cols = cols;
    w.row_bytes = dtype_row_bytes(t, cols);
    w.name = name;
    const size_t bytes = w.row_bytes * static_cast<size_t>(rows);
    buffers->emplace_back(new uint8_t[bytes]);
    fill_random(t, rows, cols, stream = mix64(stream), buffers->back().get());
    w.data = buffers->back().get();
    m->weight_bytes_ += bytes;
  };
  matrix("token_embd.weight", c.n_vocab, c.d_model, m->tok_embd_,
         type_of(/*more_bits_role=*/c.tie_embeddings, -1));
  if (c.tie_embeddings) {
    m->lm_head_ = m->tok_embd_;
  } else {
    matrix("output.weight", c.n_vocab, c.d_model, m->lm_head_, type_of(true, -1));
  }
  m->out_norm_.assign(c.d_model, 1.0f);
  m->layers_.resize(c.n_layers);
  for (int il = 0; il < c.n_layers; ++il) {
    LayerWeights& L = m->layers_[il];
    const std::string p = "blk." + std::to_string(il) + ".";
    L.attn_norm.assign(c.d_model, 1.0f);
    L.ffn_norm.assign(c.d_model, 1.0f);
    matrix(p + "attn_q.weight", q_dim, c.d_model, L.wq, type_of(false, il));
    matrix(p + "attn_k.weight", kv_dim, c.d_model, L.wk, type_of(false, il));
    matrix(p + "attn_v.weight", kv_dim, c.d_model, L.wv, type_of(true, il));
    matrix(p + "attn_output.weight", c.d_model, q_dim, L.wo, type_of(false, il));
    matrix(p + "ffn_gate.weight", c.d_ff, c.d_model, L.w_gate, type_of(false, il));
    matrix(p + "ffn_up.weight", c.d_ff, c.d_model, L.w_up, type_of(false, il));
    matrix(p + "ffn_down.weight", c.d_model, c.d_ff, L.w_down, type_of(true, il));
    if (c.attn_qkv_bias) {
      L.bq.assign(q_dim, 0.0f);
      L.bk.assign(kv_dim, 0.0f);
      L.bv.assign(kv_dim, 0.0f);
    }
    if (c.qk_norm) {
      L.q_norm.assign(c.head_dim, 1.0f);
      L.k_norm.assign(c.head_dim, 1.0f);
    }
  }
  FKV_RETURN_IF_ERROR(m->finish());
  return m;
}

}  // namespace fkv

// Attention: the scalar (double) twins, the portable primitives, variant dispatch, and the shared
// tiled driver. The driver owns everything but the inner loops: masks from positions, K packing,
// the online softmax bookkeeping, threading and the split-K merge of decode; the per-ISA tables
// supply the score / exp / P.V primitives.
#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/check.h"
#include "core/thread_pool.h"
#include "kernels/matmul.h"

namespace fkv {

namespace {

constexpr int kKb = kAttnKeyBlock;
// Query rows per prefill work item (all heads of one KV group run over them, sharing the K/V tile
// while it sits in L1).
constexpr int kQueryBlock = 32;
// Keys per decode work item: a fixed split (independent of the thread count) merged in order.
constexpr int kDecodeSplit = 512;
// Below this many multiply-adds (n * n * heads * hd) threads cost more than they save.
constexpr int64_t kMinParallelPrefill = int64_t{1} << 18;
constexpr int64_t kMinParallelDecode = int64_t{1} << 16;

void check_shape(const AttentionShape& s) {
  FKV_CHECK(s.n_heads > 0 && s.n_kv_heads > 0 && s.n_heads % s.n_kv_heads == 0 && s.head_dim > 0 &&
                s.sliding_window >= 0,
            "attention: n_heads %d, n_kv_heads %d, head_dim %d, sliding_window %d", s.n_heads,
            s.n_kv_heads, s.head_dim, s.sliding_window);
}

// Per-thread scratch that grows but never shrinks (no allocation once warm).
float* thread_scratch(size_t n) {
  thread_local std::vector<float> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

// ---- portable primitives (plain loops the compiler vectorises for the baseline ISA) ----

void scores_packed_portable(const float* q, int64_t q_stride, int rows, const float* kt, int hd,
                            float scale, float* s) {
  for (int m = 0; m < rows; ++m) {
    const float* qm = q + m * q_stride;
    float acc[kKb] = {};
    for (int d = 0; d < hd; ++d) {
      const float qd = qm[d];
      const float* kd = kt + static_cast<int64_t>(d) * kKb;
      for (int j = 0; j < kKb; ++j) acc[j] += qd * kd[j];
    }
    for (int j = 0; j < kKb; ++j) s[m * kKb + j] = acc[j] * scale;
  }
}

void scores_rows_portable(const float* q, int64_t q_stride, int rows, const float* k,
                          int64_t k_stride, int nk, int hd, float scale, float* s) {
  for (int m = 0; m < rows; ++m) {
    const float* qm = q + m * q_stride;
    for (int j = 0; j < nk; ++j) {
      const float* kj = k + j * k_stride;
      float acc = 0.0f;
      for (int d = 0; d < hd; ++d) acc += qm[d] * kj[d];
      s[m * kKb + j] = acc * scale;
    }
  }
}

float max_of_portable(const float* x, int n) {
  float mx = x[0];
  for (int i = 1; i < n; ++i) mx = x[i] > mx ? x[i] : mx;
  return mx;
}

float exp_sub_sum_portable(float* x, int n, float m) {
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - m);
    sum += x[i];
  }
  return sum;
}

void pv_portable(const float* p, int64_t p_stride, int rows, const float* v, int64_t v_stride,
                 int nk, int hd, float* o, int64_t o_stride) {
  for (int m = 0; m < rows; ++m) {
    float* om = o + m * o_stride;
    const float* pm = p + m * p_stride;
    for (int j = 0; j < nk; ++j) {
      const float pj = pm[j];
      const float* vj = v + j * v_stride;
      for (int d = 0; d < hd; ++d) om[d] += pj * vj[d];
    }
  }
}

// Online-softmax update of one score row over its visible keys [a, b) of the current block:
// turns s[a, b) into exp(s - m_new), zeroes the rest of the row, rescales o by exp(m_old - m_new)
// and folds the block into (m, l).
inline void softmax_update_row(const AttentionKernels& kern, float* s, int a, int b, float* m,
                               float* l, float* o, int hd) {
  const float bm = kern.max_of(s + a, b - a);
  const float m_new = std::max(*m, bm);
  const float sum = kern.exp_sub_sum(s + a, b - a, m_new);
  if (a > 0) std::memset(s, 0, sizeof(float) * static_cast<size_t>(a));
  if (b < kKb) std::memset(s + b, 0, sizeof(float) * static_cast<size_t>(kKb - b));
  if (m_new != *m) {
    // *m == -inf on the first visible block: alpha = 0 and o, l are still 0.
    const float alpha = std::exp(*m - m_new);
    for (int d = 0; d < hd; ++d) o[d] *= alpha;
    *l *= alpha;
    *m = m_new;
  }
  *l += sum;
}

// The given variant when hd fits its vectors, else the widest narrower one it fits (e.g. AVX2 for
// hd = 8 under AVX-512), else the portable one.
const AttentionKernels& pick_for_dim(const AttentionKernels& kern, int hd) {
  if (hd % kern.lanes == 0) return kern;
  for (int i = kNumIsas - 1; i > 0; --i) {
    const AttentionKernels* a = attention_kernels(static_cast<Isa>(i));
    if (a != nullptr && a->lanes < kern.lanes && hd % a->lanes == 0) return *a;
  }
  return portable_attention_kernels();
}

// The ops table of the same ISA as an attention variant (its f16/bf16 widening converters).
const KernelTable& ops_table_for(const AttentionKernels& kern) {
  for (int i = kNumIsas - 1; i > 0; --i) {
    if (attention_kernels(static_cast<Isa>(i)) == &kern) {
      if (const KernelTable* t = kernel_table(static_cast<Isa>(i))) return *t;
    }
  }
  return scalar_kernel_table();
}

}  // namespace

const AttentionKernels& portable_attention_kernels() {
  static const AttentionKernels k = {"scalar",
                                     1,
                                     scores_packed_portable,
                                     scores_rows_portable,
                                     max_of_portable,
                                     exp_sub_sum_portable,
                                     pv_portable,
                                     nullptr,
                                     nullptr};
  return k;
}

const AttentionKernels* attention_kernels(Isa isa) {
  if (!isa_supported(isa)) return nullptr;
  switch (isa) {
    case Isa::kScalar:
      return &portable_attention_kernels();
#if defined(__x86_64__)
    case Isa::kAvx2:
      return &avx2_attention_kernels();
    case Isa::kAvx512:
      return &avx512_attention_kernels();
#endif
    default:
      return nullptr;
  }
}

const AttentionKernels& active_attention_kernels() {
  static const AttentionKernels* const k = [] {
    const AttentionKernels* a = attention_kernels(active_isa());
    return a != nullptr ? a : &portable_attention_kernels();
  }();
  return *k;
}

// ---------------------------------------------------------------------------------------------
// Prefill driver.

void pack_key_tile(const float* k, int64_t k_stride, int nk, int hd, float* dst) {
  for (int j = 0; j < nk; ++j) {
    const float* src = k + static_cast<int64_t>(j) * k_stride;
    for (int d = 0; d < hd; ++d) dst[d * kKb + j] = src[d];
  }
  for (int d = 0; d < hd; ++d) {
    for (int j = nk; j < kKb; ++j) dst[d * kKb + j] = 0.0f;
  }
}

void attention_prefill_with(const AttentionKernels& kern_in, const AttentionShape& s,
                            const float* q, int64_t q_stride, const float* k, const float* v,
                            int64_t kv_stride, const int32_t* pos, int n, float* out,
                            int64_t out_stride, const std::function<void()>& between_parts) {
  check_shape(s);
  FKV_CHECK(n >= 0, "attention_prefill: n %d", n);
  if (n == 0) return;
  const int hd = s.head_dim;
  const int n_kv = s.n_kv_heads;
  const int group = s.n_heads / n_kv;
  FKV_CHECK(q_stride >= static_cast<int64_t>(s.n_heads) * hd &&
                kv_stride >= static_cast<int64_t>(n_kv) * hd &&
                out_stride >= static_cast<int64_t>(s.n_heads) * hd,
            "attention_prefill: strides q %lld, kv %lld, out %lld too small for %d/%d heads x %d",
            static_cast<long long>(q_stride), static_cast<long long>(kv_stride),
            static_cast<long long>(out_stride), s.n_heads, n_kv, hd);
  const AttentionKernels& kern = pick_for_dim(kern_in, hd);
  const int nkb = (n + kKb - 1) / kKb;
  const int nqb = (n + kQueryBlock - 1) / kQueryBlock;
  const int64_t tile = static_cast<int64_t>(hd) * kKb;

  // Shared per-call state lives in the calling thread's buffers: lo[r] (first visible row of r;
  // nondecreasing since positions ascend) and K packed per (KV head, key block).
  thread_local std::vector<int> lo_buf;
  thread_local std::vector<float> kt_buf;
  lo_buf.resize(static_cast<size_t>(n));
  kt_buf.resize(static_cast<size_t>(n_kv) * nkb * tile);
  int* lo = lo_buf.data();
  float* kt = kt_buf.data();
  {
    int j = 0;
    for (int r = 0; r < n; ++r) {
      if (s.sliding_window > 0) {
        const int64_t min_pos = static_cast<int64_t>(pos[r]) - s.sliding_window + 1;
        while (j < r && pos[j] < min_pos) ++j;
      }
      lo[r] = j;
    }
  }

  const bool parallel =
      static_cast<int64_t>(n) * n * s.n_heads * hd > kMinParallelPrefill && num_threads() > 1;
  const int nt = parallel ? num_threads() : 1;
  const int n_pack = n_kv * nkb;
  const int n_items = n_kv * nqb;
  auto pack_tile = [&](int64_t it) {
    const int g = it / nkb, kb = it % nkb;
    const int k0 = kb * kKb;
    pack_key_tile(k + static_cast<int64_t>(k0) * kv_stride + static_cast<int64_t>(g) * hd,
                  kv_stride, std::min(kKb, n - k0), hd, kt + static_cast<int64_t>(it) * tile);
  };
  // Every tile is packed before any is read: two regions.
  parallel_for(n_pack, pack_tile, {.max_threads = nt});

  // Heavy (late) query blocks first, claimed one at a time: balanced by the dynamic claiming.
  auto run_item = [&](int64_t item) {
    const int it = static_cast<int>(item);
    // This thread's scratch: scores [kQueryBlock, kKb], o [group, kQueryBlock, hd], m, l.
    const size_t o_size = static_cast<size_t>(group) * kQueryBlock * hd;
    const size_t ml_size = static_cast<size_t>(group) * kQueryBlock;
    float* sc = thread_scratch(static_cast<size_t>(kQueryBlock) * kKb + o_size + 2 * ml_size);
    float* o = sc + static_cast<size_t>(kQueryBlock) * kKb;
    float* mrow = o + o_size;
    float* lrow = mrow + ml_size;
    const int qb = nqb - 1 - it / n_kv, g = it % n_kv;
    const int r0 = qb * kQueryBlock;
    const int rows = std::min(kQueryBlock, n - r0);
    std::fill(o, o + static_cast<size_t>(group) * rows * hd, 0.0f);
    std::fill(mrow, mrow + static_cast<size_t>(group) * rows,
              -std::numeric_limits<float>::infinity());
    std::fill(lrow, lrow + static_cast<size_t>(group) * rows, 0.0f);
    const int kb_first = lo[r0] / kKb, kb_last = (r0 + rows - 1) / kKb;
    const float* vg = v + static_cast<int64_t>(g) * hd;
    for (int kb = kb_first; kb <= kb_last; ++kb) {
      const int k0 = kb * kKb;
      const float* kt_tile = kt + (static_cast<int64_t>(g) * nkb + kb) * tile;
      for (int hh = 0; hh < group; ++hh) {
        const int h = g * group + hh;
        kern.scores_packed(q + r0 * q_stride + static_cast<int64_t>(h) * hd, q_stride, rows,
                           kt_tile, hd, s.scale, sc);
        float* oh = o + static_cast<size_t>(hh) * rows * hd;
        int a_min = kKb, b_max = 0;
        for (int i = 0; i < rows; ++i) {
          const int r = r0 + i;
          const int a = std::max(lo[r], k0) - k0;
          const int b = std::min(r + 1, k0 + kKb) - k0;
          float* srow = sc + i * kKb;
          if (a >= b) {
            std::memset(srow, 0, sizeof(float) * kKb);
            continue;
          }
          softmax_update_row(kern, srow, a, b, mrow + hh * rows + i, lrow + hh * rows + i,
                             oh + static_cast<int64_t>(i) * hd, hd);
          a_min = std::min(a_min, a);
          b_max = std::max(b_max, b);
        }
        if (a_min < b_max) {
          kern.pv(sc + a_min, kKb, rows, vg + (k0 + a_min) * kv_stride, kv_stride, b_max - a_min,
                  hd, oh, hd);
        }
      }
    }
    for (int hh = 0; hh < group; ++hh) {
      const int h = g * group + hh;
      for (int i = 0; i < rows; ++i) {
        // Every row sees at least itself, so l > 0.
        const float inv = 1.0f / lrow[hh * rows + i];
        const float* src = o + (static_cast<size_t>(hh) * rows + i) * hd;
        float* dst = out + (r0 + i) * out_stride + static_cast<int64_t>(h) * hd;
        for (int d = 0; d < hd; ++d) dst[d] = src[d] * inv;
      }
    }
  };
  if (!between_parts) {
    parallel_for(n_items, run_item, {.grain = 1, .max_threads = nt});
    return;
  }
  // In 8 parts of equal item count with the callback between them (heavy items first, so the
  // first part holds about a quarter of the work); every item is the same computation either
  // way, so the bits do not change.
  constexpr int kParts = 8;
  int64_t done = 0;
  for (int part = 1; part <= kParts && done < n_items; ++part) {
    const int64_t end = n_items * part / kParts;
    if (end <= done) continue;
    between_parts();
    parallel_for(end - done, [&](int64_t i) { run_item(done + i); },
                 {.grain = 1, .max_threads = nt});
    done = end;
  }
}

// ---------------------------------------------------------------------------------------------
// Decode driver: work items are (KV head, fixed split of its visible keys); each leaves a partial
// (m, l, o) per query head of the group, merged afterwards in split order.

void attention_decode_with(const AttentionKernels& kern, const AttentionShape& s, const float* q,
                           const float* const* k_heads, const float* const* v_heads,
                           const int32_t* const* pos_heads, const int* len, int32_t qpos,
                           float* out) {
  attention_decode_kv_with(kern, s, DType::kF32, q, reinterpret_cast<const void* const*>(k_heads),
                           reinterpret_cast<const void* const*>(v_heads), pos_heads, len, qpos,
                           out);
}

void attention_decode_kv_with(const AttentionKernels& kern_in, const AttentionShape& s,
                              DType kv_dtype, const float* q, const void* const* k_heads,
                              const void* const* v_heads, const int32_t* const* pos_heads,
                              const int* len, int32_t qpos, float* out) {
  check_shape(s);
  FKV_CHECK(kv_dtype == DType::kF32 || kv_dtype == DType::kF16 || kv_dtype == DType::kBF16,
            "attention_decode: KV dtype %s (f32, f16, bf16)", dtype_name(kv_dtype));
  const int hd = s.head_dim;
  const int n_kv = s.n_kv_heads;
  const int group = s.n_heads / n_kv;
  const AttentionKernels& kern = pick_for_dim(kern_in, hd);
  // Half rows are widened by the converter of the same ISA as the attention primitives.
  const KernelTable& ops = ops_table_for(kern);
  auto widen = kv_dtype == DType::kF16 ? ops.f16_row_to_f32 : ops.bf16_row_to_f32;
  const size_t elem = kv_dtype == DType::kF32 ? sizeof(float) : sizeof(uint16_t);
  // Half rows are read in place where the variant can (one pass over the cache, nothing stored);
  // otherwise each key / value block is widened into scratch first. Same bits either way.
  const bool half_in_place =
      kv_dtype != DType::kF32 && kern.scores_rows_half != nullptr && kern.pv_half != nullptr;
  const bool widen_blocks = kv_dtype != DType::kF32 && !half_in_place;

  thread_local std::vector<int> meta;  // per KV head: lo, first item; then the item count
  meta.resize(static_cast<size_t>(2 * n_kv + 1));
  int n_items = 0;
  int64_t work = 0;
  for (int g = 0; g < n_kv; ++g) {
    FKV_CHECK(len[g] >= 0, "attention_decode: head %d len %d", g, len[g]);
    int lo = 0;
    if (s.sliding_window > 0) {
      const int64_t min_pos = static_cast<int64_t>(qpos) - s.sliding_window + 1;
      lo = static_cast<int>(std::lower_bound(pos_heads[g], pos_heads[g] + len[g], min_pos) -
                            pos_heads[g]);
    }
    meta[2 * g] = lo;
    meta[2 * g + 1] = n_items;
    n_items += (len[g] - lo + kDecodeSplit - 1) / kDecodeSplit;
    work += static_cast<int64_t>(len[g] - lo) * group * hd;
  }
  meta[2 * n_kv] = n_items;

  // Partials per item: m [group], l [group], o [group, hd].
  const int64_t part = static_cast<int64_t>(group) * (hd + 2);
  thread_local std::vector<float> partial;
  partial.resize(static_cast<size_t>(std::max(n_items, 1) * part));
  float* parts = partial.data();
  const int* mt = meta.data();

  const bool parallel = work > kMinParallelDecode && n_items > 1 && num_threads() > 1;
  const int nt = parallel ? std::min(num_threads(), n_items) : 1;
  auto run_item = [&](int64_t item) {
    const int it = static_cast<int>(item);
    // This thread's scratch: scores [group, kKb], then (half caches) one widened key block and
    // value block [kKb, hd].
    float* sc = thread_scratch(static_cast<size_t>(group) * kKb +
                               (widen_blocks ? 2 * static_cast<size_t>(kKb) * hd : 0));
    float* kbuf = sc + static_cast<size_t>(group) * kKb;
    float* vbuf = kbuf + static_cast<size_t>(kKb) * hd;
    int g = 0;  // the head whose items hold `it` (mt[2g+3] is head g+1's first item)
    while (g + 1 < n_kv && mt[2 * g + 3] <= it) ++g;
    const int split = it - mt[2 * g + 1];
    const int j_begin = mt[2 * g] + split * kDecodeSplit;
    const int j_end = std::min(len[g], j_begin + kDecodeSplit);
    float* mp = parts + it * part;
    float* lp = mp + group;
    float* op = lp + group;
    std::fill(mp, mp + group, -std::numeric_limits<float>::infinity());
    std::fill(lp, lp + group, 0.0f);
    std::fill(op, op + static_cast<int64_t>(group) * hd, 0.0f);
    const float* qg = q + static_cast<int64_t>(g) * group * hd;
    for (int j0 = j_begin; j0 < j_end; j0 += kKb) {
      const int nk = std::min(kKb, j_end - j0);
      const uint8_t* kraw = static_cast<const uint8_t*>(k_heads[g]) + elem * j0 * hd;
      const uint8_t* vraw = static_cast<const uint8_t*>(v_heads[g]) + elem * j0 * hd;
      const float* kj = reinterpret_cast<const float*>(kraw);
      const float* vj = reinterpret_cast<const float*>(vraw);
      if (widen_blocks) {
        widen(reinterpret_cast<const uint16_t*>(kraw), kbuf, static_cast<int64_t>(nk) * hd);
        widen(reinterpret_cast<const uint16_t*>(vraw), vbuf, static_cast<int64_t>(nk) * hd);
        kj = kbuf;
        vj = vbuf;
      }
      if (half_in_place) {
        kern.scores_rows_half(kv_dtype, qg, hd, group, reinterpret_cast<const uint16_t*>(kraw), hd,
                              nk, hd, s.scale, sc);
      } else {
        kern.scores_rows(qg, hd, group, kj, hd, nk, hd, s.scale, sc);
      }
      for (int hh = 0; hh < group; ++hh) {
        softmax_update_row(kern, sc + hh * kKb, 0, nk, mp + hh, lp + hh,
                           op + static_cast<int64_t>(hh) * hd, hd);
      }
      if (half_in_place) {
        kern.pv_half(kv_dtype, sc, kKb, group, reinterpret_cast<const uint16_t*>(vraw), hd, nk, hd,
                     op, hd);
      } else {
        kern.pv(sc, kKb, group, vj, hd, nk, hd, op, hd);
      }
    }
  };
  parallel_for(n_items, run_item, {.grain = 1, .max_threads = nt});

  for (int g = 0; g < n_kv; ++g) {
    const int first = mt[2 * g + 1];
    const int last = g + 1 < n_kv ? mt[2 * g + 3] : n_items;
    for (int hh = 0; hh < group; ++hh) {
      float* dst = out + (static_cast<int64_t>(g) * group + hh) * hd;
      std::fill(dst, dst + hd, 0.0f);
      if (first == last) continue;
      float m_all = -std::numeric_limits<float>::infinity();
      for (int it = first; it < last; ++it) m_all = std::max(m_all, parts[it * part + hh]);
      float l_all = 0.0f;
      for (int it = first; it < last; ++it) {
        const float* mp = parts + it * part;
        const float w = std::exp(mp[hh] - m_all);
        l_all += w * mp[group + hh];
        const float* op = mp + 2 * group + static_cast<int64_t>(hh) * hd;
        for (int d = 0; d < hd; ++d) dst[d] += w * op[d];
      }
      const float inv = 1.0f / l_all;
      for (int d = 0; d < hd; ++d) dst[d] *= inv;
    }
  }
}

void attention_prefill(const AttentionShape& s, const float* q, int64_t q_stride, const float* k,
                       const float* v, int64_t kv_stride, const int32_t* pos, int n, float* out,
                       int64_t out_stride, const std::function<void()>& between_parts) {
  attention_prefill_with(active_attention_kernels(), s, q, q_stride, k, v, kv_stride, pos, n, out,
                         out_stride, between_parts);
}

void attention_decode(const AttentionShape& s, const float* q, const float* const* k_heads,
                      const float* const* v_heads, const int32_t* const* pos_heads, const int* len,
                      int32_t qpos, float* out) {
  attention_decode_with(active_attention_kernels(), s, q, k_heads, v_heads, pos_heads, len, qpos,
                        out);
}

void attention_decode_kv(const AttentionShape& s, DType kv_dtype, const float* q,
                         const void* const* k_heads, const void* const* v_heads,
                         const int32_t* const* pos_heads, const int* len, int32_t qpos,
                         float* out) {
  attention_decode_kv_with(active_attention_kernels(), s, kv_dtype, q, k_heads, v_heads, pos_heads,
                           len, qpos, out);
}

// ---------------------------------------------------------------------------------------------
// Scalar twins: the definition, written out directly (double accumulation, visibility tested per
// key rather than through precomputed ranges).

namespace scalar {

namespace {

// out[d] = sum_j softmax(scale * q.k_j) v_j over the visible keys; zero when none is visible.
void attend_one(const float* q, int hd, float scale, int nk, const float* k, int64_t k_stride,
                const float* v, int64_t v_stride, const std::vector<char>& visible,
                std::vector<double>& sc, float* out) {
  sc.assign(static_cast<size_t>(nk), 0.0);
  double mx = -std::numeric_limits<double>::infinity();
  for (int j = 0; j < nk; ++j) {
    if (!visible[j]) continue;
    double acc = 0;
    for (int d = 0; d < hd; ++d) acc += static_cast<double>(q[d]) * k[j * k_stride + d];
    sc[j] = acc * scale;
    mx = std::max(mx, sc[j]);
  }
  double sum = 0;
  for (int j = 0; j < nk; ++j) {
    sc[j] = visible[j] ? std::exp(sc[j] - mx) : 0.0;
    sum += sc[j];
  }
  std::vector<double> acc(static_cast<size_t>(hd), 0.0);
  for (int j = 0; j < nk; ++j) {
    if (!visible[j]) continue;
    for (int d = 0; d < hd; ++d) acc[d] += sc[j] * v[j * v_stride + d];
  }
  for (int d = 0; d < hd; ++d) out[d] = sum > 0 ? static_cast<float>(acc[d] / sum) : 0.0f;
}

}  // namespace

void attention_prefill(const AttentionShape& s, const float* q, int64_t q_stride, const float* k,
                       const float* v, int64_t kv_stride, const int32_t* pos, int n, float* out,
                       int64_t out_stride) {
  check_shape(s);
  const int hd = s.head_dim;
  const int group = s.n_heads / s.n_kv_heads;
  std::vector<char> visible(static_cast<size_t>(n));
  std::vector<double> sc;
  for (int r = 0; r < n; ++r) {
    for (int j = 0; j < n; ++j) {
      const bool in_window =
          s.sliding_window == 0 || static_cast<int64_t>(pos[r]) - pos[j] < s.sliding_window;
      visible[j] = j <= r && in_window;
    }
    for (int h = 0; h < s.n_heads; ++h) {
      const int64_t koff = static_cast<int64_t>(h / group) * hd;
      attend_one(q + r * q_stride + static_cast<int64_t>(h) * hd, hd, s.scale, n, k + koff,
                 kv_stride, v + koff, kv_stride, visible, sc,
                 out + r * out_stride + static_cast<int64_t>(h) * hd);
    }
  }
}

void attention_decode(const AttentionShape& s, const float* q, const float* const* k_heads,
                      const float* const* v_heads, const int32_t* const* pos_heads, const int* len,
                      int32_t qpos, float* out) {
  check_shape(s);
  const int hd = s.head_dim;
  const int group = s.n_heads / s.n_kv_heads;
  std::vector<char> visible;
  std::vector<double> sc;
  for (int h = 0; h < s.n_heads; ++h) {
    const int g = h / group;
    visible.resize(static_cast<size_t>(len[g]));
    for (int j = 0; j < len[g]; ++j) {
      visible[j] =
          s.sliding_window == 0 || static_cast<int64_t>(qpos) - pos_heads[g][j] < s.sliding_window;
    }
    attend_one(q + static_cast<int64_t>(h) * hd, hd, s.scale, len[g], k_heads[g], hd, v_heads[g],
               hd, visible, sc, out + static_cast<int64_t>(h) * hd);
  }
}

void attention_decode_kv(const AttentionShape& s, DType kv_dtype, const float* q,
                         const void* const* k_heads, const void* const* v_heads,
                         const int32_t* const* pos_heads, const int* len, int32_t qpos,
                         float* out) {
  const int hd = s.head_dim;
  std::vector<std::vector<float>> kf(s.n_kv_heads), vf(s.n_kv_heads);
  std::vector<const float*> kp(s.n_kv_heads), vp(s.n_kv_heads);
  auto to_f32 = [&](const void* src, int n, std::vector<float>& dst) {
    dst.resize(static_cast<size_t>(n) * hd);
    for (size_t i = 0; i < dst.size(); ++i) {
      if (kv_dtype == DType::kF32) {
        dst[i] = static_cast<const float*>(src)[i];
      } else {
        const uint16_t h = static_cast<const uint16_t*>(src)[i];
        dst[i] = kv_dtype == DType::kF16 ? f16_to_f32(h) : bf16_to_f32(h);
      }
    }
  };
  for (int g = 0; g < s.n_kv_heads; ++g) {
    to_f32(k_heads[g], len[g], kf[g]);
    to_f32(v_heads[g], len[g], vf[g]);
    kp[g] = kf[g].data();
    vp[g] = vf[g].data();
  }
  scalar::attention_decode(s, q, kp.data(), vp.data(), pos_heads, len, qpos, out);
}

}  // namespace scalar

}  // namespace fkv

// matmul driver: splits output rows into fixed tiles over the thread pool and runs the ISA's
// micro-kernels on each. The tiling does not depend on the thread count and every output element
// is produced by exactly one micro-kernel call, so results are bitwise thread-count independent.
// bf16 weights on the avx512+bf16dot variant round x to bf16 once per call and use vdpbf16ps on
// the stored rows (ggml's numerics for bf16 weights); FKV_BF16_DOT=0 keeps the f32 path.
// Weights with a quantised dot (quant/quant_dot.h) take ggml's route instead of conversion to f32:
// each x row is quantised once per call to the weight's vec_dot_type, then every output element is
// an integer block dot product scaled in f32, as llama.cpp's CPU backend computes it.
#include "kernels/matmul.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "core/check.h"
#include "core/thread_pool.h"
#include "kernels/dispatch.h"
#include "quant/quant.h"
#include "quant/quant_dot.h"
#include "quant/repack.h"

namespace fkv {
namespace {

// Output rows per work item: fixed (not derived from the thread count) for determinism, and a
// multiple of every variant's register block of weight rows (avx2: 3, avx512: 4 and 12).
constexpr int64_t kTileRows = 24;
// Below kSmallN x rows, converted weights are used in chunks of kSmallNChunk rows (a multiple of
// every register block of weight rows) so they are still in L1.
constexpr int64_t kSmallN = 8;
constexpr int64_t kSmallNChunk = 12;
// Output rows per work item of the quantised-dot path when n >= kSmallN.
constexpr int64_t kQDotPrefillTileRows = 96;
// Output rows per work item for x16 (repacked) weights with fewer than kSmallN x rows (two groups).
constexpr int64_t kRepackedDecodeTileRows = 32;
static_assert(kQDotPrefillTileRows % kRepackRows == 0 && kRepackedDecodeTileRows % kRepackRows == 0,
              "x16 tiles start on group boundaries");
// The bf16-dot path packs x rows into panels of kXPanel (gemm_bf16dot), except a last partial panel
// of fewer than this many rows: those rows go through gemv_bf16dot (the 1-row product's bits),
// which re-reads the weights per row (measured on 8192 x 2048: 8 rows by gemv take as long as a
// 16-row panel, docs/KERNELS.md). A row's bits thus depend only on its position within its panel's
// fill, so prefill chunks of whole panels give the bits of one chunk.
constexpr int64_t kBf16DotPanelMinN = 8;
// Outputs one shared-x region takes at most (a layer has 3: q / k / v); more go one call each.
constexpr size_t kMaxSharedXOutputs = 8;
// Below this many multiply-adds a parallel region costs more than it saves.
constexpr int64_t kMinParallelMacs = int64_t{1} << 16;
// Below this many x elements the calling thread quantises x alone.
constexpr int64_t kMinParallelQuantize = int64_t{1} << 14;

// Per-thread scratch for converted weight tiles; grows only, so hot loops never allocate.
float* tile_scratch(size_t floats) {
  thread_local std::vector<float> buf;
  if (buf.size() < floats) buf.resize(floats);
  return buf.data();
}

// The calling thread's packed copy of x, shared read-only with the workers of one matmul.
float* xpack_scratch(size_t floats) {
  thread_local std::vector<float> buf;
  if (buf.size() < floats) buf.resize(floats);
  return buf.data();
}

// The calling thread's quantised copy of x (activation blocks), shared read-only with the workers.
uint8_t* xquant_scratch(size_t bytes) {
  thread_local std::vector<uint8_t> buf;
  if (buf.size() < bytes) buf.resize(bytes);
  return buf.data();
}

// The quantised-dot kernel matching the variant `k` (scalar table -> scalar twin, so
// matmul_with(scalar) stays a portable reference; avx2 table -> at most the AVX2 kernels), or
// nullptr for weights without one.
// FKV_QDOT=0 turns the quantised dot off (weights go through dequantize_row and f32 kernels), for
// A/B measurements in one binary; FKV_QDOT=all also uses it for prefill (see below).
int quant_dot_mode() {  // 0 off, 1 default, 2 all
  static const int mode = [] {
    const char* env = std::getenv("FKV_QDOT");
    if (env == nullptr) return 1;
    if (std::strcmp(env, "0") == 0) return 0;
    return std::strcmp(env, "all") == 0 ? 2 : 1;
  }();
  return mode;
}

// The quantised-dot kernel matching the variant `k` (scalar table -> scalar twin, so
// matmul_with(scalar) stays a portable reference; avx2 table -> at most the AVX2 kernels), or
// nullptr for the f32 path. By default the quantised dot serves products of fewer than kSmallN x
// rows (decode: 2.4-20x faster) and, where it has the 512-bit paired prefill form (VNNI, legacy
// block types), every product: there it beats dequantise + blocked f32 (1B q4_0 prefill 512: 229
// vs 173-192 tok/s). Elsewhere (AVX2, k-quants) its prefill kernels run at 0.25-0.8x of the f32
// path, which then keeps prefill (docs/KERNELS.md).
QDotFn quant_dot_for(const KernelTable& k, DType t, int64_t n) {
  const int mode = quant_dot_mode();
  if (!has_quant_dot(t) || mode == 0) return nullptr;
  QDotIsa isa = quant_dot_best_isa();
  if (&k == &scalar_kernel_table()) isa = QDotIsa::kScalar;
#if defined(__x86_64__)
  if (&k == &avx2_kernel_table() && isa == QDotIsa::kAvx512) isa = QDotIsa::kAvx2;
#endif
  if (mode == 1 && n >= kSmallN && !quant_dot_has_paired_prefill(t, isa)) return nullptr;
  QDotFn f = quant_dot_fn(t, isa);
  return f != nullptr ? f : quant_dot_fn(t, QDotIsa::kScalar);
}

// x rounded to bf16 for the bf16-dot kernels, shared read-only by the workers of one call: x rows
// [0, panel_rows) packed in panels, rows [panel_rows, n) one padded row each.
struct Bf16X {
  const uint32_t* panels = nullptr;  // pack_x_bf16_panels layout of panel_rows rows
  int64_t panel_rows = 0;
  const uint16_t* rows = nullptr;  // [n - panel_rows, row_stride] bf16, zero past cols
  int64_t row_stride = 0;
};

bool uses_bf16dot(const KernelTable& k, const WeightMatrix& w) {
  return k.gemm_bf16dot != nullptr && w.dtype == DType::kBF16;
}

// panels: whether matmul's panel form may be used (false: every row as its own 1-row product).
Bf16X round_x_bf16(const KernelTable& k, const float* x, int64_t n, int64_t x_stride, int64_t cols,
                   bool panels) {
  Bf16X out;
  if (panels) {
    const int64_t tail = n % kXPanel;
    out.panel_rows = tail >= kBf16DotPanelMinN ? n : n - tail;
  }
  if (out.panel_rows > 0) {
    thread_local std::vector<uint32_t> buf;
    const size_t words =
        static_cast<size_t>((out.panel_rows + kXPanel - 1) / kXPanel * bf16_pairs(cols) * kXPanel);
    if (buf.size() < words) buf.resize(words);
    pack_x_bf16_panels(k, x, out.panel_rows, x_stride, cols, buf.data());
    out.panels = buf.data();
  }
  if (out.panel_rows < n) {
    thread_local std::vector<uint16_t> buf;
    const int64_t nrows = n - out.panel_rows;
    out.row_stride = (cols + 31) / 32 * 32;
    if (buf.size() < static_cast<size_t>(nrows * out.row_stride)) {
      buf.resize(static_cast<size_t>(nrows * out.row_stride));
    }
    for (int64_t i = 0; i < nrows; ++i) {
      k.round_row_bf16(x + (out.panel_rows + i) * x_stride, cols, buf.data() + i * out.row_stride);
    }
    out.rows = buf.data();
  }
  return out;
}

// One tile of output rows [r0, r0 + nr) of the bf16-dot path.
void bf16dot_tile(const KernelTable& k, int64_t n, const Bf16X& xb, const WeightMatrix& w,
                  int64_t r0, int64_t nr, float* y, int64_t y_stride) {
  if (xb.panel_rows > 0) {
    k.gemm_bf16dot(xb.panels, xb.panel_rows, w.row(r0), w.row_bytes, nr, w.cols, y + r0, y_stride);
  }
  for (int64_t i = xb.panel_rows; i < n; ++i) {
    k.gemv_bf16dot(xb.rows + (i - xb.panel_rows) * xb.row_stride, w.row(r0), w.row_bytes, nr,
                   w.cols, y + i * y_stride + r0);
  }
}

bool is_plain(DType t) { return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16; }

void convert_row(const KernelTable& k, const WeightMatrix& w, int64_t r, float* dst) {
  if (w.layout == WeightLayout::kX16) {
    thread_local std::vector<uint8_t> row;
    row.resize(dtype_row_bytes(w.dtype, w.cols));
    x16_row(w.dtype, w.data, w.cols, r, row.data());
    dequantize_row(w.dtype, row.data(), dst, w.cols);
    return;
  }
  const uint8_t* src = w.row(r);
  switch (w.dtype) {
    case DType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(w.cols) * sizeof(float));
      return;
    case DType::kF16:
      k.f16_row_to_f32(reinterpret_cast<const uint16_t*>(src), dst, w.cols);
      return;
    case DType::kBF16:
      k.bf16_row_to_f32(reinterpret_cast<const uint16_t*>(src), dst, w.cols);
      return;
    default:
      dequantize_row(w.dtype, src, dst, w.cols);
      return;
  }
}

void check_weight(const WeightMatrix& w) {
  FKV_CHECK(w.data != nullptr, "matmul: weight '%s' has no data", w.name.c_str());
  FKV_CHECK(w.rows >= 0 && w.cols > 0, "matmul: weight '%s' has shape [%lld, %lld]", w.name.c_str(),
            static_cast<long long>(w.rows), static_cast<long long>(w.cols));
  FKV_CHECK(is_plain(w.dtype) || can_dequantize(w.dtype),
            "matmul: weight '%s' has unsupported dtype %s", w.name.c_str(), dtype_name(w.dtype));
  FKV_CHECK(w.row_bytes >= dtype_row_bytes(w.dtype, w.cols),
            "matmul: weight '%s' row_bytes %zu < %zu needed for %lld %s elements", w.name.c_str(),
            w.row_bytes, dtype_row_bytes(w.dtype, w.cols), static_cast<long long>(w.cols),
            dtype_name(w.dtype));
  FKV_CHECK(w.layout == WeightLayout::kRows || x16_layout_fits(w),
            "matmul: weight '%s' is repacked x16 but is %s [%lld, %lld]", w.name.c_str(),
            dtype_name(w.dtype), static_cast<long long>(w.rows), static_cast<long long>(w.cols));
}

// check_weight plus the call's shape: n >= 0 rows, and for several rows strides that hold a row.
void check_call(const char* op, const WeightMatrix& w, int64_t n, int64_t x_stride,
                int64_t y_stride) {
  check_weight(w);
  FKV_CHECK(n >= 0 && (n <= 1 || (x_stride >= w.cols && y_stride >= w.rows)),
            "%s '%s': n %lld, x_stride %lld, y_stride %lld for [%lld, %lld]", op, w.name.c_str(),
            static_cast<long long>(n), static_cast<long long>(x_stride),
            static_cast<long long>(y_stride), static_cast<long long>(w.rows),
            static_cast<long long>(w.cols));
}

// One tile of output rows [r0, r0 + nr) for all n inputs. xp (or null) is x packed for
// gemm_xpacked: whole panels of kXPanel x rows take it, the n % kXPanel others the dot form. xb (or
// null) is x rounded for the bf16-dot kernels, which then do the whole tile.
void matmul_tile(const KernelTable& k, const float* x, int64_t n, int64_t x_stride, const float* xp,
                 const Bf16X* xb, const WeightMatrix& w, int64_t r0, int64_t nr, float* y,
                 int64_t y_stride) {
  const int64_t cols = w.cols;
  if (xb != nullptr) {
    bf16dot_tile(k, n, *xb, w, r0, nr, y, y_stride);
    return;
  }
  if (xp != nullptr) {
    const float* wf;
    int64_t ws;
    if (w.dtype == DType::kF32 && w.row_bytes % sizeof(float) == 0) {
      wf = reinterpret_cast<const float*>(w.row(r0));
      ws = static_cast<int64_t>(w.row_bytes / sizeof(float));
    } else {
      ws = cols;
      float* buf = tile_scratch(static_cast<size_t>(nr * ws));
      for (int64_t r = 0; r < nr; ++r) convert_row(k, w, r0 + r, buf + r * ws);
      wf = buf;
    }
    const int64_t n_packed = n / kXPanel * kXPanel;
    k.gemm_xpacked(xp, n_packed, wf, nr, ws, cols, y + r0, y_stride);
    if (n_packed < n) {
      k.gemm_f32(x + n_packed * x_stride, n - n_packed, x_stride, wf, nr, ws, cols,
                 y + n_packed * y_stride + r0, y_stride);
    }
    return;
  }
  if (n == 1 && is_plain(w.dtype)) {
    // Decode is bound by weight bandwidth: convert and multiply in one pass over the weights.
    auto gemv = w.dtype == DType::kF32   ? k.gemv_f32
                : w.dtype == DType::kF16 ? k.gemv_f16
                                         : k.gemv_bf16;
    gemv(x, w.row(r0), w.row_bytes, nr, cols, y + r0);
    return;
  }
  if (w.dtype == DType::kF32 && w.row_bytes % sizeof(float) == 0) {
    k.gemm_f32(x, n, x_stride, reinterpret_cast<const float*>(w.row(r0)), nr,
               static_cast<int64_t>(w.row_bytes / sizeof(float)), cols, y + r0, y_stride);
    return;
  }
  const int64_t ld = (cols + 15) / 16 * 16;
  // Few x rows: convert the tile in chunks that stay in L1 between conversion and use.
  const int64_t chunk = n < kSmallN ? kSmallNChunk : nr;
  float* buf = tile_scratch(static_cast<size_t>(std::min(chunk, nr) * ld));
  for (int64_t c0 = 0; c0 < nr; c0 += chunk) {
    const int64_t nc = std::min(chunk, nr - c0);
    for (int64_t r = 0; r < nc; ++r) convert_row(k, w, r0 + c0 + r, buf + r * ld);
    k.gemm_f32(x, n, x_stride, buf, nc, ld, cols, y + r0 + c0, y_stride);
  }
}

}  // namespace

void pack_x_panels(const float* x, int64_t n, int64_t x_stride, int64_t cols, float* xp) {
  for (int64_t i0 = 0; i0 < n; i0 += kXPanel) {
    float* panel = xp + (i0 / kXPanel) * cols * kXPanel;
    for (int64_t l = 0; l < kXPanel; ++l) {
      const int64_t i = i0 + l;
      if (i < n) {
        const float* xi = x + i * x_stride;
        for (int64_t c = 0; c < cols; ++c) panel[c * kXPanel + l] = xi[c];
      } else {
        for (int64_t c = 0; c < cols; ++c) panel[c * kXPanel + l] = 0.0f;
      }
    }
  }
}

uint16_t round_to_bf16_dot(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  if ((u & 0x7f800000u) == 0) return static_cast<uint16_t>((u >> 16) & 0x8000u);  // zero, denormal
  return f32_to_bf16(v);  // RNE; NaN -> quiet NaN
}

void pack_x_bf16_panels(const KernelTable& k, const float* x, int64_t n, int64_t x_stride,
                        int64_t cols, uint32_t* xp) {
  if (n <= 0) return;
  const int64_t pairs = bf16_pairs(cols);
  const int64_t panels = (n + kXPanel - 1) / kXPanel;
  // round_row_bf16 writes whole 32-element blocks, zero past cols.
  thread_local std::vector<uint32_t> row;
  row.resize(static_cast<size_t>((cols + 31) / 32 * 16));
  uint16_t* row_halves = reinterpret_cast<uint16_t*>(row.data());
  std::fill(xp + (panels - 1) * pairs * kXPanel, xp + panels * pairs * kXPanel, 0u);
  for (int64_t i = 0; i < n; ++i) {
    k.round_row_bf16(x + i * x_stride, cols, row_halves);
    uint32_t* dst = xp + (i / kXPanel) * pairs * kXPanel + i % kXPanel;
    for (int64_t q = 0; q < pairs; ++q) dst[q * kXPanel] = row[static_cast<size_t>(q)];
  }
}

// The quantised-dot route: x rows quantised once (shared read-only by the workers), then tiles of
// `qtile` output rows of every output in one parallel region. Each row is independent, so
// splitting them over threads does not change the bytes, and neither does sharing the region:
// each tile is the same kernel call on the same quantised x as alone.
static void matmul_qdot(QDotFn qdot, int64_t qtile, const float* x, int64_t n, int64_t x_stride,
                        DType dtype, int64_t cols, std::span<const MatmulOut> outs,
                        int64_t threads) {
  const size_t xq_stride = vec_dot_row_bytes(dtype, cols);
  uint8_t* xq = xquant_scratch(xq_stride * static_cast<size_t>(n));
  auto quantize = [&](int64_t i) {
    quantize_row_for_dot(dtype, x + i * x_stride, xq + static_cast<size_t>(i) * xq_stride, cols);
  };
  // Tile t of the region belongs to the last output whose first tile index is <= t.
  FKV_CHECK(!outs.empty() && outs.size() <= kMaxSharedXOutputs, "matmul: %zu outputs of one x",
            outs.size());
  std::array<int64_t, kMaxSharedXOutputs + 1> first_tile{};  // [outs + 1], on the stack
  for (size_t o = 0; o < outs.size(); ++o) {
    first_tile[o + 1] = first_tile[o] + (outs[o].w->rows + qtile - 1) / qtile;
  }
  const auto tiles_end = first_tile.begin() + outs.size() + 1;
  const int64_t qtiles = first_tile[outs.size()];
  const int64_t qthreads = std::min(threads, qtiles);
  auto run_qtile = [&](int64_t t) {
    const size_t o = static_cast<size_t>(std::upper_bound(first_tile.begin(), tiles_end, t) -
                                         first_tile.begin() - 1);
    const WeightMatrix& w = *outs[o].w;
    const int64_t r0 = (t - first_tile[o]) * qtile;
    qdot(w.row(r0), w.row_bytes, std::min(qtile, w.rows - r0), xq, xq_stride, n, cols,
         outs[o].y + r0, outs[o].y_stride);
  };
  if (qthreads > 1) {
    const int nt = static_cast<int>(qthreads);
    // A few rows quantise faster than a region starts (decode: one row).
    if (n * cols < kMinParallelQuantize) {
      for (int64_t i = 0; i < n; ++i) quantize(i);
    } else {
      parallel_for(n, quantize, {.max_threads = nt});
    }
    parallel_for(qtiles, run_qtile, {.max_threads = nt});
    return;
  }
  for (int64_t i = 0; i < n; ++i) quantize(i);
  for (int64_t t = 0; t < qtiles; ++t) run_qtile(t);
}

static void matmul_qdot(QDotFn qdot, int64_t qtile, const float* x, int64_t n, int64_t x_stride,
                        const WeightMatrix& w, float* y, int64_t y_stride, int64_t threads) {
  const MatmulOut out{&w, y, y_stride};
  matmul_qdot(qdot, qtile, x, n, x_stride, w.dtype, w.cols, {&out, 1}, threads);
}

// x16 weights: always the 16-row dot (the scalar twin under the scalar table), whatever n; its
// bits do not depend on n, the tile or the thread count, so matmul and matmul_rows share it, and
// several x16 outputs of one x (same type and width) may share its quantisation and one region.
static void matmul_repacked(const KernelTable& k, const float* x, int64_t n, int64_t x_stride,
                            std::span<const MatmulOut> outs) {
  const DType t = outs[0].w->dtype;
  const QDotFn qdot =
      &k == &scalar_kernel_table() ? x16_dot_fn(t, QDotIsa::kScalar) : x16_best_dot(t);
  const int64_t qtile = n >= kSmallN ? kQDotPrefillTileRows : kRepackedDecodeTileRows;
  int64_t macs = 0;
  for (const MatmulOut& o : outs) macs += n * o.w->rows * o.w->cols;
  const int64_t threads = macs < kMinParallelMacs ? 1 : num_threads();
  matmul_qdot(qdot, qtile, x, n, x_stride, t, outs[0].w->cols, outs, threads);
}

static void matmul_repacked(const KernelTable& k, const float* x, int64_t n, int64_t x_stride,
                            const WeightMatrix& w, float* y, int64_t y_stride) {
  const MatmulOut out{&w, y, y_stride};
  matmul_repacked(k, x, n, x_stride, {&out, 1});
}

void matmul_with(const KernelTable& k, const float* x, int64_t n, int64_t x_stride,
                 const WeightMatrix& w, float* y, int64_t y_stride) {
  check_call("matmul", w, n, x_stride, y_stride);
  if (n == 0 || w.rows == 0) return;
  if (w.layout == WeightLayout::kX16) {
    matmul_repacked(k, x, n, x_stride, w, y, y_stride);
    return;
  }
  const int64_t tiles = (w.rows + kTileRows - 1) / kTileRows;
  int64_t threads = std::min<int64_t>(num_threads(), tiles);
  if (n * w.rows * w.cols < kMinParallelMacs) threads = 1;
  if (const QDotFn qdot = quant_dot_for(k, w.dtype, n); qdot != nullptr) {
    // The kernels give each element the same bits whatever the tile, so the tile may depend on n:
    // with several x rows, bigger tiles amortise the kernels' per-call packing of x.
    matmul_qdot(qdot, n >= kSmallN ? kQDotPrefillTileRows : kTileRows, x, n, x_stride, w, y,
                y_stride, threads);
    return;
  }
  // Packing (or rounding) x costs O(n * cols) once per call, shared by all tiles.
  const float* xp = nullptr;
  Bf16X xb_storage;
  const Bf16X* xb = nullptr;
  if (uses_bf16dot(k, w)) {
    xb_storage = round_x_bf16(k, x, n, x_stride, w.cols, true);
    xb = &xb_storage;
  } else if (k.gemm_xpacked != nullptr && n >= kXPanel) {
    const int64_t n_packed = n / kXPanel * kXPanel;
    float* buf = xpack_scratch(static_cast<size_t>(n_packed * w.cols));
    pack_x_panels(x, n_packed, x_stride, w.cols, buf);
    xp = buf;
  }
  auto run_tile = [&](int64_t t) {
    const int64_t r0 = t * kTileRows;
    matmul_tile(k, x, n, x_stride, xp, xb, w, r0, std::min(kTileRows, w.rows - r0), y, y_stride);
  };
  if (threads > 1) {
    // Chunks of several tiles (the pool's default, ~4 per thread) keep claims rare next to the
    // ~0.3 us a decode tile takes; a chunk's tiles are the same kernel calls as one by one.
    parallel_for(tiles, run_tile, {.max_threads = static_cast<int>(threads)});
    return;
  }
  for (int64_t t = 0; t < tiles; ++t) run_tile(t);
}

void matmul(const float* x, int64_t n, int64_t x_stride, const WeightMatrix& w, float* y,
            int64_t y_stride) {
  matmul_with(active_kernels(), x, n, x_stride, w, y, y_stride);
}

// Every element goes through the call matmul_with(k, x_i, 1, ...) makes for it: the quantised dot
// (whose bits do not depend on nr or nx), the fused gemv for plain dtypes, or conversion in
// kSmallNChunk chunks + gemm_f32 on one row. Only the loop order differs: tile outer, rows inner.
void matmul_rows_with(const KernelTable& k, const float* x, int64_t n, int64_t x_stride,
                      const WeightMatrix& w, float* y, int64_t y_stride) {
  if (n <= 1) {
    matmul_with(k, x, n, x_stride, w, y, y_stride);
    return;
  }
  check_call("matmul_rows", w, n, x_stride, y_stride);  // n >= 2 here
  if (w.rows == 0) return;
  if (w.layout == WeightLayout::kX16) {
    matmul_repacked(k, x, n, x_stride, w, y, y_stride);
    return;
  }
  const QDotFn qdot = quant_dot_for(k, w.dtype, 1);
  // The quantised dot packs its x rows once per call, so it takes bigger tiles (as matmul_with
  // does for n >= kSmallN); tiles never change a result's bits.
  const int64_t tile_rows = qdot != nullptr && n >= kSmallN ? kQDotPrefillTileRows : kTileRows;
  const int64_t tiles = (w.rows + tile_rows - 1) / tile_rows;
  int64_t threads = std::min<int64_t>(num_threads(), tiles);
  if (n * w.rows * w.cols < kMinParallelMacs) threads = 1;
  size_t xq_stride = 0;
  uint8_t* xq = nullptr;
  Bf16X xb;  // rows, as matmul_with rounds its single row
  if (uses_bf16dot(k, w)) xb = round_x_bf16(k, x, n, x_stride, w.cols, false);
  if (qdot != nullptr) {
    xq_stride = vec_dot_row_bytes(w.dtype, w.cols);
    xq = xquant_scratch(xq_stride * static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      quantize_row_for_dot(w.dtype, x + i * x_stride, xq + static_cast<size_t>(i) * xq_stride,
                           w.cols);
    }
  }
  auto run_tile = [&](int64_t t) {
    const int64_t r0 = t * tile_rows;
    const int64_t nr = std::min(tile_rows, w.rows - r0);
    if (qdot != nullptr) {
      qdot(w.row(r0), w.row_bytes, nr, xq, xq_stride, n, w.cols, y + r0, y_stride);
      return;
    }
    if (xb.rows != nullptr) {
      bf16dot_tile(k, n, xb, w, r0, nr, y, y_stride);
      return;
    }
    if (is_plain(w.dtype)) {
      auto gemv = w.dtype == DType::kF32   ? k.gemv_f32
                  : w.dtype == DType::kF16 ? k.gemv_f16
                                           : k.gemv_bf16;
      for (int64_t i = 0; i < n; ++i) {
        gemv(x + i * x_stride, w.row(r0), w.row_bytes, nr, w.cols, y + i * y_stride + r0);
      }
      return;
    }
    const int64_t ld = (w.cols + 15) / 16 * 16;
    float* buf = tile_scratch(static_cast<size_t>(std::min(kSmallNChunk, nr) * ld));
    for (int64_t c0 = 0; c0 < nr; c0 += kSmallNChunk) {
      const int64_t nc = std::min(kSmallNChunk, nr - c0);
      for (int64_t r = 0; r < nc; ++r) convert_row(k, w, r0 + c0 + r, buf + r * ld);
      for (int64_t i = 0; i < n; ++i) {
        k.gemm_f32(x + i * x_stride, 1, x_stride, buf, nc, ld, w.cols, y + i * y_stride + r0 + c0,
                   y_stride);
      }
    }
  };
  if (threads > 1) {
    parallel_for(tiles, run_tile, {.max_threads = static_cast<int>(threads)});
    return;
  }
  for (int64_t t = 0; t < tiles; ++t) run_tile(t);
}

void matmul_rows(const float* x, int64_t n, int64_t x_stride, const WeightMatrix& w, float* y,
                 int64_t y_stride) {
  matmul_rows_with(active_kernels(), x, n, x_stride, w, y, y_stride);
}

// Both shared-x forms: one region over x16 outputs of one type and width (where matmul and
// matmul_rows are the same call), else each output by its own call.
static void shared_x(const float* x, int64_t n, int64_t x_stride, std::span<const MatmulOut> outs,
                     bool rows) {
  const KernelTable& k = active_kernels();
  bool fused = n >= 1 && !outs.empty() && outs.size() <= kMaxSharedXOutputs;
  for (const MatmulOut& o : outs) {
    FKV_CHECK(o.w != nullptr && o.y != nullptr, "matmul shared x: an output without weight or y");
    fused = fused && o.w->layout == WeightLayout::kX16 && o.w->dtype == outs[0].w->dtype &&
            o.w->cols == outs[0].w->cols && o.w->rows > 0;
  }
  if (!fused) {
    for (const MatmulOut& o : outs) {
      if (rows) {
        matmul_rows_with(k, x, n, x_stride, *o.w, o.y, o.y_stride);
      } else {
        matmul_with(k, x, n, x_stride, *o.w, o.y, o.y_stride);
      }
    }
    return;
  }
  for (const MatmulOut& o : outs) check_call("matmul (shared x)", *o.w, n, x_stride, o.y_stride);
  matmul_repacked(k, x, n, x_stride, outs);
}

void matmul_shared_x(const float* x, int64_t n, int64_t x_stride, std::span<const MatmulOut> outs) {
  shared_x(x, n, x_stride, outs, false);
}

void matmul_rows_shared_x(const float* x, int64_t n, int64_t x_stride,
                          std::span<const MatmulOut> outs) {
  shared_x(x, n, x_stride, outs, true);
}

bool x16_layout_fits(const WeightMatrix& w) {
  return x16_shape_ok(w.dtype, w.rows, w.cols) && w.row_bytes == dtype_row_bytes(w.dtype, w.cols);
}

void weight_row_to_f32(const WeightMatrix& w, int64_t r, float* dst) {
  check_weight(w);
  FKV_CHECK(r >= 0 && r < w.rows, "weight '%s': row %lld out of [0, %lld)", w.name.c_str(),
            static_cast<long long>(r), static_cast<long long>(w.rows));
  convert_row(active_kernels(), w, r, dst);
}

void matmul_scalar(const float* x, int64_t n, int64_t x_stride, const WeightMatrix& w, float* y,
                   int64_t y_stride) {
  check_weight(w);
  const KernelTable& k = scalar_kernel_table();
  std::vector<float> row(static_cast<size_t>(w.cols));
  for (int64_t r = 0; r < w.rows; ++r) {
    convert_row(k, w, r, row.data());
    for (int64_t i = 0; i < n; ++i) {
      const float* xi = x + i * x_stride;
      double acc = 0.0;
      for (int64_t c = 0; c < w.cols; ++c) acc += static_cast<double>(xi[c]) * row[c];
      y[i * y_stride + r] = static_cast<float>(acc);
    }
  }
}

void matmul_bf16dot_scalar(const float* x, int64_t n, int64_t x_stride, const WeightMatrix& w,
                           float* y, int64_t y_stride) {
  check_weight(w);
  FKV_CHECK(w.dtype == DType::kBF16, "matmul_bf16dot_scalar: weight '%s' is %s, not bf16",
            w.name.c_str(), dtype_name(w.dtype));
  std::vector<double> xr(static_cast<size_t>(w.cols));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t c = 0; c < w.cols; ++c) {
      xr[static_cast<size_t>(c)] = bf16_to_f32(round_to_bf16_dot(x[i * x_stride + c]));
    }
    for (int64_t r = 0; r < w.rows; ++r) {
      const uint8_t* wr = w.row(r);
      double acc = 0.0;
      for (int64_t c = 0; c < w.cols; ++c) {
        uint16_t h;
        std::memcpy(&h, wr + 2 * c, 2);
        if ((h & 0x7f80u) == 0) h &= 0x8000u;  // denormal: read as (signed) zero
        acc += xr[static_cast<size_t>(c)] * bf16_to_f32(h);
      }
      y[i * y_stride + r] = static_cast<float>(acc);
    }
  }
}

}  // namespace fkv

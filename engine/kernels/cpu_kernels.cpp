#include "engine/kernels/cpu_kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "common/check.h"
#include "common/cpu_clones.h"

// The vector types below never cross a non-inlined call boundary of another translation unit.
#pragma GCC diagnostic ignored "-Wpsabi"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define DSOCR_HAVE_AVX2_PATH 1
#else
#define DSOCR_HAVE_AVX2_PATH 0
#endif

namespace dsocr::engine::cpu {
namespace {

// Eight float lanes as a GCC vector: one AVX2 register in the x86-64-v3 clone, two SSE
// registers in the baseline one.
using v8f = float __attribute__((vector_size(32)));
using v8i = int32_t __attribute__((vector_size(32)));
using v8u = uint32_t __attribute__((vector_size(32)));
using v8h = uint16_t __attribute__((vector_size(16)));
using v8c = int8_t __attribute__((vector_size(8)));

#define DSOCR_INLINE inline __attribute__((always_inline))

// Outside hot loops only: GCC builds this from four inserts. In a loop, write scalar * vector,
// which becomes one broadcast load.
DSOCR_INLINE v8f splat(float v) { return v8f{v, v, v, v, v, v, v, v}; }

DSOCR_INLINE v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

DSOCR_INLINE v8f load8(const uint16_t* p) {  // bfloat16: the high half of a float32
  v8h h;
  std::memcpy(&h, p, sizeof h);
  v8u w = __builtin_convertvector(h, v8u) << 16;
  v8f v;
  std::memcpy(&v, &w, sizeof v);
  return v;
}

DSOCR_INLINE v8f load8(const int8_t* p) {  // int8 quantized: the value before its group's scale
  v8c c;
  std::memcpy(&c, p, sizeof c);
  return __builtin_convertvector(__builtin_convertvector(c, v8i), v8f);
}

DSOCR_INLINE float hsum(v8f v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

DSOCR_INLINE void store(float* p, float v) { *p = v; }

DSOCR_INLINE void store(uint16_t* p, float v) {  // round to nearest even, as at::BFloat16
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  if (v != v) {
    *p = 0x7FC0;
    return;
  }
  bits += 0x7FFF + ((bits >> 16) & 1);
  *p = static_cast<uint16_t>(bits >> 16);
}

// exp(x) for x <= 0, lanes below -87 flushed to 0 (softmax weights under 1e-38 of the largest).
// Cephes' expf: n = round(x / ln 2), a degree-5 polynomial on the remainder; ~1 ulp.
DSOCR_INLINE v8f exp_nonpositive(v8f x) {
  const v8f lowest = splat(-87.0f);
  const v8i underflow = x < lowest;
  x = underflow ? lowest : x;
  const v8f t = x * splat(1.44269504088896341f) + splat(0.5f);
  v8f n = __builtin_convertvector(__builtin_convertvector(t, v8i), v8f);  // trunc = ceil here
  n = n > t ? n - splat(1.0f) : n;                                        // floor(t)
  const v8f r = x - n * splat(0.693359375f) - n * splat(-2.12194440e-4f);
  v8f p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  const v8f y = p * r * r + r + splat(1.0f);
  const v8i exponent = (__builtin_convertvector(n, v8i) + 127) << 23;
  v8f scale;
  std::memcpy(&scale, &exponent, sizeof scale);
  return underflow ? splat(0.0f) : y * scale;
}

// Heads [h0, h1) of one query: scores over the context, a max-subtracted softmax, the weighted
// sum of values. Positions are the outer loop, so each token's K and V rows (all heads side by
// side) are read front to back once per task rather than once per head with a stride.
// `scratch` holds (h1 - h0) * (padded context + head_dim) floats.
// T: the query and out element type; C: the caches'.
template <typename T, typename C = T>
DSOCR_INLINE void attend(const PagedAttentionArgs& a, const DecodeQuery& q, int64_t h0, int64_t h1,
                         float* scratch) {
  const int64_t dim = a.head_dim, d8 = dim / 8, group = a.heads / a.kv_heads, n = h1 - h0;
  const int64_t padded = (q.context_len + 7) / 8 * 8;
  float* scores = scratch;                // [n][padded]
  float* acc_all = scratch + n * padded;  // [n][dim]
  const T* query = static_cast<const T*>(a.query) + q.row * a.heads * dim;
  const C* keys = static_cast<const C*>(a.key_cache);
  const C* values = static_cast<const C*>(a.value_cache);
  const int64_t row_stride = a.kv_heads * dim;
  auto token_row = [&](int64_t p) {
    return (static_cast<int64_t>(q.block_table[p / a.block_size]) * a.block_size +
            p % a.block_size) *
           row_stride;
  };

  for (int64_t h = h0; h < h1; ++h) {  // the scaled query, kept in the accumulator rows for now
    for (int64_t d = 0; d < d8; ++d) {
      const v8f v = load8(query + h * dim + 8 * d) * splat(a.scale);
      std::memcpy(acc_all + (h - h0) * dim + 8 * d, &v, sizeof v);
    }
  }
  for (int64_t p = 0; p < q.context_len; ++p) {
    const C* k_row = keys + token_row(p);
    for (int64_t h = h0; h < h1; ++h) {
      const C* k = k_row + (h / group) * dim;
      const float* qh = acc_all + (h - h0) * dim;
      v8f s = {};
      for (int64_t d = 0; d < d8; ++d) s += load8(qh + 8 * d) * load8(k + 8 * d);
      scores[(h - h0) * padded + p] = hsum(s);
    }
  }
  float inv_sum[kMaxHeads];
  for (int64_t i = 0; i < n; ++i) {
    float* sc = scores + i * padded;
    float max_score = -std::numeric_limits<float>::infinity();
    for (int64_t p = 0; p < q.context_len; ++p) max_score = std::max(max_score, sc[p]);
    std::fill(sc + q.context_len, sc + padded, -std::numeric_limits<float>::infinity());
    v8f sum = {};
    for (int64_t p = 0; p < padded; p += 8) {
      const v8f e = exp_nonpositive(load8(sc + p) - splat(max_score));
      std::memcpy(sc + p, &e, sizeof e);
      sum += e;
    }
    inv_sum[i] = 1.0f / hsum(sum);
  }
  std::fill(acc_all, acc_all + n * dim, 0.0f);
  for (int64_t p = 0; p < q.context_len; ++p) {
    const C* v_row = values + token_row(p);
    for (int64_t h = h0; h < h1; ++h) {
      const C* v = v_row + (h / group) * dim;
      float* acc = acc_all + (h - h0) * dim;
      const float weight = scores[(h - h0) * padded + p];
      for (int64_t d = 0; d < d8; ++d) {
        const v8f sum = load8(acc + 8 * d) + weight * load8(v + 8 * d);
        std::memcpy(acc + 8 * d, &sum, sizeof sum);
      }
    }
  }
  T* out = static_cast<T*>(a.out) + q.row * a.heads * dim;
  for (int64_t h = h0; h < h1; ++h)
    for (int64_t d = 0; d < dim; ++d)
      store(out + h * dim + d, acc_all[(h - h0) * dim + d] * inv_sum[h - h0]);
}

DSOCR_CPU_CLONES void attend_f32(const PagedAttentionArgs& a, const DecodeQuery& q, int64_t h0,
                                 int64_t h1, float* scratch) {
  attend<float>(a, q, h0, h1, scratch);
}

DSOCR_CPU_CLONES void attend_bf16(const PagedAttentionArgs& a, const DecodeQuery& q, int64_t h0,
                                  int64_t h1, float* scratch) {
  attend<uint16_t>(a, q, h0, h1, scratch);
}

DSOCR_CPU_CLONES void attend_f32_bf16_cache(const PagedAttentionArgs& a, const DecodeQuery& q,
                                            int64_t h0, int64_t h1, float* scratch) {
  attend<float, uint16_t>(a, q, h0, h1, scratch);
}

// One or two rows of x against four rows of w (their dot products). The accumulators are named
// variables: GCC keeps an array of them on the stack, storing it every iteration (~35 instead of
// ~55 GFLOPS). A row's result is the same whichever rows it is computed with.
template <int kRows>
DSOCR_INLINE void dot_block(const float* x, int64_t k_dim, const float* const* w, int64_t count,
                            float* out, int64_t out_stride) {
  v8f c00 = {}, c01 = {}, c02 = {}, c03 = {}, c10 = {}, c11 = {}, c12 = {}, c13 = {};
  for (int64_t k = 0; k < k_dim; k += 8) {
    const v8f a = load8(x + k);
    const v8f w0 = load8(w[0] + k), w1 = load8(w[1] + k), w2 = load8(w[2] + k),
              w3 = load8(w[3] + k);
    c00 += w0 * a, c01 += w1 * a, c02 += w2 * a, c03 += w3 * a;
    if constexpr (kRows == 2) {
      const v8f b = load8(x + k_dim + k);
      c10 += w0 * b, c11 += w1 * b, c12 += w2 * b, c13 += w3 * b;
    }
  }
  const float sums[2][4] = {{hsum(c00), hsum(c01), hsum(c02), hsum(c03)},
                            {hsum(c10), hsum(c11), hsum(c12), hsum(c13)}};
  for (int r = 0; r < kRows; ++r)
    for (int64_t i = 0; i < count; ++i) out[r * out_stride + i] = sums[r][i];
}

// out[r][j] = dot(x[r], w[j]) for r < rows, j in [j0, j1): four rows of w at a time (they stay in
// L1 while every row of x passes), two rows of x at a time.
DSOCR_INLINE void matmul_nt(const float* x, int64_t rows, const float* w, int64_t k_dim,
                            float* out, int64_t out_stride, int64_t j0, int64_t j1) {
  for (int64_t j = j0; j < j1; j += 4) {
    const int64_t nj = std::min<int64_t>(4, j1 - j);
    const float* wr[4];
    for (int i = 0; i < 4; ++i) wr[i] = w + (j + std::min<int64_t>(i, nj - 1)) * k_dim;
    int64_t r = 0;
    for (; r + 2 <= rows; r += 2)
      dot_block<2>(x + r * k_dim, k_dim, wr, nj, out + r * out_stride + j, out_stride);
    if (r < rows) dot_block<1>(x + r * k_dim, k_dim, wr, nj, out + r * out_stride + j, out_stride);
  }
}

template <typename W>
DSOCR_INLINE void widen_rows(const W* w, const float* scales, int64_t rows, int64_t cols,
                             float* out) {
  const int64_t groups = int8_groups(cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; c += 8) {
      v8f v = load8(w + r * cols + c);
      if constexpr (std::is_same_v<W, int8_t>) v *= scales[r * groups + c / kInt8Group];
      std::memcpy(out + r * cols + c, &v, sizeof v);
    }
  }
}

DSOCR_CPU_CLONES void widen_generic(const WeightMatrix& m, float* out) {
  switch (m.format) {
    case WeightFormat::kFloat32:
      return widen_rows(static_cast<const float*>(m.data), nullptr, m.rows, m.cols, out);
    case WeightFormat::kBFloat16:
      return widen_rows(static_cast<const uint16_t*>(m.data), nullptr, m.rows, m.cols, out);
    case WeightFormat::kInt8:
      return widen_rows(static_cast<const int8_t*>(m.data), m.scales, m.rows, m.cols, out);
  }
}

#if DSOCR_HAVE_AVX2_PATH
// GCC widens an int8 vector to float32 lane by lane in portable vector code (~30 instructions for
// eight values, which made int8 weights slower than float32 ones); AVX2 does it in two.
__attribute__((target("avx2"), always_inline)) inline __m256 widen8_avx2(const int8_t* p) {
  return _mm256_cvtepi32_ps(
      _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

__attribute__((target("avx2"), always_inline)) inline __m256 widen8_avx2(const uint16_t* p) {
  const __m256i bits = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(bits, 16));
}

__attribute__((target("avx2"))) void widen_int8_avx2(const WeightMatrix& m, float* out) {
  const auto* q = static_cast<const int8_t*>(m.data);
  const int64_t groups = int8_groups(m.cols);
  for (int64_t r = 0; r < m.rows; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const __m256 scale = _mm256_set1_ps(m.scales[r * groups + g]);
      const int64_t c1 = std::min(m.cols, (g + 1) * kInt8Group);
      for (int64_t c = g * kInt8Group; c < c1; c += 8) {
        _mm256_storeu_ps(out + r * m.cols + c, _mm256_mul_ps(widen8_avx2(q + r * m.cols + c), scale));
      }
    }
  }
}

// Rows of x against rows [j0, j1) of a narrow W (int8 or bfloat16), four rows of W at a time,
// each weight widened in a register (~4 instructions per eight weights, where widening into a
// tile first took ~7; for int8, 3.8x float32's speed at one row, measured). The block of W is
// read from memory for the first row of x and from L1 for the others, and every row of x is
// computed by the same instructions, so a row's result does not depend on the other rows. The
// four-row block four blocks ahead is prefetched while one is computed: a block is only 5 KiB of
// int8, too short for the hardware prefetcher to follow (measured: 3.5 vs 9.4 GB/s of int8
// weights a core). int8 partial sums are scaled once per group.
template <typename W>
__attribute__((target("avx2,fma"))) void dot_rows_avx2(const float* x, int64_t x_rows,
                                                       const WeightMatrix& w, float* out,
                                                       int64_t out_stride, int64_t j0,
                                                       int64_t j1) {
  constexpr bool kInt8 = std::is_same_v<W, int8_t>;
  constexpr int64_t kAheadRows = 16;
  const int64_t k = w.cols, groups = int8_groups(k);
  const W* base = static_cast<const W*>(w.data);
  for (int64_t j = j0; j < j1; j += 4) {
    const int64_t nj = std::min<int64_t>(4, j1 - j);
    const W* r[4];
    const float* sc[4] = {};
    for (int i = 0; i < 4; ++i) {
      const int64_t row = j + std::min<int64_t>(i, nj - 1);
      r[i] = base + row * k;
      if constexpr (kInt8) sc[i] = w.scales + row * groups;
    }
    // Prefetch only while the block ahead lies wholly inside W (a prefetch cannot fault, but the
    // pointer must stay in bounds).
    const bool ahead_inside = j + kAheadRows + 4 <= w.rows;
    const char* ahead =
        ahead_inside ? reinterpret_cast<const char*>(base + (j + kAheadRows) * k) : nullptr;
    for (int64_t xr = 0; xr < x_rows; ++xr) {
      const float* xv_row = x + xr * k;
      const bool prefetch = xr == 0 && ahead_inside;
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (int64_t g0 = 0; g0 < k; g0 += kInt8Group) {
        const int64_t g1 = std::min(k, g0 + kInt8Group);
        if (prefetch) {  // this group's share of the block ahead: 4 rows x (g1 - g0) weights
          const char* p = ahead + g0 * 4 * static_cast<int64_t>(sizeof(W));
          for (int64_t b = 0; b < 4 * (g1 - g0) * static_cast<int64_t>(sizeof(W)); b += 64)
            __builtin_prefetch(p + b);
        }
        __m256 t0 = _mm256_setzero_ps(), t1 = t0, t2 = t0, t3 = t0;
        for (int64_t c = g0; c < g1; c += 8) {
          const __m256 xv = _mm256_loadu_ps(xv_row + c);
          t0 = _mm256_fmadd_ps(widen8_avx2(r[0] + c), xv, t0);
          t1 = _mm256_fmadd_ps(widen8_avx2(r[1] + c), xv, t1);
          t2 = _mm256_fmadd_ps(widen8_avx2(r[2] + c), xv, t2);
          t3 = _mm256_fmadd_ps(widen8_avx2(r[3] + c), xv, t3);
        }
        if constexpr (kInt8) {
          const int64_t g = g0 / kInt8Group;
          a0 = _mm256_fmadd_ps(t0, _mm256_set1_ps(sc[0][g]), a0);
          a1 = _mm256_fmadd_ps(t1, _mm256_set1_ps(sc[1][g]), a1);
          a2 = _mm256_fmadd_ps(t2, _mm256_set1_ps(sc[2][g]), a2);
          a3 = _mm256_fmadd_ps(t3, _mm256_set1_ps(sc[3][g]), a3);
        } else {
          a0 = _mm256_add_ps(a0, t0), a1 = _mm256_add_ps(a1, t1);
          a2 = _mm256_add_ps(a2, t2), a3 = _mm256_add_ps(a3, t3);
        }
      }
      float lanes[4][8];
      _mm256_storeu_ps(lanes[0], a0);
      _mm256_storeu_ps(lanes[1], a1);
      _mm256_storeu_ps(lanes[2], a2);
      _mm256_storeu_ps(lanes[3], a3);
      for (int64_t i = 0; i < nj; ++i) {
        const float* v = lanes[i];
        out[xr * out_stride + j + i] =
            ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
      }
    }
  }
}
#endif

// Rows [first, first + count) of W as float32 into out [count, cols].
void widen_range(const WeightMatrix& w, int64_t first, int64_t count, float* out) {
  const WeightMatrix m = w.row_slice(first, count);
#if DSOCR_HAVE_AVX2_PATH
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (m.format == WeightFormat::kInt8 && avx2) return widen_int8_avx2(m, out);
#endif
  widen_generic(m, out);
}

// Rows of W in a tile: narrow weights are widened a tile at a time into L1-sized float32 scratch,
// then every row of x meets the tile; each weight is converted once however many rows x has.
constexpr int64_t kTileRows = 4;

DSOCR_CPU_CLONES void matmul_float(const float* x, int64_t rows, const float* w, int64_t k_dim,
                                   float* out, int64_t out_stride, int64_t j0, int64_t j1) {
  matmul_nt(x, rows, w, k_dim, out, out_stride, j0, j1);
}

// out[r][j] = dot(x[r], W[j]) for r < x_rows, j in [j0, j1) (out's row stride out_stride).
void linear_rows(const float* x, int64_t x_rows, const WeightMatrix& w, float* out,
                 int64_t out_stride, int64_t j0, int64_t j1) {
  if (w.format == WeightFormat::kFloat32)
    return matmul_float(x, x_rows, static_cast<const float*>(w.data), w.cols, out, out_stride, j0,
                        j1);
#if DSOCR_HAVE_AVX2_PATH
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2) {
    if (w.format == WeightFormat::kInt8)
      return dot_rows_avx2<int8_t>(x, x_rows, w, out, out_stride, j0, j1);
    return dot_rows_avx2<uint16_t>(x, x_rows, w, out, out_stride, j0, j1);
  }
#endif
  // Elsewhere: widen a tile, then the float32 kernel.
  std::vector<float> tile(static_cast<size_t>(kTileRows * w.cols));
  for (int64_t j = j0; j < j1; j += kTileRows) {
    const int64_t nj = std::min(kTileRows, j1 - j);
    widen_range(w, j, nj, tile.data());
    matmul_float(x, x_rows, tile.data(), w.cols, out + j, out_stride, 0, nj);
  }
}

// An expert with more rows than this widens its narrow weights to float32 first: the int8 and
// bfloat16 loads cost more than the multiply once the weights sit in cache and many rows pass.
constexpr int64_t kWidenExpertRows = 16;

// One expert over its n gathered rows: rows [n, hidden] -> result [n, hidden]. `wide` is scratch
// for the widened weights when n is large.
void expert_forward(const MoeArgs& a, int64_t e, const float* rows, int64_t n, float* gate,
                    float* up, float* result, std::vector<float>& wide) {
  const int64_t h = a.hidden, i = a.inter;
  WeightMatrix g = a.gate.row_slice(e * i, i), u = a.up.row_slice(e * i, i),
               d = a.down.row_slice(e * h, h);
  if (n > kWidenExpertRows && g.format != WeightFormat::kFloat32) {
    wide.resize(static_cast<size_t>(3 * i * h));
    WeightMatrix* parts[3] = {&g, &u, &d};
    for (int p = 0; p < 3; ++p) {
      float* dst = wide.data() + p * i * h;
      widen_range(*parts[p], 0, parts[p]->rows, dst);
      *parts[p] = WeightMatrix{dst, nullptr, WeightFormat::kFloat32, parts[p]->rows, parts[p]->cols};
    }
  }
  linear_rows(rows, n, g, gate, i, 0, i);
  linear_rows(rows, n, u, up, i, 0, i);
  for (int64_t t = 0; t < n * i; ++t) gate[t] = gate[t] / (1.0f + std::exp(-gate[t])) * up[t];
  linear_rows(gate, n, d, result, h, 0, h);
}

// Up to six rows of x against one panel: twelve accumulators (rows x two 8-lane halves of the
// panel's 16 columns) kept in named variables, because GCC spills an accumulator array to the
// stack on every iteration (measured: half the speed). With kPrefetch the next panel is fetched
// into the cache while this one is computed; that pass is the first over a panel, the only one
// that reads it from memory.
template <int kRows, bool kPrefetch>
DSOCR_INLINE void panel_block(const float* x, int64_t k_dim, const float* panel, float* out,
                              int64_t out_stride) {
  static_assert(kRows >= 1 && kRows <= 6);
  v8f c00 = {}, c01 = {}, c10 = {}, c11 = {}, c20 = {}, c21 = {};
  v8f c30 = {}, c31 = {}, c40 = {}, c41 = {}, c50 = {}, c51 = {};
  const float* next = panel + kPanelWidth * k_dim;
  for (int64_t k = 0; k < k_dim; ++k) {
    const v8f w0 = load8(panel + kPanelWidth * k), w1 = load8(panel + kPanelWidth * k + 8);
    if constexpr (kPrefetch) __builtin_prefetch(next + kPanelWidth * k);
#define DSOCR_PANEL_ROW(r)            \
  if constexpr (kRows > r) {          \
    const float b = x[r * k_dim + k]; \
    c##r##0 += b * w0;                \
    c##r##1 += b * w1;                \
  }
    DSOCR_PANEL_ROW(0);
    DSOCR_PANEL_ROW(1);
    DSOCR_PANEL_ROW(2);
    DSOCR_PANEL_ROW(3);
    DSOCR_PANEL_ROW(4);
    DSOCR_PANEL_ROW(5);
#undef DSOCR_PANEL_ROW
  }
#define DSOCR_PANEL_STORE(r)                                      \
  if constexpr (kRows > r) {                                      \
    std::memcpy(out + r * out_stride, &c##r##0, sizeof(v8f));     \
    std::memcpy(out + r * out_stride + 8, &c##r##1, sizeof(v8f)); \
  }
  DSOCR_PANEL_STORE(0);
  DSOCR_PANEL_STORE(1);
  DSOCR_PANEL_STORE(2);
  DSOCR_PANEL_STORE(3);
  DSOCR_PANEL_STORE(4);
  DSOCR_PANEL_STORE(5);
#undef DSOCR_PANEL_STORE
}

template <bool kPrefetch>
DSOCR_INLINE void panel_rows(int64_t rows, const float* x, int64_t k_dim, const float* panel,
                             float* out, int64_t out_stride) {
  switch (rows) {
    case 6:
      return panel_block<6, kPrefetch>(x, k_dim, panel, out, out_stride);
    case 5:
      return panel_block<5, kPrefetch>(x, k_dim, panel, out, out_stride);
    case 4:
      return panel_block<4, kPrefetch>(x, k_dim, panel, out, out_stride);
    case 3:
      return panel_block<3, kPrefetch>(x, k_dim, panel, out, out_stride);
    case 2:
      return panel_block<2, kPrefetch>(x, k_dim, panel, out, out_stride);
    default:
      return panel_block<1, kPrefetch>(x, k_dim, panel, out, out_stride);
  }
}

// All rows of x against panels [p0, p1), six rows at a time. The last panel of a W whose row
// count is not a multiple of 16 is computed into a scratch tile and only its real columns kept.
DSOCR_CPU_CLONES void panels_range(const float* x, int64_t rows, int64_t k_dim, const float* panels,
                                   int64_t n, float* out, int64_t p0, int64_t p1) {
  float tile[6 * kPanelWidth];
  for (int64_t p = p0; p < p1; ++p) {
    const float* panel = panels + p * kPanelWidth * k_dim;
    const int64_t col = p * kPanelWidth, width = std::min(kPanelWidth, n - col);
    const bool prefetch = p + 1 < p1;
    for (int64_t r = 0; r < rows; r += 6) {
      const int64_t block = std::min<int64_t>(6, rows - r);
      const float* xr = x + r * k_dim;
      float* o = width == kPanelWidth ? out + r * n + col : tile;
      const int64_t stride = width == kPanelWidth ? n : kPanelWidth;
      if (r == 0 && prefetch)
        panel_rows<true>(block, xr, k_dim, panel, o, stride);
      else
        panel_rows<false>(block, xr, k_dim, panel, o, stride);
      if (width < kPanelWidth) {
        for (int64_t i = 0; i < block; ++i)
          std::memcpy(out + (r + i) * n + col, tile + i * kPanelWidth,
                      static_cast<size_t>(width) * sizeof(float));
      }
    }
  }
}

}  // namespace

void moe_experts(const MoeArgs& a) {
  DSOCR_CHECK(moe_supported(a.hidden, a.inter));
  DSOCR_CHECK(a.gate.format == a.up.format && a.up.format == a.down.format);
  DSOCR_CHECK(a.gate.rows == a.num_experts * a.inter && a.gate.cols == a.hidden &&
              a.up.rows == a.gate.rows && a.up.cols == a.hidden &&
              a.down.rows == a.num_experts * a.hidden && a.down.cols == a.inter);
  const int64_t assignments = a.tokens * a.top_k;
  // Assignments grouped by expert, in assignment order within an expert.
  std::vector<std::vector<int64_t>> by_expert(static_cast<size_t>(a.num_experts));
  for (int64_t s = 0; s < assignments; ++s) {
    DSOCR_CHECK(a.experts[s] >= 0 && a.experts[s] < a.num_experts);
    by_expert[static_cast<size_t>(a.experts[s])].push_back(s);
  }
  // Threads split the experts that were chosen, not the expert index range: at batch 1 the six
  // chosen of 64 fell unevenly into two halves and one thread did most of the layer.
  std::vector<int64_t> chosen;
  for (int64_t e = 0; e < a.num_experts; ++e)
    if (!by_expert[static_cast<size_t>(e)].empty()) chosen.push_back(e);
  std::vector<float> results(static_cast<size_t>(assignments * a.hidden));  // per assignment
  at::parallel_for(0, static_cast<int64_t>(chosen.size()), 1, [&](int64_t begin, int64_t end) {
    std::vector<float> rows, gate, up, result, wide;
    for (int64_t c = begin; c < end; ++c) {
      const int64_t e = chosen[static_cast<size_t>(c)];
      const auto& list = by_expert[static_cast<size_t>(e)];
      const int64_t n = static_cast<int64_t>(list.size());
      rows.resize(static_cast<size_t>(n * a.hidden));
      gate.resize(static_cast<size_t>(n * a.inter));
      up.resize(static_cast<size_t>(n * a.inter));
      result.resize(static_cast<size_t>(n * a.hidden));
      for (int64_t r = 0; r < n; ++r)
        std::memcpy(rows.data() + r * a.hidden, a.x + (list[r] / a.top_k) * a.hidden,
                    static_cast<size_t>(a.hidden) * sizeof(float));
      expert_forward(a, e, rows.data(), n, gate.data(), up.data(), result.data(), wide);
      for (int64_t r = 0; r < n; ++r)
        std::memcpy(results.data() + list[r] * a.hidden, result.data() + r * a.hidden,
                    static_cast<size_t>(a.hidden) * sizeof(float));
    }
  });
  for (int64_t t = 0; t < a.tokens; ++t) {
    float* o = a.out + t * a.hidden;
    std::fill(o, o + a.hidden, 0.0f);
    for (int64_t slot = 0; slot < a.top_k; ++slot) {
      const int64_t s = t * a.top_k + slot;
      const float w = a.weights[s];
      const float* y = results.data() + s * a.hidden;
      for (int64_t d = 0; d < a.hidden; ++d) o[d] += w * y[d];
    }
  }
}

const char* weight_format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::kFloat32:
      return "float32";
    case WeightFormat::kBFloat16:
      return "bfloat16";
    case WeightFormat::kInt8:
      return "int8";
  }
  return "?";
}

void linear(const float* x, int64_t x_rows, const WeightMatrix& w, float* out) {
  DSOCR_CHECK(linear_supported(w.cols)) << w.cols << " columns";
  if (x_rows == 0 || w.rows == 0) return;
  // Blocks of 64 rows of W: ~20 per thread for a 1280-row projection, and a block (at most
  // 64 x 1280 float32 = 320 KiB) is read once from memory whatever x_rows is.
  at::parallel_for(0, (w.rows + 63) / 64, 1, [&](int64_t begin, int64_t end) {
    linear_rows(x, x_rows, w, out, w.rows, begin * 64, std::min(w.rows, end * 64));
  });
}

void widen(const WeightMatrix& w, int64_t first, int64_t count, float* out) {
  DSOCR_CHECK(linear_supported(w.cols)) << w.cols << " columns";
  DSOCR_CHECK(first >= 0 && count >= 0 && first + count <= w.rows);
  at::parallel_for(0, count, 16, [&](int64_t begin, int64_t end) {
    widen_range(w, first + begin, end - begin, out + begin * w.cols);
  });
}

int64_t quantize_int8(const void* w, Dtype dtype, int64_t rows, int64_t cols, int8_t* q,
                      float* scales) {
  const int64_t groups = int8_groups(cols);
  std::atomic<int64_t> non_finite{0};
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> row(static_cast<size_t>(cols));
    int64_t bad = 0;
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        if (dtype == Dtype::kFloat32) {
          row[c] = static_cast<const float*>(w)[r * cols + c];
        } else {
          const uint32_t bits = uint32_t{static_cast<const uint16_t*>(w)[r * cols + c]} << 16;
          std::memcpy(&row[c], &bits, sizeof bits);
        }
        if (!std::isfinite(row[c])) {
          row[c] = 0;
          ++bad;
        }
      }
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t c0 = g * kInt8Group, c1 = std::min(cols, c0 + kInt8Group);
        float max_abs = 0;
        for (int64_t c = c0; c < c1; ++c) max_abs = std::max(max_abs, std::fabs(row[c]));
        const float scale = max_abs / 127.0f;
        scales[r * groups + g] = scale;
        for (int64_t c = c0; c < c1; ++c) {
          const float v = scale > 0 ? std::nearbyint(row[c] / scale) : 0.0f;
          q[r * cols + c] = static_cast<int8_t>(std::clamp(v, -127.0f, 127.0f));
        }
      }
    }
    non_finite.fetch_add(bad);
  });
  return non_finite.load();
}

int parallel_threads() {
  std::atomic<int> used{0};
  at::parallel_for(0, 1024, 1, [&](int64_t, int64_t) { used.fetch_add(1); });
  return used.load();
}

void pack_panels(const float* w, int64_t n, int64_t k, float* panels) {
  at::parallel_for(0, panel_count(n), 64, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      float* panel = panels + p * kPanelWidth * k;
      for (int64_t j = 0; j < kPanelWidth; ++j) {
        const int64_t row = p * kPanelWidth + j;
        for (int64_t i = 0; i < k; ++i)
          panel[i * kPanelWidth + j] = row < n ? w[row * k + i] : 0.0f;
      }
    }
  });
}

void matmul_panels(const float* x, int64_t rows, int64_t k, const float* panels, int64_t n,
                   float* out) {
  if (rows == 0 || n == 0) return;
  at::parallel_for(0, panel_count(n), 32, [&](int64_t begin, int64_t end) {
    panels_range(x, rows, k, panels, n, out, begin, end);
  });
}

void paged_decode_attention(const PagedAttentionArgs& args, std::span<const DecodeQuery> queries) {
  DSOCR_CHECK(attention_supported(args.heads, args.head_dim))
      << args.heads << " heads of " << args.head_dim;
  DSOCR_CHECK(args.kv_heads > 0 && args.heads % args.kv_heads == 0)
      << "heads " << args.heads << ", kv_heads " << args.kv_heads;
  DSOCR_CHECK(args.cache_dtype == args.dtype || args.cache_dtype == Dtype::kBFloat16)
      << "a float32 cache needs a float32 query";
  if (queries.empty()) return;
  int64_t max_len = 0;
  for (const DecodeQuery& q : queries) max_len = std::max(max_len, q.context_len);
  // A task is all heads of a query when there are enough queries to keep every thread busy,
  // else one head (batch 1 still uses every thread).
  const int64_t n = static_cast<int64_t>(queries.size());
  const int64_t heads_per_task = n >= at::get_num_threads() ? args.heads : 1;
  const int64_t tasks_per_query = args.heads / heads_per_task;
  at::parallel_for(0, n * tasks_per_query, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(
        static_cast<size_t>(heads_per_task * ((max_len + 7) / 8 * 8 + args.head_dim)));
    for (int64_t t = begin; t < end; ++t) {
      const DecodeQuery& q = queries[static_cast<size_t>(t / tasks_per_query)];
      if (q.context_len == 0) continue;
      const int64_t h0 = (t % tasks_per_query) * heads_per_task, h1 = h0 + heads_per_task;
      if (args.dtype == Dtype::kFloat32 && args.cache_dtype == Dtype::kBFloat16)
        attend_f32_bf16_cache(args, q, h0, h1, scratch.data());
      else if (args.dtype == Dtype::kFloat32)
        attend_f32(args, q, h0, h1, scratch.data());
      else
        attend_bf16(args, q, h0, h1, scratch.data());
    }
  });
}

}  // namespace dsocr::engine::cpu

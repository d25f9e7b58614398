// upfirdn2d for CPU, plus the schema of the library: upsample by zero insertion, pad (negative
// = crop), correlate with a 2-D FIR filter, keep every down-th sample, per channel.
//
//   out[oy, ox] = sum_{ky,kx} w[ky, kx] * U[oy*downy + ky - pady0, ox*downx + kx - padx0]
//   U[uy, ux]   = x[uy / upy, ux / upx] where both divide exactly, else 0
//   w           = gain * (flip ? f : f flipped in both axes)   (no flip = true convolution)
//
// Three paths, chosen per call:
//  - separable: taps that are an outer product col * row (all of StyleGAN's filters) run as a
//    horizontal then a vertical 1-D pass, fw + fh taps per output instead of fw * fh, plane by
//    plane with the intermediate rows in a small ring buffer that stays in L1. Neither pass
//    visits a row of U that zero insertion made, nor an output that `down` drops.
//  - padded: other taps with up == 1, a register-blocked 2-D correlation of a zero-bordered copy.
//  - general: everything else, row by row, skipping zero samples.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

namespace {

// The hot loops are compiled twice on x86-64 (gcc, clang): for AVX2 + FMA and for the baseline,
// picked at run time from the CPU's feature flags, so the build flags stay generic and the
// library still runs on older processors. (Not gcc's target_clones("arch=haswell"): its
// resolver asks whether the CPU *is* a Haswell, so every newer CPU got the baseline loops.)
#if defined(__GNUC__) && defined(__x86_64__)
#define NDA_AVX2 __attribute__((target("avx2,fma")))
inline bool cpu_has_avx2_fma() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
}
#else
#define NDA_AVX2
inline bool cpu_has_avx2_fma() { return false; }
#endif
#if defined(__GNUC__)
#define NDA_ALWAYS_INLINE inline __attribute__((always_inline))
#else
// A failed build leaves training/ops on the pure-PyTorch reference (kernels.py warns once).
#error "upfirdn2d.cpp needs gcc or clang: its loops use their vector extensions"
#endif

// Defines NAME_avx2 and NAME_base, both running the call given last, and NAME_pick() returning
// the one this CPU should run.
#define NDA_DISPATCHED(NAME, PARAMS, ...)                                             \
  NDA_AVX2 void NAME##_avx2 PARAMS { __VA_ARGS__; }                                   \
  void NAME##_base PARAMS { __VA_ARGS__; }                                            \
  auto NAME##_pick() { return cpu_has_avx2_fma() ? NAME##_avx2 : NAME##_base; }

// ---------------------------------------------------------------- taps

// Correlation taps w (fh x fw, row-major, in double) of one call: gain and flip applied.
std::vector<double> correlation_taps(const at::Tensor& f, bool flip, double gain) {
  const int64_t fh = f.size(0), fw = f.size(1);
  std::vector<double> w(fh * fw);
  const at::Tensor fc = f.device().is_cpu() ? f.contiguous() : f.to(at::kCPU).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, fc.scalar_type(), "nda_upfirdn2d_taps", [&] {
    const scalar_t* p = fc.data_ptr<scalar_t>();
    for (int64_t i = 0; i < fh; ++i)
      for (int64_t j = 0; j < fw; ++j) {
        // No flip = true convolution: correlate with the taps reversed in both axes.
        const int64_t src = flip ? i * fw + j : (fh - 1 - i) * fw + (fw - 1 - j);
        w[i * fw + j] = gain * double(p[src]);
      }
  });
  return w;
}

// Splits w into col (fh) x row (fw) when it is an outer product to within a few rounding errors
// of `eps` (the data's precision), so that the split changes no result beyond rounding.
bool split_rank_one(const std::vector<double>& w, int64_t fh, int64_t fw, double eps,
                    std::vector<double>& col, std::vector<double>& row) {
  int64_t r0 = 0, c0 = 0;
  double peak = 0;
  for (int64_t i = 0; i < fh; ++i)
    for (int64_t j = 0; j < fw; ++j)
      if (std::abs(w[i * fw + j]) > peak) { peak = std::abs(w[i * fw + j]); r0 = i; c0 = j; }
  if (peak == 0 || !std::isfinite(peak)) return false;
  col.assign(fh, 0);
  row.assign(fw, 0);
  for (int64_t i = 0; i < fh; ++i) col[i] = w[i * fw + c0];
  for (int64_t j = 0; j < fw; ++j) row[j] = w[r0 * fw + j] / w[r0 * fw + c0];
  const double tol = 4 * eps * peak;
  for (int64_t i = 0; i < fh; ++i)
    for (int64_t j = 0; j < fw; ++j)
      if (std::abs(w[i * fw + j] - col[i] * row[j]) > tol) return false;
  return true;
}

// ---------------------------------------------------------------- blocked weighted row sums

// Fixed-width vectors (gcc/clang vector extensions): the accumulators of a block stay in
// registers, and each dispatched variant lowers them to its own instruction set. The unaligned alias types
// load and store at any element address.
typedef float f32x8 __attribute__((vector_size(32)));
typedef float f32x8u __attribute__((vector_size(32), aligned(4), may_alias));
typedef double f64x4 __attribute__((vector_size(32)));
typedef double f64x4u __attribute__((vector_size(32), aligned(8), may_alias));

template <typename T> struct Lanes;
template <> struct Lanes<float> { using V = f32x8; using U = f32x8u; static constexpr int kN = 8; };
template <> struct Lanes<double> { using V = f64x4; using U = f64x4u; static constexpr int kN = 4; };

// Vectors per wide block: 4 (32 floats, a whole 32-pixel row; 16 doubles).
constexpr int kWideVectors = 4;

// Columns [c, c + NV*lanes) of dst = sum_t w[t] * base[off[t] + column]. NT > 0 fixes the
// number of terms at compile time (the loop unrolls), else it is nt. FULL stores the whole block
// (dst has room); otherwise only the first n columns.
template <typename T, int NV, int NT, bool FULL>
NDA_ALWAYS_INLINE void weighted_block(const T* base, const int64_t* off, const T* w, int64_t nt, int64_t c,
                                      T* dst, int64_t n) {
  using V = typename Lanes<T>::V;
  using U = typename Lanes<T>::U;
  constexpr int L = Lanes<T>::kN;
  const int64_t terms = NT > 0 ? NT : nt;
  V acc[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) acc[v] = V{};
#pragma GCC unroll 8
  for (int64_t t = 0; t < terms; ++t) {
    const T* s = base + off[t] + c;
    const T wt = w[t];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[v] += wt * *reinterpret_cast<const U*>(s + v * L);
  }
  if (FULL) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) *reinterpret_cast<U*>(dst + c + v * L) = acc[v];
  } else {
    T lanes[NV * L];
    std::memcpy(lanes, acc, sizeof(lanes));
    for (int64_t b = 0; b < n; ++b) dst[c + b] = lanes[b];
  }
}

// Columns that weighted_row reads and (with full stores) writes for n outputs: whole wide blocks,
// then whole single vectors.
template <typename T> int64_t covered_width(int64_t n) {
  constexpr int L = Lanes<T>::kN, WIDE = kWideVectors * L;
  return n / WIDE * WIDE + (n % WIDE + L - 1) / L * L;
}

// Rows ending in at most this many columns past whole vectors finish them one by one: rows of 33
// are common, and a vector block plus its partial store cost more than a column's few taps.
constexpr int64_t kScalarTail = 2;

// dst[0, n) = sum_t w[t] * base[off[t] + (0 .. n)]. Every term's run must be readable up to
// covered_width(n); with FULL, dst may be written up to there too (a scratch row), else exactly n.
template <typename T, int NT, bool FULL>
NDA_ALWAYS_INLINE void weighted_row(const T* base, const int64_t* off, const T* w, int64_t nt, T* dst, int64_t n) {
  constexpr int L = Lanes<T>::kN, WIDE = kWideVectors * L;
  const int64_t terms = NT > 0 ? NT : nt;
  int64_t c = 0;
  for (; c + WIDE <= n; c += WIDE) weighted_block<T, kWideVectors, NT, true>(base, off, w, nt, c, dst, WIDE);
  for (; c + L <= n; c += L) weighted_block<T, 1, NT, true>(base, off, w, nt, c, dst, L);
  if (n - c > kScalarTail) {
    weighted_block<T, 1, NT, FULL>(base, off, w, nt, c, dst, n - c);
    return;
  }
  for (; c < n; ++c) {
    T acc = T(0);
#pragma GCC unroll 8
    for (int64_t t = 0; t < terms; ++t) acc += w[t] * base[off[t] + c];
    dst[c] = acc;
  }
}

// ---------------------------------------------------------------- separable path

// How a row of x is laid into the horizontal pass's line buffers.
enum class LineMode { kCopy, kDeinterleave2, kScatter };

// Everything one call's planes share.
//  Horizontal pass: line position j (= U column j - padx0) lives in buffer j % downx at index
//  j / downx, so that tap kx reads a unit-stride run at hoff[kx] whatever up and down are.
//  Vertical pass: output row oy sums nv filtered input rows at offsets voff[oy * nv + t] in the
//  ring of filtered rows, weights vw[oy * nv + t]; rows with fewer real taps (at the borders)
//  are padded with a zero row of weight 0, so every row runs the same unrolled loop. Rows that
//  zero insertion made are never visited.
//  Schedule (the same for every plane): before output row oy, the horizontal pass filters input
//  rows hrow[k] for k < hend[oy], in increasing order, each once; hrow[k] is laid into line set
//  k % kLinesAhead just before entry k - kLinesAhead + 1 is filtered, a few rows before it is read.
template <typename T>
struct SeparablePlan {
  int64_t ih = 0, iw = 0, oh = 0, ow = 0, fw = 0, nv = 0;
  int64_t downx = 1, first = 0;  // first: line offset of input column ix_lo
  int64_t qlen = 0;              // samples per line buffer (downx buffers per line set)
  int64_t ix_lo = 0, ix_hi = 0;  // input columns that land in the line
  LineMode mode = LineMode::kCopy;
  std::vector<int64_t> dest;     // kScatter: line offset of input column ix_lo + i
  std::vector<T> hw;             // horizontal taps
  std::vector<int64_t> hoff;     // their offsets in a line set
  std::vector<int64_t> voff, hrow, hend;
  std::vector<T> vw;
  int64_t ring = 1, pitch = 0;   // ring rows (a power of two) + 1 zero row, each pitch wide
};

// Input rows are laid into line sets this many rows before the horizontal pass reads them: its
// wide loads straddle the copy's stores, and a load that overlaps a store still in flight waits
// for that store to reach the cache (measured: laying each row just before its pass made the
// 32 px filter ~1.7x slower). A power of two (a mask picks the set).
constexpr int64_t kLinesAhead = 4;
static_assert((kLinesAhead & (kLinesAhead - 1)) == 0, "kLinesAhead must be a power of two");

// Per-task scratch: kLinesAhead line sets and the ring of filtered rows plus the zero row.
template <typename T>
struct SeparableScratch {
  std::vector<T> q, ring;
  explicit SeparableScratch(const SeparablePlan<T>& p)
      : q(kLinesAhead * p.downx * p.qlen, T(0)), ring((p.ring + 1) * p.pitch, T(0)) {}
};

// The plan and scratch as plain pointers: the dispatched loops below cannot inline the standard
// library's accessors (gcc refuses to inline across differing target options), so they see none.
template <typename T>
struct SeparableView {
  int64_t ih, iw, oh, ow, fw, nv, qlen, ix_lo, ix_hi, first, ring_mask, pitch;
  int64_t lines, nh;  // samples per line set, entries in the schedule
  LineMode mode;
  const int64_t *dest, *hoff, *voff, *hrow, *hend;
  const T *hw, *vw;
  T *q, *ring;
};

template <typename T>
SeparableView<T> view_of(const SeparablePlan<T>& p, SeparableScratch<T>& s) {
  return SeparableView<T>{p.ih, p.iw, p.oh, p.ow, p.fw, p.nv, p.qlen, p.ix_lo, p.ix_hi, p.first,
                          p.ring - 1, p.pitch, p.downx * p.qlen, int64_t(p.hrow.size()), p.mode,
                          p.dest.data(), p.hoff.data(), p.voff.data(), p.hrow.data(), p.hend.data(),
                          p.hw.data(), p.vw.data(), s.q.data(), s.ring.data()};
}

inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
inline int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }

template <typename T>
void plan_horizontal(SeparablePlan<T>& p, const std::vector<double>& row, int64_t upx, int64_t downx,
                     int64_t padx0) {
  const int64_t fw = int64_t(row.size());
  p.fw = fw;
  p.downx = downx;
  const int64_t cover = covered_width<T>(p.ow);
  p.qlen = cover + (fw - 1) / downx + 1;
  for (int64_t kx = 0; kx < fw; ++kx) {
    p.hw.push_back(T(row[kx]));
    p.hoff.push_back((kx % downx) * p.qlen + kx / downx);
  }
  // Line positions 0 .. (ow - 1) * downx + fw - 1 are read; input column ix sits at ix*upx + padx0.
  const int64_t line = (p.ow - 1) * downx + fw;
  p.ix_lo = std::max<int64_t>(0, ceil_div(-padx0, upx));
  p.ix_hi = std::min<int64_t>(p.iw, floor_div(line - 1 - padx0, upx) + 1);
  if (p.ix_hi < p.ix_lo) p.ix_hi = p.ix_lo;
  p.first = p.ix_lo * upx + padx0;
  p.mode = upx == 1 && downx == 1 ? LineMode::kCopy
         : upx == 1 && downx == 2 ? LineMode::kDeinterleave2 : LineMode::kScatter;
  for (int64_t ix = p.ix_lo; p.mode == LineMode::kScatter && ix < p.ix_hi; ++ix) {
    const int64_t j = ix * upx + padx0;
    p.dest.push_back((j % downx) * p.qlen + j / downx);
  }
  p.pitch = cover;
}

template <typename T>
void plan_vertical(SeparablePlan<T>& p, const std::vector<double>& col, int64_t upy, int64_t downy,
                   int64_t pady0) {
  const int64_t fh = int64_t(col.size());
  // One output row reads at most ceil(fh / upy) <= fh consecutive input rows. A power of two, so
  // that a row's slot is a mask, not an integer division.
  while (p.ring < fh) p.ring *= 2;
  std::vector<std::vector<std::pair<int64_t, T>>> taps(p.oh);  // (input row, weight) per output row
  for (int64_t oy = 0; oy < p.oh; ++oy) {
    for (int64_t ky = 0; ky < fh; ++ky) {
      const int64_t u = oy * downy + ky - pady0;
      if (u < 0 || u % upy != 0 || u / upy >= p.ih) continue;
      taps[oy].emplace_back(u / upy, T(col[ky]));
    }
    p.nv = std::max<int64_t>(p.nv, int64_t(taps[oy].size()));
  }
  int64_t next = 0;  // first input row not filtered yet
  for (int64_t oy = 0; oy < p.oh; ++oy) {
    const auto& t = taps[oy];
    if (!t.empty()) {
      // Rows below the lowest one needed here are never needed again.
      for (next = std::max(next, t.front().first); next <= t.back().first; ++next) p.hrow.push_back(next);
    }
    p.hend.push_back(int64_t(p.hrow.size()));
    for (int64_t i = 0; i < p.nv; ++i) {
      const bool real = i < int64_t(t.size());
      p.voff.push_back((real ? (t[i].first & (p.ring - 1)) : p.ring) * p.pitch);
      p.vw.push_back(real ? t[i].second : T(0));
    }
  }
}

template <typename T>
SeparablePlan<T> plan_separable(const std::vector<double>& col, const std::vector<double>& row,
                                int64_t ih, int64_t iw, int64_t oh, int64_t ow, int64_t upx, int64_t upy,
                                int64_t downx, int64_t downy, int64_t padx0, int64_t pady0) {
  SeparablePlan<T> p;
  p.ih = ih; p.iw = iw; p.oh = oh; p.ow = ow;
  plan_horizontal(p, row, upx, downx, padx0);
  plan_vertical(p, col, upy, downy, pady0);
  return p;
}

// dst[0, n) = src[0, n) with vector moves (no library call); the last vector may overlap the
// one before it instead of a scalar tail.
template <typename T>
NDA_ALWAYS_INLINE void copy_run(const T* src, T* dst, int64_t n) {
  using U = typename Lanes<T>::U;
  constexpr int L = Lanes<T>::kN;
  if (n < L) {
    for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
    return;
  }
  for (int64_t i = 0; i + L < n; i += L) *reinterpret_cast<U*>(dst + i) = *reinterpret_cast<const U*>(src + i);
  *reinterpret_cast<U*>(dst + n - L) = *reinterpret_cast<const U*>(src + n - L);
}

// Even- and odd-indexed elements of the 2 * lanes values lo, hi (vector shuffles where the
// compiler has them, else the caller's scalar loop).
#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define NDA_HAS_SHUFFLE 1
#endif
#endif
#ifdef NDA_HAS_SHUFFLE
NDA_ALWAYS_INLINE void split_even_odd(f32x8 lo, f32x8 hi, f32x8& even, f32x8& odd) {
  even = __builtin_shufflevector(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14);
  odd = __builtin_shufflevector(lo, hi, 1, 3, 5, 7, 9, 11, 13, 15);
}
NDA_ALWAYS_INLINE void split_even_odd(f64x4 lo, f64x4 hi, f64x4& even, f64x4& odd) {
  even = __builtin_shufflevector(lo, hi, 0, 2, 4, 6);
  odd = __builtin_shufflevector(lo, hi, 1, 3, 5, 7);
}
#endif

// Deinterleaves src[0, n): src[2m] to a[m], src[2m + 1] to b[m].
template <typename T>
NDA_ALWAYS_INLINE void deinterleave_run(const T* src, T* a, T* b, int64_t n) {
  int64_t m = 0;
#ifdef NDA_HAS_SHUFFLE
  using V = typename Lanes<T>::V;
  using U = typename Lanes<T>::U;
  constexpr int L = Lanes<T>::kN;
  for (; 2 * (m + L) <= n; m += L) {
    V even, odd;
    split_even_odd(V(*reinterpret_cast<const U*>(src + 2 * m)), V(*reinterpret_cast<const U*>(src + 2 * m + L)),
                   even, odd);
    *reinterpret_cast<U*>(a + m) = even;
    *reinterpret_cast<U*>(b + m) = odd;
  }
#endif
  for (; 2 * m + 1 < n; ++m) {
    a[m] = src[2 * m];
    b[m] = src[2 * m + 1];
  }
  if (2 * m < n) a[m] = src[2 * m];
}

// Lays input row `src` into the zeroed line set q; only sample positions are written, the same
// ones for every row, so the zeros between and around them survive from row to row. MODE >= 0
// fixes the line mode at compile time, else it is v.mode.
template <typename T, int MODE>
NDA_ALWAYS_INLINE void fill_line(const SeparableView<T>& v, const T* src, T* q) {
  const int64_t n = v.ix_hi - v.ix_lo;
  const T* s = src + v.ix_lo;
  const LineMode mode = MODE >= 0 ? LineMode(MODE) : v.mode;
  if (mode == LineMode::kCopy) {
    copy_run(s, q + v.first, n);
  } else if (mode == LineMode::kDeinterleave2) {
    // Even line positions to the first buffer, odd ones to the second: s[0] lands on position
    // `first`, s[1] on the next one.
    const int64_t p = v.first & 1;
    deinterleave_run(s, q + p * v.qlen + v.first / 2, q + (1 - p) * v.qlen + (v.first + 1) / 2, n);
  } else {
    for (int64_t i = 0; i < n; ++i) q[v.dest[i]] = s[i];
  }
}

// Planes [p0, p1) of x (each ih x iw) into out (each oh x ow); NH / NV > 0 fix the horizontal /
// vertical tap counts at compile time, MODE >= 0 the line mode.
template <typename T, int NH, int NV, int MODE>
NDA_ALWAYS_INLINE void separable_planes(const SeparableView<T>& view, const T* x, T* out, int64_t p0, int64_t p1) {
  const SeparableView<T> v = view;  // a local copy, so its fields can live in registers
  const auto line_set = [&](int64_t k) { return v.q + (k & (kLinesAhead - 1)) * v.lines; };
  for (int64_t plane = p0; plane < p1; ++plane) {
    const T* xp = x + plane * v.ih * v.iw;
    T* op = out + plane * v.oh * v.ow;
    for (int64_t k = 0; k < kLinesAhead - 1 && k < v.nh; ++k)
      fill_line<T, MODE>(v, xp + v.hrow[k] * v.iw, line_set(k));
    int64_t k = 0;  // next entry of the schedule
    for (int64_t oy = 0; oy < v.oh; ++oy) {
      for (; k < v.hend[oy]; ++k) {
        const int64_t ahead = k + kLinesAhead - 1;
        if (ahead < v.nh) fill_line<T, MODE>(v, xp + v.hrow[ahead] * v.iw, line_set(ahead));
        T* filtered = v.ring + (v.hrow[k] & v.ring_mask) * v.pitch;
        weighted_row<T, NH, true>(line_set(k), v.hoff, v.hw, v.fw, filtered, v.ow);
      }
      weighted_row<T, NV, false>(v.ring, v.voff + oy * v.nv, v.vw + oy * v.nv, v.nv, op + oy * v.ow, v.ow);
    }
  }
}

// Compile-time variants for the calls of StyleGAN's 4-tap filter: filter only (4 rows per output,
// rows copied), x2 downsampling (4 rows, rows deinterleaved) and x2 upsampling (2 rows, rows
// zero-inserted); anything else runs with run-time counts and mode. Fixing them lets the loops
// unroll and keeps the mode's branches out of the row loop.
#define NDA_SEPARABLE_VARIANT(T, SUFFIX, NH, NV, MODE)                                                \
  NDA_DISPATCHED(separable_##SUFFIX, (const SeparableView<T>& v, const T* x, T* o, int64_t a, int64_t b), \
                 separable_planes<T, NH, NV, MODE>(v, x, o, a, b))
#define NDA_SEPARABLE_VARIANTS(T, SUFFIX)                                                             \
  NDA_SEPARABLE_VARIANT(T, SUFFIX##_filter, 4, 4, int(LineMode::kCopy))                              \
  NDA_SEPARABLE_VARIANT(T, SUFFIX##_down2, 4, 4, int(LineMode::kDeinterleave2))                      \
  NDA_SEPARABLE_VARIANT(T, SUFFIX##_up2, 4, 2, int(LineMode::kScatter))                              \
  NDA_SEPARABLE_VARIANT(T, SUFFIX##_any, 0, 0, -1)                                                   \
  inline void run_separable(const SeparableView<T>& v, const T* x, T* o, int64_t a, int64_t b) {      \
    const bool four = v.fw == 4 && v.nv == 4;                                                         \
    if (four && v.mode == LineMode::kCopy) return separable_##SUFFIX##_filter_pick()(v, x, o, a, b);  \
    if (four && v.mode == LineMode::kDeinterleave2) return separable_##SUFFIX##_down2_pick()(v, x, o, a, b); \
    if (v.fw == 4 && v.nv == 2 && v.mode == LineMode::kScatter)                                       \
      return separable_##SUFFIX##_up2_pick()(v, x, o, a, b);                                          \
    separable_##SUFFIX##_any_pick()(v, x, o, a, b);                                                  \
  }
NDA_SEPARABLE_VARIANTS(float, f32)
NDA_SEPARABLE_VARIANTS(double, f64)

// ---------------------------------------------------------------- padded 2-D path (up == 1)

// Output columns [col0, col1) of one plane from its zero-bordered input plane `pad` (pitch pw):
//   out[oy, ox] = sum w[ky, kx] * pad[oy*downy + ky, ox*downx + kx],
// BLOCK outputs at a time with their partial sums held in registers across all taps. The caller
// makes (col1 - col0) a multiple of BLOCK, or pads `pad` so that the overhang reads zeros.
template <typename T, int BLOCK, bool UNIT_DX>
NDA_ALWAYS_INLINE void correlate_columns(const T* pad, const T* w, T* dst, int64_t pw, int64_t dpitch,
                                         int64_t oh, int64_t ow, int64_t col0, int64_t col1,
                                         int64_t fh, int64_t fw, int64_t downx, int64_t downy) {
  for (int64_t oy = 0; oy < oh; ++oy) {
    for (int64_t c = col0; c < col1; c += BLOCK) {
      T acc[BLOCK];
      for (int b = 0; b < BLOCK; ++b) acc[b] = T(0);
      for (int64_t ky = 0; ky < fh; ++ky) {
        const T* prow = pad + (oy * downy + ky) * pw + c * downx;
        const T* wrow = w + ky * fw;
        for (int64_t kx = 0; kx < fw; ++kx) {
          const T wk = wrow[kx];
          const T* src = prow + kx;
          // Vectorise across the block (not across the few taps, gcc's own choice).
#pragma omp simd
          for (int b = 0; b < BLOCK; ++b) acc[b] += wk * src[UNIT_DX ? b : b * downx];
        }
      }
      const int64_t n = std::min<int64_t>(BLOCK, ow - c);
      T* o = dst + oy * dpitch + c;
      for (int64_t b = 0; b < n; ++b) o[b] = acc[b];
    }
  }
}

// Wide blocks for the bulk of a row, narrow ones for the rest (rows of 33 are common).
template <typename T> constexpr int wide_block() { return sizeof(T) == 4 ? 32 : 16; }
constexpr int kNarrowBlock = 8;

inline int64_t wide_columns(int64_t ow, int wide) { return ow / wide * wide; }
inline int64_t covered_columns(int64_t ow, int wide) {
  const int64_t main = wide_columns(ow, wide);
  return main + (ow - main + kNarrowBlock - 1) / kNarrowBlock * kNarrowBlock;
}

template <typename T, bool UNIT_DX>
NDA_ALWAYS_INLINE void correlate_plane(const T* pad, const T* w, T* dst, int64_t pw, int64_t dpitch,
                                       int64_t oh, int64_t ow, int64_t fh, int64_t fw, int64_t downx,
                                       int64_t downy) {
  constexpr int WIDE = wide_block<T>();
  const int64_t main = wide_columns(ow, WIDE);
  correlate_columns<T, WIDE, UNIT_DX>(pad, w, dst, pw, dpitch, oh, ow, 0, main, fh, fw, downx, downy);
  correlate_columns<T, kNarrowBlock, UNIT_DX>(pad, w, dst, pw, dpitch, oh, ow, main, ow, fh, fw, downx, downy);
}

#define NDA_DEFINE_PLANE(NAME, T, UNIT)                                                            \
  NDA_DISPATCHED(NAME, (const T* pad, const T* w, T* dst, int64_t pw, int64_t dpitch, int64_t oh,   \
                        int64_t ow, int64_t fh, int64_t fw, int64_t downx, int64_t downy),          \
                 correlate_plane<T, UNIT>(pad, w, dst, pw, dpitch, oh, ow, fh, fw, downx, downy))
NDA_DEFINE_PLANE(correlate_plane_f32_unit, float, true)
NDA_DEFINE_PLANE(correlate_plane_f32_strided, float, false)
NDA_DEFINE_PLANE(correlate_plane_f64_unit, double, true)
NDA_DEFINE_PLANE(correlate_plane_f64_strided, double, false)

template <typename T>
inline void correlate_plane_any(const T* pad, const T* w, T* dst, int64_t pw, int64_t dpitch, int64_t oh,
                                int64_t ow, int64_t fh, int64_t fw, int64_t downx, int64_t downy) {
  if (sizeof(T) == 4) {
    auto fn = downx == 1 ? correlate_plane_f32_unit_pick() : correlate_plane_f32_strided_pick();
    fn((const float*)pad, (const float*)w, (float*)dst, pw, dpitch, oh, ow, fh, fw, downx, downy);
  } else {
    auto fn = downx == 1 ? correlate_plane_f64_unit_pick() : correlate_plane_f64_strided_pick();
    fn((const double*)pad, (const double*)w, (double*)dst, pw, dpitch, oh, ow, fh, fw, downx, downy);
  }
}

// Copy each plane once into a zero-bordered buffer, after which every output is the same plain
// correlation.
template <typename T>
void correlate_padded_planes(const T* x, const T* w, T* out, int64_t planes, int64_t ih, int64_t iw,
                             int64_t oh, int64_t ow, int64_t fh, int64_t fw, int64_t downx,
                             int64_t downy, int64_t padx0, int64_t pady0) {
  // Padded plane: wide enough for whole blocks, tall enough for every output row.
  const int64_t cover = covered_columns(ow, wide_block<T>());
  const int64_t pw = (cover - 1) * downx + fw;
  const int64_t ph = (oh - 1) * downy + fh;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, oh * ow * fh * fw));
  at::parallel_for(0, planes, grain, [&](int64_t p0, int64_t p1) {
    std::vector<T> pad(ph * pw);
    for (int64_t p = p0; p < p1; ++p) {
      std::fill(pad.begin(), pad.end(), T(0));
      const T* src = x + p * ih * iw;
      // Input pixel (iy, ix) sits at (iy + pady0, ix + padx0); negative padding crops.
      for (int64_t iy = std::max<int64_t>(0, -pady0); iy < ih && iy + pady0 < ph; ++iy) {
        const int64_t ix0 = std::max<int64_t>(0, -padx0);
        const int64_t ix1 = std::min<int64_t>(iw, pw - padx0);
        if (ix1 > ix0) std::copy(src + iy * iw + ix0, src + iy * iw + ix1, pad.data() + (iy + pady0) * pw + ix0 + padx0);
      }
      correlate_plane_any(pad.data(), w, out + p * oh * ow, pw, ow, oh, ow, fh, fw, downx, downy);
    }
  });
}

// ---------------------------------------------------------------- general path

// For one filter column kx: the output columns that read a real input sample form an arithmetic
// progression ox = ox0 + j*ostep, reading ix = ix0 + j*istep, j < count.
struct Run {
  int64_t ox0, ostep, ix0, istep, count;
};

Run column_run(int64_t k, int64_t up, int64_t down, int64_t pad0, int64_t in_size, int64_t out_size) {
  Run r{0, 1, 0, 1, 0};
  const int64_t period = up / std::gcd(up, down);  // ox steps between two hits
  // First ox whose sample lies at or after U's start, then at most one period to the first hit
  // (none at all when gcd(up, down) does not divide pad0 - k).
  const int64_t lo = pad0 - k > 0 ? (pad0 - k + down - 1) / down : 0;
  for (int64_t ox = lo; ox < out_size && ox < lo + period; ++ox) {
    const int64_t u = ox * down + k - pad0;
    if (u % up != 0) continue;
    const int64_t ix = u / up;
    if (ix >= in_size) break;
    r.ox0 = ox;
    r.ostep = period;
    r.ix0 = ix;
    r.istep = period * down / up;
    const int64_t by_out = (out_size - 1 - ox) / period;
    const int64_t by_in = (in_size - 1 - ix) / r.istep;
    r.count = std::min(by_out, by_in) + 1;
    return r;
  }
  return r;
}

// Each output row is accumulated tap by tap into a row buffer, so the innermost loop is a
// unit-stride multiply-add the compiler vectorises; the zero samples of U are never visited.
template <typename T>
void upfirdn2d_loop(const T* x, const T* w, T* out, int64_t planes, int64_t ih, int64_t iw,
                    int64_t oh, int64_t ow, int64_t fh, int64_t fw, int64_t upx, int64_t upy,
                    int64_t downx, int64_t downy, int64_t padx0, int64_t pady0) {
  std::vector<Run> runs(fw);
  for (int64_t kx = 0; kx < fw; ++kx) runs[kx] = column_run(kx, upx, downx, padx0, iw, ow);
  const int64_t rows = planes * oh;
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, ow * fh * fw / (upx * upy)));
  at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    std::vector<T> acc(ow);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t p = r / oh, oy = r % oh;
      std::fill(acc.begin(), acc.end(), T(0));
      for (int64_t ky = 0; ky < fh; ++ky) {
        const int64_t uy = oy * downy + ky - pady0;
        if (uy < 0 || uy % upy != 0) continue;
        const int64_t iy = uy / upy;
        if (iy >= ih) continue;
        const T* row = x + (p * ih + iy) * iw;
        for (int64_t kx = 0; kx < fw; ++kx) {
          const T wk = w[ky * fw + kx];
          const Run& q = runs[kx];
          if (wk == T(0) || q.count == 0) continue;
          T* a = acc.data() + q.ox0;
          const T* s = row + q.ix0;
          if (q.ostep == 1 && q.istep == 1) {
            for (int64_t j = 0; j < q.count; ++j) a[j] += wk * s[j];
          } else if (q.ostep == 1) {
            const int64_t is = q.istep;
            for (int64_t j = 0; j < q.count; ++j) a[j] += wk * s[j * is];
          } else {
            const int64_t os = q.ostep, is = q.istep;
            for (int64_t j = 0; j < q.count; ++j) a[j * os] += wk * s[j * is];
          }
        }
      }
      T* o = out + r * ow;
      for (int64_t ox = 0; ox < ow; ++ox) o[ox] = acc[ox];
    }
  });
}

// ---------------------------------------------------------------- the op

struct Geometry {
  int64_t planes, ih, iw, oh, ow, fh, fw;
};

Geometry check_geometry(const at::Tensor& x, const at::Tensor& f, int64_t upx, int64_t upy, int64_t downx,
                        int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1) {
  TORCH_CHECK(x.dim() == 4, "upfirdn2d: x must be [N, C, H, W]");
  TORCH_CHECK(f.dim() == 2 && f.size(0) > 0 && f.size(1) > 0, "upfirdn2d: f must be a non-empty 2-D filter");
  TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "upfirdn2d: up and down must be >= 1");
  Geometry g{x.size(0) * x.size(1), x.size(2), x.size(3), 0, 0, f.size(0), f.size(1)};
  TORCH_CHECK(g.ih * upy + pady0 + pady1 >= g.fh && g.iw * upx + padx0 + padx1 >= g.fw,
              "upfirdn2d: padded input is smaller than the filter");
  g.oh = (g.ih * upy + pady0 + pady1 - g.fh) / downy + 1;
  g.ow = (g.iw * upx + padx0 + padx1 - g.fw) / downx + 1;
  return g;
}

enum class Path { kSeparable, kPadded, kGeneral };

Path choose_path(const std::vector<double>& w, const Geometry& g, int64_t upx, int64_t upy, double eps,
                 std::vector<double>& col, std::vector<double>& row) {
  // A 1-tap axis gains nothing from the split; the 2-D paths handle it as well.
  if (g.fh > 1 && g.fw > 1 && split_rank_one(w, g.fh, g.fw, eps, col, row)) return Path::kSeparable;
  return upx == 1 && upy == 1 ? Path::kPadded : Path::kGeneral;
}

at::Tensor upfirdn2d_cpu(const at::Tensor& x_in, const at::Tensor& f, int64_t upx, int64_t upy,
                         int64_t downx, int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0,
                         int64_t pady1, bool flip, double gain) {
  const Geometry g = check_geometry(x_in, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1);
  const at::Tensor x = x_in.contiguous();
  at::Tensor out = at::empty({x.size(0), x.size(1), g.oh, g.ow}, x.options());
  if (out.numel() == 0) return out;
  const std::vector<double> w = correlation_taps(f, flip, gain);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "nda_upfirdn2d_cpu", [&] {
    std::vector<double> col, row;
    const double eps = std::numeric_limits<scalar_t>::epsilon();
    const Path path = choose_path(w, g, upx, upy, eps, col, row);
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    if (path == Path::kSeparable) {
      const SeparablePlan<scalar_t> plan = plan_separable<scalar_t>(col, row, g.ih, g.iw, g.oh, g.ow, upx, upy,
                                                                    downx, downy, padx0, pady0);
      // Whole planes per task; tiny calls stay on the calling thread.
      const int64_t work = g.oh * g.ow * (g.fh + g.fw);
      const int64_t grain = std::max<int64_t>(1, (1 << 18) / std::max<int64_t>(1, work));
      at::parallel_for(0, g.planes, grain, [&](int64_t p0, int64_t p1) {
        SeparableScratch<scalar_t> scratch(plan);
        run_separable(view_of(plan, scratch), xp, op, p0, p1);
      });
      return;
    }
    const std::vector<scalar_t> wt(w.begin(), w.end());
    if (path == Path::kPadded) {
      correlate_padded_planes<scalar_t>(xp, wt.data(), op, g.planes, g.ih, g.iw, g.oh, g.ow, g.fh, g.fw, downx,
                                        downy, padx0, pady0);
    } else {
      upfirdn2d_loop<scalar_t>(xp, wt.data(), op, g.planes, g.ih, g.iw, g.oh, g.ow, g.fh, g.fw, upx, upy, downx,
                               downy, padx0, pady0);
    }
  });
  return out;
}

// Which CPU path a call would take ("separable", "padded" or "general"): lets the tests check
// that the fast path really serves the calls it is meant for.
std::string upfirdn2d_cpu_path(const at::Tensor& x, const at::Tensor& f, int64_t upx, int64_t upy,
                               int64_t downx, int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0,
                               int64_t pady1, bool flip, double gain) {
  const Geometry g = check_geometry(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1);
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "upfirdn2d_cpu_path: x must be float32 or float64");
  const double eps = x.scalar_type() == at::kFloat ? std::numeric_limits<float>::epsilon()
                                                   : std::numeric_limits<double>::epsilon();
  std::vector<double> col, row;
  switch (choose_path(correlation_taps(f, flip, gain), g, upx, upy, eps, col, row)) {
    case Path::kSeparable: return "separable";
    case Path::kPadded: return "padded";
    default: return "general";
  }
}

}  // namespace

TORCH_LIBRARY(nda_upfirdn2d, m) {
  m.def("upfirdn2d(Tensor x, Tensor f, int upx, int upy, int downx, int downy, int padx0, "
        "int padx1, int pady0, int pady1, bool flip, float gain) -> Tensor");
  m.def("cpu_path(Tensor x, Tensor f, int upx, int upy, int downx, int downy, int padx0, "
        "int padx1, int pady0, int pady1, bool flip, float gain) -> str");
}

TORCH_LIBRARY_IMPL(nda_upfirdn2d, CPU, m) {
  m.impl("upfirdn2d", &upfirdn2d_cpu);
  m.impl("cpu_path", &upfirdn2d_cpu_path);
}

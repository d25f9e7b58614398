// upfirdn2d for CPU, plus the schema of the library: upsample by zero insertion, pad (negative
// = crop), correlate with a 2-D FIR filter, keep every down-th sample, per channel.
//
//   out[oy, ox] = sum_{ky,kx} w[ky, kx] * U[oy*downy + ky - pady0, ox*downx + kx - padx0]
//   U[uy, ux]   = x[uy / upy, ux / upx] where both divide exactly, else 0
//   w           = gain * (flip ? f : f flipped in both axes)   (no flip = true convolution)
//
// Each output row is accumulated tap by tap into a row buffer, so the innermost loop is a
// unit-stride multiply-add the compiler vectorises; the zero samples of U are never visited.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace {

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

template <typename T, typename Acc>
void upfirdn2d_loop(const T* x, const Acc* w, T* out, int64_t planes, int64_t ih, int64_t iw,
                    int64_t oh, int64_t ow, int64_t fh, int64_t fw, int64_t upx, int64_t upy,
                    int64_t downx, int64_t downy, int64_t padx0, int64_t pady0) {
  std::vector<Run> runs(fw);
  for (int64_t kx = 0; kx < fw; ++kx) runs[kx] = column_run(kx, upx, downx, padx0, iw, ow);
  const int64_t rows = planes * oh;
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, ow * fh * fw / (upx * upy)));
  at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    std::vector<Acc> acc(ow);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t p = r / oh, oy = r % oh;
      std::fill(acc.begin(), acc.end(), Acc(0));
      for (int64_t ky = 0; ky < fh; ++ky) {
        const int64_t uy = oy * downy + ky - pady0;
        if (uy < 0 || uy % upy != 0) continue;
        const int64_t iy = uy / upy;
        if (iy >= ih) continue;
        const T* row = x + (p * ih + iy) * iw;
        for (int64_t kx = 0; kx < fw; ++kx) {
          const Acc wk = w[ky * fw + kx];
          const Run& q = runs[kx];
          if (wk == Acc(0) || q.count == 0) continue;
          Acc* a = acc.data() + q.ox0;
          const T* s = row + q.ix0;
          if (q.ostep == 1 && q.istep == 1) {
            for (int64_t j = 0; j < q.count; ++j) a[j] += wk * Acc(s[j]);
          } else if (q.ostep == 1) {
            const int64_t is = q.istep;
            for (int64_t j = 0; j < q.count; ++j) a[j] += wk * Acc(s[j * is]);
          } else {
            const int64_t os = q.ostep, is = q.istep;
            for (int64_t j = 0; j < q.count; ++j) a[j * os] += wk * Acc(s[j * is]);
          }
        }
      }
      T* o = out + r * ow;
      for (int64_t ox = 0; ox < ow; ++ox) o[ox] = T(acc[ox]);
    }
  });
}

// The hot loop is compiled twice where gcc supports function multiversioning (x86-64 Linux):
// for AVX2 + FMA and for the baseline, picked at load time by the CPU, so the build flags can
// stay generic and the library still runs on older processors.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define NDA_CPU_CLONES __attribute__((target_clones("arch=haswell", "default")))
#define NDA_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define NDA_CPU_CLONES
#define NDA_ALWAYS_INLINE inline
#endif

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

#define NDA_DEFINE_PLANE(NAME, T, UNIT)                                                              \
  NDA_CPU_CLONES void NAME(const T* pad, const T* w, T* dst, int64_t pw, int64_t dpitch, int64_t oh,  \
                           int64_t ow, int64_t fh, int64_t fw, int64_t downx, int64_t downy) {       \
    correlate_plane<T, UNIT>(pad, w, dst, pw, dpitch, oh, ow, fh, fw, downx, downy);                 \
  }
NDA_DEFINE_PLANE(correlate_plane_f32_unit, float, true)
NDA_DEFINE_PLANE(correlate_plane_f32_strided, float, false)
NDA_DEFINE_PLANE(correlate_plane_f64_unit, double, true)
NDA_DEFINE_PLANE(correlate_plane_f64_strided, double, false)

template <typename T>
inline void correlate_plane_any(const T* pad, const T* w, T* dst, int64_t pw, int64_t dpitch, int64_t oh,
                                int64_t ow, int64_t fh, int64_t fw, int64_t downx, int64_t downy) {
  if (sizeof(T) == 4) {
    auto fn = downx == 1 ? correlate_plane_f32_unit : correlate_plane_f32_strided;
    fn((const float*)pad, (const float*)w, (float*)dst, pw, dpitch, oh, ow, fh, fw, downx, downy);
  } else {
    auto fn = downx == 1 ? correlate_plane_f64_unit : correlate_plane_f64_strided;
    fn((const double*)pad, (const double*)w, (double*)dst, pw, dpitch, oh, ow, fh, fw, downx, downy);
  }
}

// If the taps are an outer product col * row (StyleGAN's filters are), returns the factors:
// the zero-inserting (up > 1) path then runs two 1-D passes, fw + fh taps instead of fw * fh.
template <typename T>
bool rank_one_factors(const T* w, int64_t fh, int64_t fw, std::vector<T>& col, std::vector<T>& row) {
  int64_t r0 = 0, c0 = 0;
  T peak = T(0);
  for (int64_t i = 0; i < fh; ++i)
    for (int64_t j = 0; j < fw; ++j)
      if (std::abs(w[i * fw + j]) > peak) { peak = std::abs(w[i * fw + j]); r0 = i; c0 = j; }
  if (peak == T(0)) return false;
  col.resize(fh);
  row.resize(fw);
  for (int64_t i = 0; i < fh; ++i) col[i] = w[i * fw + c0];
  for (int64_t j = 0; j < fw; ++j) row[j] = w[r0 * fw + j] / w[r0 * fw + c0];
  const T tol = peak * T(sizeof(T) == 4 ? 1e-6 : 1e-13);
  for (int64_t i = 0; i < fh; ++i)
    for (int64_t j = 0; j < fw; ++j)
      if (std::abs(w[i * fw + j] - col[i] * row[j]) > tol) return false;
  return true;
}

// Fast path for up == 1 (the filters around StyleGAN's convolutions): copy each plane once into
// a zero-bordered buffer, after which every output is the same plain correlation. (Two 1-D passes
// for rank-one taps measured slower here: the blocked 2-D loop is bound by memory, not by FMAs.)
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

at::Tensor upfirdn2d_cpu(const at::Tensor& x_in, const at::Tensor& f, int64_t upx, int64_t upy,
                         int64_t downx, int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0,
                         int64_t pady1, bool flip, double gain) {
  TORCH_CHECK(x_in.dim() == 4, "upfirdn2d: x must be [N, C, H, W]");
  TORCH_CHECK(f.dim() == 2 && f.size(0) > 0 && f.size(1) > 0, "upfirdn2d: f must be a non-empty 2-D filter");
  TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "upfirdn2d: up and down must be >= 1");
  const at::Tensor x = x_in.contiguous();
  const int64_t n = x.size(0), c = x.size(1), ih = x.size(2), iw = x.size(3);
  const int64_t fh = f.size(0), fw = f.size(1);
  TORCH_CHECK(ih * upy + pady0 + pady1 >= fh && iw * upx + padx0 + padx1 >= fw,
              "upfirdn2d: padded input is smaller than the filter");
  const int64_t oh = (ih * upy + pady0 + pady1 - fh) / downy + 1;
  const int64_t ow = (iw * upx + padx0 + padx1 - fw) / downx + 1;
  at::Tensor out = at::empty({n, c, oh, ow}, x.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "nda_upfirdn2d_cpu", [&] {
    // Taps flipped for true convolution and scaled by the gain.
    at::Tensor wt = f.to(at::kCPU, x.scalar_type()).contiguous();
    if (!flip) wt = wt.flip({0, 1});
    wt = (wt * gain).contiguous();
    const scalar_t* w = wt.data_ptr<scalar_t>();
    std::vector<scalar_t> col, row;
    if (upx == 1 && upy == 1) {
      correlate_padded_planes<scalar_t>(x.data_ptr<scalar_t>(), w, out.data_ptr<scalar_t>(), n * c, ih, iw, oh,
                                        ow, fh, fw, downx, downy, padx0, pady0);
    } else if (fh > 1 && fw > 1 && rank_one_factors(w, fh, fw, col, row)) {
      // Horizontal pass (x resampling) into [planes, ih, ow], then vertical pass.
      at::Tensor tmp = at::empty({n * c, ih, ow}, x.options());
      upfirdn2d_loop<scalar_t, scalar_t>(x.data_ptr<scalar_t>(), row.data(), tmp.data_ptr<scalar_t>(),
                                         n * c, ih, iw, ih, ow, 1, fw, upx, 1, downx, 1, padx0, 0);
      upfirdn2d_loop<scalar_t, scalar_t>(tmp.data_ptr<scalar_t>(), col.data(), out.data_ptr<scalar_t>(),
                                         n * c, ih, ow, oh, ow, fh, 1, 1, upy, 1, downy, 0, pady0);
    } else {
      upfirdn2d_loop<scalar_t, scalar_t>(x.data_ptr<scalar_t>(), w, out.data_ptr<scalar_t>(), n * c,
                                         ih, iw, oh, ow, fh, fw, upx, upy, downx, downy, padx0, pady0);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(nda_upfirdn2d, m) {
  m.def("upfirdn2d(Tensor x, Tensor f, int upx, int upy, int downx, int downy, int padx0, "
        "int padx1, int pady0, int pady1, bool flip, float gain) -> Tensor");
}

TORCH_LIBRARY_IMPL(nda_upfirdn2d, CPU, m) { m.impl("upfirdn2d", &upfirdn2d_cpu); }

// CPU kernel that applies a TilePlan (see nda_stylegan/negatives/plan.py for the semantics and
// nda_stylegan/ops/tile_ref.py for the pure-PyTorch reference it must match).
//
// One pass over memory: output rows are gathered (tiles + rotation), blended, boxed and
// checked in bands of up to 16 rows while the band is still in L1 (or, for whole unrotated
// images, in registers), so the flags cost no extra pass. Once a row of an image differs from
// its source, later rows only check finiteness and never read the source row. The only other
// read is the box mean of BOX_FILL images, over the box alone.
// Speed: tiles are affine runs (no per-pixel index math unless clamping bends them), whole-
// width unrotated tiles are copied as one run per band of rows, quarter-turned tiles (a source
// column per output row) are copied by 4x4 transposes over 16-row bands, and the row loop is
// also compiled for AVX2 and picked at run time.
// This file also defines the op schema; tile_cuda.cpp adds the CUDA implementation.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define NDA_HAVE_X86_DISPATCH 1
#define NDA_ALWAYS_INLINE __attribute__((always_inline))
#else
#define NDA_HAVE_X86_DISPATCH 0
#define NDA_ALWAYS_INLINE
#endif

namespace {

constexpr int64_t kBoxFill = 1;
constexpr int64_t kBoxPaste = 2;
constexpr int32_t kFlagChanged = 1;
constexpr int32_t kFlagNonFinite = 2;

// Python's floor division and modulo (the reference uses them on possibly negative tile ids).
NDA_ALWAYS_INLINE inline int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

NDA_ALWAYS_INLINE inline int64_t clamp64(int64_t v, int64_t lo, int64_t hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

template <typename scalar_t> struct OpMath { using type = float; };
template <> struct OpMath<double> { using type = double; };

// The plan's pointers. Its contents are checked by plan_is_valid (TilePlan.check's conditions).
struct Plan {
  const int64_t* grid;
  const int64_t* tiles;
  int64_t n_tiles;  // T: entries per image
  const int64_t* box;
  const int64_t* blend_src;
  const float* blend_w;
};

// A bad plan is reported, not thrown: every image's flags get FLAG_BAD_PLAN (4) and apply_plan
// raises TilePlan.check's ValueError in Python. No exception leaves this library for an error
// a user can make: on one GPU machine (torch 2.11, g++ 13) any C++ exception thrown from it
// crashed the process while unwinding (docs/gpu-checks/README.md, run 3).
constexpr int32_t kFlagBadPlan = 4;

bool plan_is_valid(const Plan& p, int64_t n, int64_t h, int64_t w) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t gh = p.grid[2 * i], gw = p.grid[2 * i + 1];
    if (gh < 1 || gw < 1 || gh > h || gw > w || gh * gw > p.n_tiles) return false;  // product once in range
    const int64_t mode = p.box[6 * i + 4], box_src = p.box[6 * i + 5];
    if (p.blend_src[i] < 0 || p.blend_src[i] >= n || box_src < 0 || box_src >= n || mode < 0 || mode > 2)
      return false;
  }
  for (int64_t i = 0; i < n * p.n_tiles; ++i) {
    const int64_t src = p.tiles[3 * i], rot = p.tiles[3 * i + 2];
    if (src < 0 || src >= n || rot < 0 || rot > 3) return false;
  }
  return true;
}

// Box rows/columns clamped into the image: the reference's "inside" mask, as ranges.
struct Box {
  int64_t y0, y1, x0, x1, mode, src;
};

NDA_ALWAYS_INLINE inline Box clamped_box(const int64_t* b, int64_t h, int64_t w) {
  Box r;
  r.y0 = clamp64(b[0], 0, h);
  r.y1 = clamp64(b[1], 0, h);
  r.x0 = clamp64(b[2], 0, w);
  r.x1 = clamp64(b[3], 0, w);
  r.mode = b[4];
  r.src = b[5];
  if (r.y1 <= r.y0 || r.x1 <= r.x0) r.y1 = r.y0 = r.x1 = r.x0 = 0;  // empty
  return r;
}

// Per-channel mean of one image over its box (BOX_FILL), into fill[0 .. C). Computed by the
// thread that first needs it (a second parallel region would cost a second wait for every
// thread, which on a busy machine is a scheduler tick); an image split between two threads
// has it computed twice, the same way, so both get the same value.
template <typename scalar_t>
void box_mean(const scalar_t* image, const Box& b, int64_t c, int64_t h, int64_t w, scalar_t* fill) {
  using opmath_t = typename OpMath<scalar_t>::type;
  const int64_t area = std::max<int64_t>((b.y1 - b.y0) * (b.x1 - b.x0), 1);
  for (int64_t ch = 0; ch < c; ++ch) {
    const scalar_t* plane = image + ch * h * w;
    // double: at least as accurate as the reference's float32 cascade sum. Eight independent
    // partial sums, so the adds do not wait on each other (and vectorise).
    double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t y = b.y0; y < b.y1; ++y) {
      const scalar_t* row = plane + y * w;
      int64_t x = b.x0;
      for (; x + 8 <= b.x1; x += 8)
        for (int k = 0; k < 8; ++k) part[k] += static_cast<double>(row[x + k]);
      for (; x < b.x1; ++x) part[0] += static_cast<double>(row[x]);
    }
    const double sum = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
    fill[ch] = static_cast<scalar_t>(static_cast<opmath_t>(sum) / static_cast<opmath_t>(area));
  }
}

// Where one output tile reads from. Source offsets (image * C*H*W + y * W + x) are affine in
// the tile's local (ly, lx): start + ly * dy + lx * dx, unless clamping bends them (a rotated
// non-square tile, or a tile id outside the grid); such tiles take the per-pixel path.
struct TileSource {
  int64_t img_off, si, sj, rot;  // as in the reference
  int64_t size_y, size_x;        // the output tile's size
  bool affine;
  int64_t start, dy, dx;
};

inline bool in_range(int64_t lo, int64_t hi, int64_t size) { return lo >= 0 && hi < size; }

TileSource tile_source(const Plan& p, int64_t n, int64_t ti, int64_t tj, int64_t c, int64_t h, int64_t w) {
  const int64_t gh = p.grid[2 * n], gw = p.grid[2 * n + 1];
  const int64_t th = h / gh, tw = w / gw;
  const int64_t* e = p.tiles + 3 * (n * p.n_tiles + ti * gw + tj);
  TileSource t;
  t.img_off = e[0] * c * h * w;
  t.si = floor_div(e[1], gw);
  t.sj = e[1] - t.si * gw;
  t.rot = e[2];
  t.size_y = ti == gh - 1 ? h - (gh - 1) * th : th;
  t.size_x = tj == gw - 1 ? w - (gw - 1) * tw : tw;
  const int64_t y0 = t.si * th, x0 = t.sj * tw;
  // Rotations 1 and 3 swap which output axis walks which source axis.
  const int64_t ext_y = (t.rot & 1) ? t.size_x : t.size_y, ext_x = (t.rot & 1) ? t.size_y : t.size_x;
  t.affine = in_range(y0, y0 + ext_y - 1, h) && in_range(x0, x0 + ext_x - 1, w);
  switch (t.rot) {
    case 0: t.start = y0 * w + x0; t.dy = w; t.dx = 1; break;
    case 1: t.start = y0 * w + x0 + t.size_y - 1; t.dy = -1; t.dx = w; break;
    case 2: t.start = (y0 + t.size_y - 1) * w + x0 + t.size_x - 1; t.dy = -w; t.dx = -1; break;
    default: t.start = (y0 + t.size_x - 1) * w + x0; t.dy = 1; t.dx = -w; break;
  }
  t.start += t.img_off;
  return t;
}

// Source offset of local pixel (ly, lx) with the reference's clamping (the slow, exact path).
NDA_ALWAYS_INLINE inline int64_t clamped_source(const TileSource& t, int64_t ly, int64_t lx, int64_t th, int64_t tw, int64_t h,
                              int64_t w) {
  int64_t sy, sx;
  switch (t.rot) {
    case 0: sy = ly; sx = lx; break;
    case 1: sy = lx; sx = t.size_y - 1 - ly; break;
    case 2: sy = t.size_y - 1 - ly; sx = t.size_x - 1 - lx; break;
    default: sy = t.size_x - 1 - lx; sx = ly; break;
  }
  return t.img_off + clamp64(t.si * th + sy, 0, h - 1) * w + clamp64(t.sj * tw + sx, 0, w - 1);
}

template <typename scalar_t>
NDA_ALWAYS_INLINE inline bool not_finite(scalar_t v) {
  // |v| <= max is false for NaN and +-inf; this form vectorises, std::isfinite may not.
  using opmath_t = typename OpMath<scalar_t>::type;
  const opmath_t f = static_cast<opmath_t>(v);
  return !(std::abs(f) <= std::numeric_limits<opmath_t>::max());
}

// Copy `size` values from `src` walking `step` elements at a time.
template <typename scalar_t>
NDA_ALWAYS_INLINE inline void gather_run(scalar_t* __restrict__ o, const scalar_t* __restrict__ src, int64_t size, int64_t step) {
  if (step == 1) {
    std::memcpy(o, src, sizeof(scalar_t) * size);
  } else if (step == -1) {
    for (int64_t x = 0; x < size; ++x) o[x] = src[-x];
  } else {
    for (int64_t x = 0; x < size; ++x) o[x] = src[x * step];
  }
}

// The same copy fused with the flag checks against the source image's row `own` (used when
// nothing else touches the row, so each value is checked while it is in a register).
// kCompare false: the image is already known to differ, so only finiteness is checked and
// the source image's row is not even read.
template <bool kCompare, typename scalar_t>
NDA_ALWAYS_INLINE inline void gather_run_checked(scalar_t* __restrict__ o, const scalar_t* __restrict__ src,
                                                 int64_t size, int64_t step, const scalar_t* __restrict__ own,
                                                 int& changed, int& nonfinite) {
  using opmath_t = typename OpMath<scalar_t>::type;
  int chg = 0, nf = 0;
  if (step == 1) {
    for (int64_t x = 0; x < size; ++x) {
      const scalar_t v = src[x];
      o[x] = v;
      if (kCompare) chg |= static_cast<opmath_t>(v) != static_cast<opmath_t>(own[x]);
      nf |= not_finite(v);
    }
  } else {
    for (int64_t x = 0; x < size; ++x) {
      const scalar_t v = src[x * step];
      o[x] = v;
      if (kCompare) chg |= static_cast<opmath_t>(v) != static_cast<opmath_t>(own[x]);
      nf |= not_finite(v);
    }
  }
  changed |= chg;
  nonfinite |= nf;
}

// w * a + (1 - w) * b over a contiguous run, fused with the flag checks (rounded after each
// operation in the arithmetic type, as the reference computes it).
template <bool kCompare, typename scalar_t, typename opmath_t>
NDA_ALWAYS_INLINE inline void blend_run_checked(scalar_t* __restrict__ o, const scalar_t* __restrict__ a,
                                                const scalar_t* __restrict__ b, int64_t size, opmath_t wgt,
                                                const scalar_t* __restrict__ own, int& changed, int& nonfinite) {
  int chg = 0, nf = 0;
  const opmath_t rest = opmath_t(1) - wgt;
  for (int64_t x = 0; x < size; ++x) {
    const scalar_t v = static_cast<scalar_t>(wgt * static_cast<opmath_t>(a[x]) + rest * static_cast<opmath_t>(b[x]));
    o[x] = v;
    if (kCompare) chg |= static_cast<opmath_t>(v) != static_cast<opmath_t>(own[x]);
    nf |= not_finite(v);
  }
  changed |= chg;
  nonfinite |= nf;
}

// A quarter-turned tile read `rows` output rows at a time: o[k * o_stride + x] =
// src[k * kDy + x * dx] with kDy = +-1, dx = +-W. One output row alone would read a source
// column (one cache line per value); a band of rows reads each source line's `rows` values
// together, and its output rows stay in L1 while they are filled column by column.
template <int64_t kDy, typename scalar_t>
NDA_ALWAYS_INLINE inline void gather_turned_band(scalar_t* __restrict__ o, int64_t o_stride,
                                                 const scalar_t* __restrict__ src, int64_t rows, int64_t cols,
                                                 int64_t dx) {
  for (int64_t x = 0; x < cols; ++x) {
    const scalar_t* s = src + x * dx;
    for (int64_t k = 0; k < rows; ++k) o[k * o_stride + x] = s[k * kDy];
  }
}

#if defined(__SSE__)
// float32: the same copy as 4x4 register transposes (SSE is part of every x86-64 CPU): four
// values per load and store instead of one; the edges left over take the loop above.
template <int64_t kDy>
NDA_ALWAYS_INLINE inline void gather_turned_band(float* __restrict__ o, int64_t o_stride,
                                                 const float* __restrict__ src, int64_t rows, int64_t cols,
                                                 int64_t dx) {
  const int64_t rows4 = rows & ~int64_t(3), cols4 = cols & ~int64_t(3);
  // Source row x holds k = 0..3 at s + x*dx + (0..3) when kDy = 1, and k = 3..0 at
  // s + x*dx + (-3..0) when kDy = -1; after the transpose, register j holds one k for x = 0..3.
  const int64_t lo = kDy == 1 ? 0 : -3;
  for (int64_t x = 0; x < cols4; x += 4) {
    for (int64_t k = 0; k < rows4; k += 4) {
      const float* s = src + x * dx + k * kDy + lo;
      __m128 r0 = _mm_loadu_ps(s), r1 = _mm_loadu_ps(s + dx), r2 = _mm_loadu_ps(s + 2 * dx),
             r3 = _mm_loadu_ps(s + 3 * dx);
      _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
      float* d = o + k * o_stride + x;
      _mm_storeu_ps(d, kDy == 1 ? r0 : r3);
      _mm_storeu_ps(d + o_stride, kDy == 1 ? r1 : r2);
      _mm_storeu_ps(d + 2 * o_stride, kDy == 1 ? r2 : r1);
      _mm_storeu_ps(d + 3 * o_stride, kDy == 1 ? r3 : r0);
    }
  }
  if (rows4 < rows)
    gather_turned_band<kDy, float>(o + rows4 * o_stride, o_stride, src + rows4 * kDy, rows - rows4, cols4, dx);
  if (cols4 < cols)
    gather_turned_band<kDy, float>(o + cols4, o_stride, src + cols4 * dx, rows, cols - cols4, dx);
}
#endif

// Flag checks of a finished output row against the source image's row.
template <bool kCompare, typename scalar_t>
NDA_ALWAYS_INLINE inline void check_row(const scalar_t* __restrict__ o, const scalar_t* __restrict__ own, int64_t w,
                                        int& changed, int& nonfinite) {
  using opmath_t = typename OpMath<scalar_t>::type;
  int chg = 0, nf = 0;
  for (int64_t x = 0; x < w; ++x) {
    if (kCompare) chg |= static_cast<opmath_t>(o[x]) != static_cast<opmath_t>(own[x]);
    nf |= not_finite(o[x]);
  }
  changed |= chg;
  nonfinite |= nf;
}

// Both variants, picked per row.
#define NDA_CHECKED(fn, ...) (compare ? fn<true>(__VA_ARGS__) : fn<false>(__VA_ARGS__))

// Rows gathered together in the general path: 16 floats are one cache line (a quarter-turned
// tile reads 16 values of each source line), and a 256-px band channel (16 KB) stays in L1.
constexpr int64_t kBand = 16;

template <typename scalar_t>
struct RowJob {
  const scalar_t* in;
  scalar_t* out;
  const Plan* plan;
  int64_t n, c, h, w;
  const TileSource* sources;     // every tile's source, image after image
  const int64_t* first_tile;     // [N + 1] where each image's tiles start in `sources`
  uint8_t* row_flags;            // [N * H]
};

// Output rows begin..end (row r = image r / H, y = r % H): gather, blend, box, flags.
template <typename scalar_t>
NDA_ALWAYS_INLINE inline void process_rows(const RowJob<scalar_t>& job, int64_t begin, int64_t end) {
  using opmath_t = typename OpMath<scalar_t>::type;
  const scalar_t* in = job.in;
  scalar_t* out = job.out;
  const Plan& p = *job.plan;
  const int64_t c = job.c, h = job.h, w = job.w, hw = h * w, chw = c * hw;
  std::vector<scalar_t> fill(c);  // box means of image fill_img
  int64_t fill_img = -1;
  const TileSource* sources = job.sources;
  const int64_t* first_tile = job.first_tile;
  uint8_t* row_flags = job.row_flags;
  std::vector<int64_t> idx(kBand * w);  // per-pixel offsets of the rare clamped tiles
  int64_t img = begin / h, y = begin % h;
  int64_t gh = 0, gw = 0, th = 0, tw = 0, ti = 0, ly = 0;
  int64_t known_changed = -1;  // an image of this chunk already seen to differ from its source
  for (int64_t r = begin; r < end; ++r) {
    if (r == begin || y == 0) {  // a new image: its constants, and the tile row of y
      gh = p.grid[2 * img];
      gw = p.grid[2 * img + 1];
      th = h / gh;
      tw = w / gw;
      ti = std::min(y / th, gh - 1);
      ly = y - ti * th;
    }
    const TileSource* row_tiles = sources + first_tile[img] + ti * gw;
    const float wf = p.blend_w[img];
    const bool blending = wf != 1.0f;
    const opmath_t wgt = static_cast<opmath_t>(wf);
    const scalar_t* blend_row = in + p.blend_src[img] * chw + y * w;
    const Box b = clamped_box(p.box + 6 * img, h, w);
    const bool boxed = (b.mode == kBoxFill || b.mode == kBoxPaste) && y >= b.y0 && y < b.y1;
    const scalar_t* own_row = in + img * chw + y * w;
    const scalar_t* paste_row = in + b.src * chw + y * w;
    int changed = 0, nonfinite = 0;
    bool compare = known_changed != img;  // once a value differs, the image is changed
    // A band: this row and the next ones of the same tile row, outside the box, when the tile
    // spans the whole width unrotated. Its rows are contiguous in the source and in the
    // output, so each channel is one run (small images are dominated by per-row costs).
    const TileSource& t0 = row_tiles[0];
    if (gw == 1 && !boxed && t0.affine && t0.dx == 1 && t0.dy == w) {
      int64_t rows = std::min(end - r, h - y);
      if (ti < gh - 1) rows = std::min(rows, th - ly);
      if ((b.mode == kBoxFill || b.mode == kBoxPaste) && y < b.y0) rows = std::min(rows, b.y0 - y);
      if (rows > 1) {
        const int64_t size = rows * w;
        for (int64_t ch = 0; ch < c; ++ch) {
          compare = compare && !changed;
          scalar_t* o = out + img * chw + ch * hw + y * w;
          const scalar_t* src = in + ch * hw + t0.start + ly * t0.dy;
          if (blending) {
            NDA_CHECKED(blend_run_checked, o, src, blend_row + ch * hw, size, wgt, own_row + ch * hw, changed, nonfinite);
          } else {
            NDA_CHECKED(gather_run_checked, o, src, size, 1, own_row + ch * hw, changed, nonfinite);
          }
        }
        const uint8_t f = (changed ? kFlagChanged : 0) | (nonfinite ? kFlagNonFinite : 0);
        if (changed) known_changed = img;
        for (int64_t k = 0; k < rows; ++k) row_flags[r + k] = f;
        r += rows - 1;  // the loop's ++r and the walk below cover the band's last row
        y += rows - 1;
        ly += rows - 1;
        goto next_row;
      }
    }
    // Any other rows: a band of up to kBand rows of one tile row. Per channel, the band is
    // gathered tile by tile (quarter-turned tiles by gather_turned_band, as they read a source
    // column per output row), blended as one run, boxed row by row and checked as one run,
    // while it is in L1 (per-row costs would dominate small images).
    {
      int64_t rows = std::min<int64_t>(kBand, std::min(end - r, h - y));
      if (ti < gh - 1) rows = std::min(rows, th - ly);
      const int64_t size = rows * w;
      for (int64_t tj = 0; tj < gw; ++tj) {
        const TileSource& t = row_tiles[tj];
        if (!t.affine)
          for (int64_t k = 0; k < rows; ++k)
            for (int64_t lx = 0; lx < t.size_x; ++lx)
              idx[k * w + tj * tw + lx] = clamped_source(t, ly + k, lx, th, tw, h, w);
      }
      // Box rows of the band: [k0, k1).
      int64_t k0 = 0, k1 = 0;
      if (b.mode == kBoxFill || b.mode == kBoxPaste) {
        k0 = std::max<int64_t>(b.y0 - y, 0);
        k1 = std::min<int64_t>(b.y1 - y, rows);
      }
      for (int64_t ch = 0; ch < c; ++ch) {
        scalar_t* o = out + img * chw + ch * hw + y * w;
        const scalar_t* plane = in + ch * hw;
        for (int64_t tj = 0; tj < gw; ++tj) {
          const TileSource& t = row_tiles[tj];
          scalar_t* ot = o + tj * tw;
          if (!t.affine) {
            for (int64_t k = 0; k < rows; ++k) {
              const int64_t* it = idx.data() + k * w + tj * tw;
              for (int64_t lx = 0; lx < t.size_x; ++lx) ot[k * w + lx] = plane[it[lx]];
            }
          } else if (t.rot & 1) {
            const scalar_t* src = plane + t.start + ly * t.dy;
            if (t.dy == 1) {
              gather_turned_band<1>(ot, w, src, rows, t.size_x, t.dx);
            } else {
              gather_turned_band<-1>(ot, w, src, rows, t.size_x, t.dx);
            }
          } else if (gw == 1 && t.dx == 1 && t.dy == w) {  // whole rows, contiguous in the source
            gather_run(ot, plane + t.start + ly * w, size, 1);
          } else {
            for (int64_t k = 0; k < rows; ++k) gather_run(ot + k * w, plane + t.start + (ly + k) * t.dy, t.size_x, t.dx);
          }
        }
        if (blending) {
          const scalar_t* other = blend_row + ch * hw;
          for (int64_t x = 0; x < size; ++x)
            o[x] = static_cast<scalar_t>(wgt * static_cast<opmath_t>(o[x]) +
                                         (opmath_t(1) - wgt) * static_cast<opmath_t>(other[x]));
        }
        if (k0 < k1 && b.mode == kBoxFill && fill_img != img) {
          box_mean(in + img * chw, b, c, h, w, fill.data());
          fill_img = img;
        }
        for (int64_t k = k0; k < k1; ++k) {
          scalar_t* ok = o + k * w;
          if (b.mode == kBoxFill) {
            const scalar_t v = fill[ch];
            for (int64_t x = b.x0; x < b.x1; ++x) ok[x] = v;
          } else {
            std::memcpy(ok + b.x0, paste_row + k * w + ch * hw + b.x0, sizeof(scalar_t) * (b.x1 - b.x0));
          }
        }
        compare = compare && !changed;
        NDA_CHECKED(check_row, o, own_row + ch * hw, size, changed, nonfinite);
      }
      const uint8_t f = (changed ? kFlagChanged : 0) | (nonfinite ? kFlagNonFinite : 0);
      if (changed) known_changed = img;
      for (int64_t k = 0; k < rows; ++k) row_flags[r + k] = f;
      r += rows - 1;  // as for the band above
      y += rows - 1;
      ly += rows - 1;
    }
  next_row:
    // Next row: walk the tile grid without dividing.
    if (++y == h) {
      y = 0;
      ++img;
    } else if (++ly == th && ti < gh - 1) {
      ly = 0;
      ++ti;
    }
  }
}

// The same loop compiled for AVX2 (8 floats per vector instead of SSE2's 4), picked at run
// time. No FMA: the blend must round after each operation, as the reference does.
#if NDA_HAVE_X86_DISPATCH
template <typename scalar_t>
__attribute__((target("avx2"))) void process_rows_avx2(const RowJob<scalar_t>& job, int64_t begin, int64_t end) {
  process_rows(job, begin, end);
}
#endif

template <typename scalar_t>
void process_rows_baseline(const RowJob<scalar_t>& job, int64_t begin, int64_t end) {
  process_rows(job, begin, end);
}

inline bool cpu_has_avx2() {
#if NDA_HAVE_X86_DISPATCH
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
#else
  return false;
#endif
}

template <typename scalar_t>
void apply_plan_kernel(const scalar_t* in, scalar_t* out, int32_t* flags, const Plan& p,
                       int64_t n, int64_t c, int64_t h, int64_t w) {

  // Every tile's source, once per call (N * gh * gw entries; no divisions per row below).
  std::vector<int64_t> first_tile(n + 1, 0);
  for (int64_t i = 0; i < n; ++i) first_tile[i + 1] = first_tile[i] + p.grid[2 * i] * p.grid[2 * i + 1];
  std::vector<TileSource> sources(first_tile[n]);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t gh = p.grid[2 * i], gw = p.grid[2 * i + 1];
    for (int64_t ti = 0; ti < gh; ++ti)
      for (int64_t tj = 0; tj < gw; ++tj) sources[first_tile[i] + ti * gw + tj] = tile_source(p, i, ti, tj, c, h, w);
  }
  std::vector<uint8_t> row_flags(n * h, 0);

  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, c * w));
  const RowJob<scalar_t> job{in, out, &p, n, c, h, w, sources.data(), first_tile.data(), row_flags.data()};
  at::parallel_for(0, n * h, grain, [&](int64_t begin, int64_t end) {
#if NDA_HAVE_X86_DISPATCH
    if (cpu_has_avx2()) return process_rows_avx2(job, begin, end);
#endif
    process_rows_baseline(job, begin, end);
  });
  for (int64_t i = 0; i < n; ++i) {
    int32_t f = 0;
    for (int64_t yy = 0; yy < h; ++yy) f |= row_flags[i * h + yy];
    flags[i] = f;
  }
}

at::Tensor plan_tensor(const at::Tensor& t, at::ScalarType dtype, const char* name) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), "plan tensor ", name, " must be on the CPU like the images");
  TORCH_CHECK_VALUE(t.scalar_type() == dtype, "plan tensor ", name, " must be ", dtype, ", got ",
                    t.scalar_type());
  return t.contiguous();
}

std::tuple<at::Tensor, at::Tensor> apply_plan_cpu(const at::Tensor& images_in, const at::Tensor& grid_in,
                                                  const at::Tensor& tiles_in, const at::Tensor& box_in,
                                                  const at::Tensor& blend_src_in,
                                                  const at::Tensor& blend_w_in) {
  TORCH_CHECK_VALUE(images_in.dim() == 4, "images must be N, C, H, W; got ", images_in.dim(), " dims");
  const auto dtype = images_in.scalar_type();
  TORCH_CHECK_VALUE(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
                    "tile kernel supports float32, float64, float16 and bfloat16 images, got ", dtype);
  const at::Tensor images = images_in.contiguous();  // also turns channels_last into NCHW
  const int64_t n = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3);
  const at::Tensor grid = plan_tensor(grid_in, at::kLong, "grid");
  const at::Tensor tiles = plan_tensor(tiles_in, at::kLong, "tiles");
  const at::Tensor box = plan_tensor(box_in, at::kLong, "box");
  const at::Tensor blend_src = plan_tensor(blend_src_in, at::kLong, "blend_src");
  const at::Tensor blend_w = plan_tensor(blend_w_in, at::kFloat, "blend_w");
  TORCH_CHECK_VALUE(grid.dim() == 2 && grid.size(0) == n, "plan is for a batch of ", grid.size(0),
                    " images but got ", n);
  TORCH_CHECK_VALUE(grid.dim() == 2 && grid.size(0) == n && grid.size(1) == 2 && tiles.dim() == 3 &&
                        tiles.size(0) == n && tiles.size(2) == 3 && box.dim() == 2 && box.size(0) == n &&
                        box.size(1) == 6 && blend_src.numel() == n && blend_w.numel() == n,
                    "plan tensors have the wrong shapes for a batch of ", n, " images");

  at::Tensor out = at::empty({n, c, h, w}, images.options());
  at::Tensor flags = at::empty({n}, images.options().dtype(at::kInt));
  if (n == 0) return {out, flags};
  const Plan p{grid.data_ptr<int64_t>(), tiles.data_ptr<int64_t>(), tiles.size(1), box.data_ptr<int64_t>(),
               blend_src.data_ptr<int64_t>(), blend_w.data_ptr<float>()};
  if (!plan_is_valid(p, n, h, w)) {
    flags.fill_(kFlagBadPlan);
    return {out.zero_(), flags};
  }
  if (c == 0) {  // nothing to compare: an empty image never differs
    flags.zero_();
    return {out, flags};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "nda_tile_apply_plan_cpu", [&] {
    apply_plan_kernel<scalar_t>(images.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), flags.data_ptr<int32_t>(),
                                p, n, c, h, w);
  });
  return {out, flags};
}

}  // namespace

TORCH_LIBRARY(nda_tile, m) {
  m.def("apply_plan(Tensor images, Tensor grid, Tensor tiles, Tensor box, Tensor blend_src, Tensor blend_w)"
        " -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(nda_tile, CPU, m) {
  m.impl("apply_plan", &apply_plan_cpu);
}

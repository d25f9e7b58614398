// CUDA kernels that apply a TilePlan (semantics: nda_stylegan/negatives/plan.py; reference:
// nda_stylegan/ops/tile_ref.py; CPU twin: tile_cpu.cpp).
//
// Only CUDA runtime headers here, so nvcc compiles this file in seconds; tile_cuda.cpp does
// the tensor checks and registration and calls nda_tile_cuda_launch().
//
// Two launches: a small reduction for the box means of BOX_FILL images (one block per image
// and channel, reading the box only), then one pass where each thread makes one output pixel
// in every channel and the flags are OR-ed per block (one atomic per block and image).
//
// The plan is validated in that pass too (bit kFlagBadPlan of an image's flags; TilePlan.check's
// conditions): checking it on the host would need device-to-host copies before the launch,
// which stall the stream. apply_plan reads the flags once and raises TilePlan.check's error.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

namespace {

constexpr int kThreads = 256;
constexpr int64_t kBoxFill = 1;
constexpr int64_t kBoxPaste = 2;
constexpr int kFlagBadPlan = 4;  // FLAG_BAD_PLAN in nda_stylegan/negatives/plan.py

// Loads into / stores from the arithmetic type (float, or double for double images).
template <typename T> struct Num;
template <> struct Num<float> {
  using op = float;
  static __device__ __forceinline__ float load(float v) { return v; }
  static __device__ __forceinline__ float store(float v) { return v; }
};
template <> struct Num<double> {
  using op = double;
  static __device__ __forceinline__ double load(double v) { return v; }
  static __device__ __forceinline__ double store(double v) { return v; }
};
template <> struct Num<__half> {
  using op = float;
  static __device__ __forceinline__ float load(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half store(float v) { return __float2half_rn(v); }
};
template <> struct Num<__nv_bfloat16> {
  using op = float;
  static __device__ __forceinline__ float load(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
};

// w * a + (1 - w) * b rounded after each operation, as the reference computes it (no FMA).
__device__ __forceinline__ float blend(float w, float a, float b) {
  return __fadd_rn(__fmul_rn(w, a), __fmul_rn(1.0f - w, b));
}
__device__ __forceinline__ double blend(double w, double a, double b) {
  return __dadd_rn(__dmul_rn(w, a), __dmul_rn(1.0 - w, b));
}

__device__ __forceinline__ bool not_finite(float v) { return !isfinite(v); }
__device__ __forceinline__ bool not_finite(double v) { return !isfinite(v); }

__device__ __forceinline__ int64_t clamp64(int64_t v, int64_t lo, int64_t hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

// Python's floor division (tile ids may be negative; the reference clamps what they point to).
__device__ __forceinline__ int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

struct PlanView {
  const int64_t* grid;
  const int64_t* tiles;
  int64_t n_tiles;
  const int64_t* box;
  const int64_t* blend_src;
  const float* blend_w;
};

struct BoxView {
  int64_t y0, y1, x0, x1, mode, src;
};

// Whether image n's plan breaks one of TilePlan.check's conditions. Called by every thread of
// the first block of each image row of the grid: the threads share the tile entries.
__device__ __forceinline__ bool bad_plan(const PlanView& p, int64_t n, int64_t nb, int64_t h, int64_t w) {
  bool bad = false;
  for (int64_t t = threadIdx.x; t < p.n_tiles; t += blockDim.x) {
    const int64_t* e = p.tiles + 3 * (n * p.n_tiles + t);
    bad |= e[0] < 0 || e[0] >= nb || e[2] < 0 || e[2] > 3;
  }
  if (threadIdx.x == 0) {
    const int64_t gh = p.grid[2 * n], gw = p.grid[2 * n + 1];
    bad |= gh < 1 || gw < 1 || gh > h || gw > w || gh * gw > p.n_tiles;  // the product only once in range
    const int64_t* b = p.box + 6 * n;
    bad |= p.blend_src[n] < 0 || p.blend_src[n] >= nb || b[5] < 0 || b[5] >= nb || b[4] < 0 || b[4] > kBoxPaste;
  }
  return bad;
}

// The box clamped into the image (empty when it has no area). Image indices are clamped so
// that a bad plan (reported through kFlagBadPlan) never reads out of bounds.
__device__ __forceinline__ BoxView load_box(const PlanView& p, int64_t n, int64_t nb, int64_t h, int64_t w) {
  const int64_t* b = p.box + 6 * n;
  BoxView r;
  r.y0 = clamp64(b[0], 0, h);
  r.y1 = clamp64(b[1], 0, h);
  r.x0 = clamp64(b[2], 0, w);
  r.x1 = clamp64(b[3], 0, w);
  r.mode = b[4];
  r.src = clamp64(b[5], 0, nb - 1);
  if (r.y1 <= r.y0 || r.x1 <= r.x0) r.y0 = r.y1 = r.x0 = r.x1 = 0;
  return r;
}

template <typename scalar_t>
__global__ void box_mean_kernel(const scalar_t* __restrict__ in, PlanView p, int64_t nb, int64_t c, int64_t h,
                                int64_t w, typename Num<scalar_t>::op* __restrict__ fill) {
  using op_t = typename Num<scalar_t>::op;
  __shared__ op_t partial[kThreads];
  const int64_t i = blockIdx.x;  // image * C + channel
  const int64_t n = i / c;
  const BoxView b = load_box(p, n, nb, h, w);
  if (b.mode != kBoxFill) return;  // uniform across the block
  const int64_t bw = b.x1 - b.x0;
  const int64_t area = (b.y1 - b.y0) * bw;
  const scalar_t* plane = in + i * h * w;
  op_t sum = 0;
  for (int64_t k = threadIdx.x; k < area; k += blockDim.x)
    sum += Num<scalar_t>::load(plane[(b.y0 + k / bw) * w + b.x0 + k % bw]);
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) fill[i] = partial[0] / static_cast<op_t>(area > 0 ? area : 1);
}

template <typename scalar_t>
__global__ void apply_plan_kernel(const scalar_t* __restrict__ in, scalar_t* __restrict__ out, PlanView p,
                                  int64_t nb, int64_t c, int64_t h, int64_t w,
                                  const typename Num<scalar_t>::op* __restrict__ fill, int32_t* __restrict__ flags) {
  using op_t = typename Num<scalar_t>::op;
  const int64_t hw = h * w, chw = c * hw;
  const int64_t pix = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool active = pix < hw;
  const int64_t y = active ? pix / w : 0, x = active ? pix % w : 0;
  for (int64_t n = blockIdx.y; n < nb; n += gridDim.y) {  // uniform per block
    bool changed = false, nonfinite = false;
    if (active) {
      const int64_t gh = clamp64(p.grid[2 * n], 1, h), gw = clamp64(p.grid[2 * n + 1], 1, w);
      const int64_t th = h / gh, tw = w / gw;
      const int64_t ti = min(y / th, gh - 1), tj = min(x / tw, gw - 1);
      const int64_t ly = y - ti * th, lx = x - tj * tw;
      const int64_t size_y = ti == gh - 1 ? h - (gh - 1) * th : th;
      const int64_t size_x = tj == gw - 1 ? w - (gw - 1) * tw : tw;
      const int64_t* e = p.tiles + 3 * (n * p.n_tiles + min(ti * gw + tj, p.n_tiles - 1));
      const int64_t img = clamp64(e[0], 0, nb - 1), st = e[1], rot = e[2];
      const int64_t si = floor_div(st, gw), sj = st - si * gw;
      int64_t sy, sx;  // quarter turns counter-clockwise, as torch.rot90(dims=(-2, -1))
      if (rot == 0) {
        sy = ly; sx = lx;
      } else if (rot == 1) {
        sy = lx; sx = size_y - 1 - ly;
      } else if (rot == 2) {
        sy = size_y - 1 - ly; sx = size_x - 1 - lx;
      } else {
        sy = size_x - 1 - lx; sx = ly;
      }
      const int64_t src = img * chw + clamp64(si * th + sy, 0, h - 1) * w + clamp64(sj * tw + sx, 0, w - 1);
      const int64_t here = y * w + x;
      const float wf = p.blend_w[n];
      const bool blending = wf != 1.0f;
      const op_t wgt = static_cast<op_t>(wf);
      const int64_t other = clamp64(p.blend_src[n], 0, nb - 1) * chw + here;
      const BoxView b = load_box(p, n, nb, h, w);
      const bool boxed = (b.mode == kBoxFill || b.mode == kBoxPaste) && y >= b.y0 && y < b.y1 && x >= b.x0 && x < b.x1;
      const int64_t pasted = b.src * chw + here;
      const int64_t own = n * chw + here;
      for (int64_t ch = 0; ch < c; ++ch) {
        const int64_t off = ch * hw;
        scalar_t v = in[src + off];
        if (blending) v = Num<scalar_t>::store(blend(wgt, Num<scalar_t>::load(v), Num<scalar_t>::load(in[other + off])));
        if (boxed) v = b.mode == kBoxFill ? Num<scalar_t>::store(fill[n * c + ch]) : in[pasted + off];
        out[own + off] = v;
        const op_t f = Num<scalar_t>::load(v);
        changed |= f != Num<scalar_t>::load(in[own + off]);
        nonfinite |= not_finite(f);
      }
    }
    const bool bad = blockIdx.x == 0 && bad_plan(p, n, nb, h, w);  // uniform branch per block
    const int any_changed = __syncthreads_or(changed);
    const int any_nonfinite = __syncthreads_or(nonfinite);
    const int any_bad = __syncthreads_or(bad);
    if (threadIdx.x == 0 && (any_changed || any_nonfinite || any_bad))
      atomicOr(reinterpret_cast<int*>(flags + n),
               (any_changed ? 1 : 0) | (any_nonfinite ? 2 : 0) | (any_bad ? kFlagBadPlan : 0));
  }
}

template <typename scalar_t>
cudaError_t launch(const void* in, void* out, const PlanView& p, void* fill, int32_t* flags, int64_t nb,
                   int64_t c, int64_t h, int64_t w, cudaStream_t stream) {
  using op_t = typename Num<scalar_t>::op;
  const scalar_t* src = static_cast<const scalar_t*>(in);
  op_t* means = static_cast<op_t*>(fill);
  box_mean_kernel<scalar_t><<<static_cast<unsigned int>(nb * c), kThreads, 0, stream>>>(src, p, nb, c, h, w, means);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const int64_t hw = h * w;
  const dim3 blocks(static_cast<unsigned int>((hw + kThreads - 1) / kThreads),
                    static_cast<unsigned int>(nb < 65535 ? nb : 65535));
  apply_plan_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(src, static_cast<scalar_t*>(out), p, nb, c, h, w,
                                                               means, flags);
  return cudaGetLastError();
}

}  // namespace

// dtype: 0 float32, 1 float64, 2 float16, 3 bfloat16. ``fill`` holds N * C values of the
// arithmetic type (float, or double for float64); ``flags`` must be zeroed by the caller.
// The caller guarantees N * C >= 1 and H * W >= 1.
cudaError_t nda_tile_cuda_launch(int dtype, const void* in, void* out, const int64_t* grid, const int64_t* tiles,
                                 int64_t n_tiles, const int64_t* box, const int64_t* blend_src,
                                 const float* blend_w, void* fill, int32_t* flags, int64_t n, int64_t c,
                                 int64_t h, int64_t w, cudaStream_t stream) {
  const PlanView p{grid, tiles, n_tiles, box, blend_src, blend_w};
  switch (dtype) {
    case 0: return launch<float>(in, out, p, fill, flags, n, c, h, w, stream);
    case 1: return launch<double>(in, out, p, fill, flags, n, c, h, w, stream);
    case 2: return launch<__half>(in, out, p, fill, flags, n, c, h, w, stream);
    case 3: return launch<__nv_bfloat16>(in, out, p, fill, flags, n, c, h, w, stream);
    default: return cudaErrorInvalidValue;
  }
}

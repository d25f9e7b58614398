// upfirdn2d CUDA kernel: one thread per output sample, visiting only the taps that land on a
// real (not zero-inserted) input sample, with no division inside the tap loops. Only CUDA
// runtime headers; dispatch and registration live in upfirdn2d_cuda.cpp. Same formula as
// upfirdn2d.cpp.

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>

namespace {

template <typename T> struct Opmath { typedef T type; };
template <> struct Opmath<__half> { typedef float type; };

template <typename T> __device__ inline typename Opmath<T>::type load(const T* p, int64_t i) { return p[i]; }
template <> __device__ inline float load<__half>(const __half* p, int64_t i) { return __half2float(p[i]); }
template <typename T> __device__ inline void store(T* p, int64_t i, typename Opmath<T>::type v) { p[i] = v; }
template <> __device__ inline void store<__half>(__half* p, int64_t i, float v) { p[i] = __float2half(v); }

// a mod m in [0, m), for negative a too.
template <typename I> __device__ inline I pos_mod(I a, I m) { return ((a % m) + m) % m; }

// First tap k >= 0 of one axis whose upsampled position u0 + k is a real input sample (a
// multiple of up, not before the input's start), and that sample's index. Taps then advance
// by up and the index by one, so the loops below divide nothing.
template <typename I> __device__ inline void first_tap(I u0, int up, int& k, I& index) {
  k = (int)pos_mod<I>(-u0, (I)up);
  if (u0 + k < 0) k += (int)((-(u0 + k) + up - 1) / up) * up;
  index = (u0 + k) / up;  // exact and >= 0
}

// w: taps already flipped (or not) and scaled by the gain, in the accumulation type.
// I: the index type, 32-bit whenever every index fits (64-bit division is slow on a GPU).
template <typename T, typename I>
__global__ void upfirdn2d_kernel(const T* x, const typename Opmath<T>::type* w, T* out,
                                 I planes, I ih, I iw, I oh, I ow, int fh, int fw, int upx,
                                 int upy, int downx, int downy, int padx0, int pady0) {
  typedef typename Opmath<T>::type S;
  const I total = planes * oh * ow;
  for (I i = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; i < total; i += (I)blockDim.x * (I)gridDim.x) {
    const I ox = i % ow;
    const I rest = i / ow;
    const I oy = rest % oh;
    const I p = rest / oh;
    int ky0, kx0;
    I iy0, ix0;
    first_tap<I>(oy * downy - pady0, upy, ky0, iy0);
    first_tap<I>(ox * downx - padx0, upx, kx0, ix0);
    const T* plane = x + p * ih * iw;
    S acc = S(0);
    I iy = iy0;
    for (int ky = ky0; ky < fh && iy < ih; ky += upy, ++iy) {
      const T* row = plane + iy * iw;
      const S* taps = w + ky * fw;
      I ix = ix0;
      for (int kx = kx0; kx < fw && ix < iw; kx += upx, ++ix) acc += taps[kx] * load(row, ix);
    }
    store(out, i, acc);
  }
}

template <typename T, typename I>
void start(unsigned blocks, int threads, cudaStream_t stream, const void* x, const void* w, void* out,
           int64_t planes, int64_t ih, int64_t iw, int64_t oh, int64_t ow, int fh, int fw, int upx,
           int upy, int downx, int downy, int padx0, int pady0) {
  upfirdn2d_kernel<T, I><<<blocks, threads, 0, stream>>>(
      (const T*)x, (const typename Opmath<T>::type*)w, (T*)out, (I)planes, (I)ih, (I)iw, (I)oh, (I)ow,
      fh, fw, upx, upy, downx, downy, padx0, pady0);
}

template <typename T>
cudaError_t launch(const void* x, const void* w, void* out, int64_t planes, int64_t ih, int64_t iw,
                   int64_t oh, int64_t ow, int fh, int fw, int upx, int upy, int downx, int downy,
                   int padx0, int pady0, cudaStream_t stream) {
  const int threads = 256;
  const int64_t max_blocks = 65535 * 8;
  int64_t blocks = (planes * oh * ow + threads - 1) / threads;
  if (blocks > max_blocks) blocks = max_blocks;
  if (blocks < 1) blocks = 1;
  // 32-bit indices when every one the kernel forms fits: element offsets (plus one grid stride
  // past the end) and upsampled coordinates (output position x down, plus padding and taps).
  const int64_t elements = planes * std::max(ih * iw, oh * ow) + blocks * threads;
  const int64_t coords = std::max(oh * downy, ow * downx) + std::max(std::abs(pady0), std::abs(padx0)) + fh + fw +
                         upx + upy;
  if (elements < INT32_MAX && coords < INT32_MAX / 2)
    start<T, int32_t>((unsigned)blocks, threads, stream, x, w, out, planes, ih, iw, oh, ow, fh, fw, upx, upy,
                      downx, downy, padx0, pady0);
  else
    start<T, int64_t>((unsigned)blocks, threads, stream, x, w, out, planes, ih, iw, oh, ow, fh, fw, upx, upy,
                      downx, downy, padx0, pady0);
  return cudaGetLastError();
}

}  // namespace

// dtype: 0 float32, 1 float64, 2 float16 (taps: float64 for dtype 1, else float32).
cudaError_t nda_upfirdn2d_cuda_launch(int dtype, const void* x, const void* w, void* out,
                                      int64_t planes, int64_t ih, int64_t iw, int64_t oh,
                                      int64_t ow, int fh, int fw, int upx, int upy, int downx,
                                      int downy, int padx0, int pady0, cudaStream_t stream) {
  if (dtype == 1)
    return launch<double>(x, w, out, planes, ih, iw, oh, ow, fh, fw, upx, upy, downx, downy, padx0, pady0, stream);
  if (dtype == 2)
    return launch<__half>(x, w, out, planes, ih, iw, oh, ow, fh, fw, upx, upy, downx, downy, padx0, pady0, stream);
  return launch<float>(x, w, out, planes, ih, iw, oh, ow, fh, fw, upx, upy, downx, downy, padx0, pady0, stream);
}

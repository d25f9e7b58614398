// upfirdn2d CUDA kernel: one thread per output sample, visiting only the taps that land on a
// real (not zero-inserted) input sample. Only CUDA runtime headers; dispatch and registration
// live in upfirdn2d_cuda.cpp. Same formula as upfirdn2d.cpp.

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace {

template <typename T> struct Opmath { typedef T type; };
template <> struct Opmath<__half> { typedef float type; };

template <typename T> __device__ inline typename Opmath<T>::type load(const T* p, int64_t i) { return p[i]; }
template <> __device__ inline float load<__half>(const __half* p, int64_t i) { return __half2float(p[i]); }
template <typename T> __device__ inline void store(T* p, int64_t i, typename Opmath<T>::type v) { p[i] = v; }
template <> __device__ inline void store<__half>(__half* p, int64_t i, float v) { p[i] = __float2half(v); }

__device__ inline int64_t pos_mod(int64_t a, int64_t m) { return ((a % m) + m) % m; }

// w: taps already flipped (or not) and scaled by the gain, in the accumulation type.
template <typename T>
__global__ void upfirdn2d_kernel(const T* x, const typename Opmath<T>::type* w, T* out,
                                 int64_t planes, int64_t ih, int64_t iw, int64_t oh, int64_t ow,
                                 int fh, int fw, int upx, int upy, int downx, int downy,
                                 int padx0, int pady0) {
  typedef typename Opmath<T>::type S;
  const int64_t total = planes * oh * ow;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)blockDim.x * gridDim.x) {
    const int64_t ox = i % ow;
    const int64_t oy = (i / ow) % oh;
    const int64_t p = i / (ow * oh);
    const int64_t uy0 = oy * downy - pady0;
    const int64_t ux0 = ox * downx - padx0;
    const int ky0 = (int)pos_mod(-uy0, upy);
    const int kx0 = (int)pos_mod(-ux0, upx);
    const T* plane = x + p * ih * iw;
    S acc = S(0);
    for (int ky = ky0; ky < fh; ky += upy) {
      const int64_t iy = (uy0 + ky) / upy;
      if (uy0 + ky < 0) continue;
      if (iy >= ih) break;
      for (int kx = kx0; kx < fw; kx += upx) {
        if (ux0 + kx < 0) continue;
        const int64_t ix = (ux0 + kx) / upx;
        if (ix >= iw) break;
        acc += w[ky * fw + kx] * load(plane, iy * iw + ix);
      }
    }
    store(out, i, acc);
  }
}

template <typename T>
cudaError_t launch(const void* x, const void* w, void* out, int64_t planes, int64_t ih, int64_t iw,
                   int64_t oh, int64_t ow, int fh, int fw, int upx, int upy, int downx, int downy,
                   int padx0, int pady0, cudaStream_t stream) {
  const int threads = 256;
  int64_t blocks = (planes * oh * ow + threads - 1) / threads;
  if (blocks > 65535 * 8) blocks = 65535 * 8;
  if (blocks < 1) blocks = 1;
  upfirdn2d_kernel<T><<<(unsigned)blocks, threads, 0, stream>>>(
      (const T*)x, (const typename Opmath<T>::type*)w, (T*)out, planes, ih, iw, oh, ow, fh, fw,
      upx, upy, downx, downy, padx0, pady0);
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

// bias_act CUDA kernels: one thread per element, grid-stride loop. Only CUDA runtime headers;
// the ATen side (dtype dispatch, checks, registration) lives in bias_act_cuda.cpp.

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace {

enum Act { LINEAR = 0, RELU, LRELU, TANH, SIGMOID, ELU, SELU, SOFTPLUS, SWISH };

template <typename T> struct Opmath { typedef T type; };
template <> struct Opmath<__half> { typedef float type; };

template <typename T> __device__ inline typename Opmath<T>::type load(const T* p, int64_t i) { return p[i]; }
template <> __device__ inline float load<__half>(const __half* p, int64_t i) { return __half2float(p[i]); }
template <typename T> __device__ inline void store(T* p, int64_t i, typename Opmath<T>::type v) { p[i] = v; }
template <> __device__ inline void store<__half>(__half* p, int64_t i, float v) { p[i] = __float2half(v); }

template <typename S> __device__ inline S sigm(S z) { return S(1) / (S(1) + exp(-z)); }

template <typename S> __device__ S act_value(int act, S z, S alpha) {
  const S scale = S(1.0507009873554804934193349852946), sa = S(1.0507009873554804934193349852946 * 1.6732632423543772848170429916717);
  switch (act) {
    case RELU: return z > S(0) ? z : S(0);
    case LRELU: return z > S(0) ? z : z * alpha;
    case TANH: return tanh(z);
    case SIGMOID: return sigm(z);
    case ELU: return z > S(0) ? z : expm1(z);
    case SELU: return z > S(0) ? scale * z : sa * expm1(z);
    case SOFTPLUS: return z > S(20) ? z : log1p(exp(z));
    case SWISH: return z * sigm(z);
    default: return z;
  }
}

template <typename S> __device__ S act_grad(int act, int order, S z, S alpha) {
  const S scale = S(1.0507009873554804934193349852946), sa = S(1.0507009873554804934193349852946 * 1.6732632423543772848170429916717);
  if (order == 1) {
    switch (act) {
      case RELU: return z > S(0) ? S(1) : S(0);
      case LRELU: return z > S(0) ? S(1) : alpha;
      case TANH: { S t = tanh(z); return S(1) - t * t; }
      case SIGMOID: { S s = sigm(z); return s * (S(1) - s); }
      case ELU: return z > S(0) ? S(1) : exp(z);
      case SELU: return z > S(0) ? scale : sa * exp(z);
      case SOFTPLUS: return z > S(20) ? S(1) : sigm(z);
      case SWISH: { S s = sigm(z); return s * (S(1) + z * (S(1) - s)); }
      default: return S(1);
    }
  }
  switch (act) {
    case TANH: { S t = tanh(z); return S(-2) * t * (S(1) - t * t); }
    case SIGMOID: { S s = sigm(z); return s * (S(1) - s) * (S(1) - S(2) * s); }
    case ELU: return z > S(0) ? S(0) : exp(z);
    case SELU: return z > S(0) ? S(0) : sa * exp(z);
    case SOFTPLUS: { if (z > S(20)) return S(0); S s = sigm(z); return s * (S(1) - s); }
    case SWISH: { S s = sigm(z); S d = s * (S(1) - s); return S(2) * d + z * d * (S(1) - S(2) * s); }
    default: return S(0);
  }
}

// alpha, gain and clamp arrive as double and are rounded once to the compute type: float64
// tensors keep their full precision (as on the CPU).
// mode 0: out = clamp(f(x + b) * gain); mode 1/2: out = g * gain * f^(mode)(x + b) * [|y| < clamp],
// with f' read from y's sign when x is absent (piecewise-linear activations).
template <typename T>
__global__ void bias_act_kernel(int mode, const T* x, const T* b, const T* y, const T* g, T* out,
                                int64_t n, int64_t size, int64_t inner, int act, double alpha_f,
                                double gain_f, double clamp_f) {
  typedef typename Opmath<T>::type S;
  const S alpha = S(alpha_f), gain = S(gain_f), clamp = S(clamp_f);
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)blockDim.x * gridDim.x) {
    const S bias = b ? load(b, (i / inner) % size) : S(0);
    S v;
    if (mode == 0) {
      v = act_value(act, load(x, i) + bias, alpha) * gain;
      if (clamp_f >= 0) v = v > clamp ? clamp : (v < -clamp ? -clamp : v);
    } else {
      S d;
      if (x) {
        d = act_grad(act, mode, load(x, i) + bias, alpha);
      } else {
        const S yv = load(y, i);
        d = act == LINEAR ? S(1) : (yv > S(0) ? S(1) : (act == RELU ? S(0) : alpha));
      }
      v = load(g, i) * gain * d;
      if (clamp_f >= 0 && !(fabs(load(y, i)) < clamp)) v = S(0);
    }
    store(out, i, v);
  }
}

template <typename T>
cudaError_t launch(int mode, const void* x, const void* b, const void* y, const void* g, void* out,
                   int64_t n, int64_t size, int64_t inner, int act, double alpha, double gain,
                   double clamp, cudaStream_t stream) {
  const int threads = 256;
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks > 65535 * 8) blocks = 65535 * 8;
  if (blocks < 1) blocks = 1;
  bias_act_kernel<T><<<(unsigned)blocks, threads, 0, stream>>>(
      mode, (const T*)x, (const T*)b, (const T*)y, (const T*)g, (T*)out, n, size, inner, act,
      alpha, gain, clamp);
  return cudaGetLastError();
}

}  // namespace

// dtype: 0 float32, 1 float64, 2 float16. Returns the CUDA error of the launch.
cudaError_t nda_bias_act_cuda_launch(int dtype, int mode, const void* x, const void* b,
                                     const void* y, const void* g, void* out, int64_t n,
                                     int64_t size, int64_t inner, int act, double alpha, double gain,
                                     double clamp, cudaStream_t stream) {
  if (dtype == 1) return launch<double>(mode, x, b, y, g, out, n, size, inner, act, alpha, gain, clamp, stream);
  if (dtype == 2) return launch<__half>(mode, x, b, y, g, out, n, size, inner, act, alpha, gain, clamp, stream);
  return launch<float>(mode, x, b, y, g, out, n, size, inner, act, alpha, gain, clamp, stream);
}

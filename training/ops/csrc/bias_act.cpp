// bias_act: fused "add bias, activation, gain, clamp" for CPU, plus the schema of the library.
//
// Layout: a dense tensor is read in storage order as [outer, size, inner], where size is the
// length of the bias dimension and inner its stride, so the bias is constant along each run of
// `inner` elements (NCHW) or varies element by element when inner == 1 (NC, channels_last).
// Light headers only (ATen + torch/library), registered through TORCH_LIBRARY.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

namespace {

enum Act { LINEAR = 0, RELU, LRELU, TANH, SIGMOID, ELU, SELU, SOFTPLUS, SWISH };
enum Mode { FORWARD = 0, GRAD1 = 1, GRAD2 = 2 };

constexpr double kSeluScale = 1.0507009873554804934193349852946;
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;

template <typename T> inline T sigmoid(T z) { return T(1) / (T(1) + std::exp(-z)); }

// Activation value f(z).
template <int ACT, typename T> inline T act_value(T z, T alpha) {
  if (ACT == LINEAR) return z;
  // min/max instead of branches: random signs would defeat the branch predictor, and these
  // forms vectorise.
  if (ACT == RELU) return std::max(z, T(0));
  if (ACT == LRELU) return std::max(z, T(0)) + alpha * std::min(z, T(0));
  if (ACT == TANH) return std::tanh(z);
  if (ACT == SIGMOID) return sigmoid(z);
  if (ACT == ELU) return z > T(0) ? z : std::expm1(z);
  if (ACT == SELU) return z > T(0) ? T(kSeluScale) * z : T(kSeluScale * kSeluAlpha) * std::expm1(z);
  if (ACT == SOFTPLUS) return z > T(20) ? z : std::log1p(std::exp(z));
  return z * sigmoid(z);  // SWISH
}

// First derivative f'(z).
template <int ACT, typename T> inline T act_grad1(T z, T alpha) {
  if (ACT == LINEAR) return T(1);
  if (ACT == RELU) return z > T(0) ? T(1) : T(0);
  if (ACT == LRELU) return z > T(0) ? T(1) : alpha;
  if (ACT == TANH) { T t = std::tanh(z); return T(1) - t * t; }
  if (ACT == SIGMOID) { T s = sigmoid(z); return s * (T(1) - s); }
  if (ACT == ELU) return z > T(0) ? T(1) : std::exp(z);
  if (ACT == SELU) return z > T(0) ? T(kSeluScale) : T(kSeluScale * kSeluAlpha) * std::exp(z);
  if (ACT == SOFTPLUS) return z > T(20) ? T(1) : sigmoid(z);
  T s = sigmoid(z);  // SWISH
  return s * (T(1) + z * (T(1) - s));
}

// Second derivative f''(z).
template <int ACT, typename T> inline T act_grad2(T z, T alpha) {
  (void)alpha;
  if (ACT == LINEAR || ACT == RELU || ACT == LRELU) return T(0);
  if (ACT == TANH) { T t = std::tanh(z); return T(-2) * t * (T(1) - t * t); }
  if (ACT == SIGMOID) { T s = sigmoid(z); return s * (T(1) - s) * (T(1) - T(2) * s); }
  if (ACT == ELU) return z > T(0) ? T(0) : std::exp(z);
  if (ACT == SELU) return z > T(0) ? T(0) : T(kSeluScale * kSeluAlpha) * std::exp(z);
  if (ACT == SOFTPLUS) { if (z > T(20)) return T(0); T s = sigmoid(z); return s * (T(1) - s); }
  T s = sigmoid(z);  // SWISH: 2 s' + z s''
  T d = s * (T(1) - s);
  return T(2) * d + z * d * (T(1) - T(2) * s);
}

// First derivative read from the output y (only for piecewise-linear activations with gain > 0).
template <int ACT, typename T> inline T act_grad1_from_y(T y, T alpha) {
  if (ACT == LINEAR) return T(1);
  // Selects (not bool-to-float casts): gcc vectorises these, not the casts.
  if (ACT == RELU) return y > T(0) ? T(1) : T(0);
  return y > T(0) ? T(1) : alpha;  // LRELU
}

struct Args {
  int64_t outer, size, inner;
  double alpha, gain, clamp;
};

// Calls body(begin, end, bias_index_of_first, bias_step) over contiguous runs, in parallel.
template <typename Body> void for_each_run(const Args& a, const Body& body) {
  if (a.inner == 1) {
    // Bias varies along the run: one run per outer row.
    at::parallel_for(0, a.outer, 1 + (1 << 14) / std::max<int64_t>(a.size, 1),
                     [&](int64_t o0, int64_t o1) {
                       for (int64_t o = o0; o < o1; ++o) body(o * a.size, (o + 1) * a.size, 0, 1);
                     });
  } else {
    // Bias constant along each run of `inner` elements.
    const int64_t runs = a.outer * a.size;
    at::parallel_for(0, runs, 1 + (1 << 14) / a.inner, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) body(r * a.inner, (r + 1) * a.inner, r % a.size, 0);
    });
  }
}

template <int ACT, typename T>
void forward_loop(const T* x, const T* b, T* y, const Args& a) {
  const T alpha = T(a.alpha), gain = T(a.gain), clamp = T(a.clamp);
  const bool has_clamp = a.clamp >= 0;
  for_each_run(a, [&](int64_t i0, int64_t i1, int64_t c, int64_t cstep) {
    const T* __restrict__ xr = x + i0;
    T* __restrict__ yr = y + i0;
    const int64_t n = i1 - i0;
    if (b == nullptr || cstep == 0) {
      const T bc = b ? b[c] : T(0);
      if (has_clamp) {
        for (int64_t j = 0; j < n; ++j)
          yr[j] = std::max(std::min(act_value<ACT>(xr[j] + bc, alpha) * gain, clamp), -clamp);
      } else {
        for (int64_t j = 0; j < n; ++j) yr[j] = act_value<ACT>(xr[j] + bc, alpha) * gain;
      }
    } else {
      if (has_clamp) {
        for (int64_t j = 0; j < n; ++j)
          yr[j] = std::max(std::min(act_value<ACT>(xr[j] + b[j], alpha) * gain, clamp), -clamp);
      } else {
        for (int64_t j = 0; j < n; ++j) yr[j] = act_value<ACT>(xr[j] + b[j], alpha) * gain;
      }
    }
  });
}

// out = g * gain * f^(order)(x + b) * [|y| < clamp]; with x absent, f' is read from y.
// The cases are split outside the element loops so that each loop stays branch-free.
template <int ACT, int ORDER, bool FROM_Y, bool CLAMP, typename T>
void grad_loop_impl(const T* g, const T* x, const T* b, const T* y, T* out, const Args& a) {
  const T alpha = T(a.alpha), gain = T(a.gain), clamp = T(a.clamp);
  for_each_run(a, [&](int64_t i0, int64_t i1, int64_t c, int64_t cstep) {
    const int64_t n = i1 - i0;
    const T* __restrict__ gr = g + i0;
    const T* __restrict__ xr = FROM_Y ? nullptr : x + i0;
    const T* __restrict__ yr = (FROM_Y || CLAMP) ? y + i0 : nullptr;
    T* __restrict__ outr = out + i0;
    const T bc = (b && cstep == 0) ? b[c] : T(0);
    const T* bv = (b && cstep != 0) ? b : nullptr;
    for (int64_t j = 0; j < n; ++j) {
      T d;
      if (FROM_Y) {
        d = act_grad1_from_y<ACT>(yr[j], alpha);
      } else {
        const T z = xr[j] + (bv ? bv[j] : bc);
        d = ORDER == 1 ? act_grad1<ACT>(z, alpha) : act_grad2<ACT>(z, alpha);
      }
      // Fold the clamp mask into the gain (one select, which vectorises).
      const T gm = CLAMP ? (std::max(yr[j], -yr[j]) < clamp ? gain : T(0)) : gain;
      outr[j] = gr[j] * gm * d;
    }
  });
}

template <int ACT, typename T>
void grad_loop(const T* g, const T* x, const T* b, const T* y, T* out, int order, const Args& a) {
  const bool clamp = a.clamp >= 0;
  if (x == nullptr) {
    if (clamp) grad_loop_impl<ACT, 1, true, true>(g, x, b, y, out, a);
    else grad_loop_impl<ACT, 1, true, false>(g, x, b, y, out, a);
  } else if (order == 1) {
    if (clamp) grad_loop_impl<ACT, 1, false, true>(g, x, b, y, out, a);
    else grad_loop_impl<ACT, 1, false, false>(g, x, b, y, out, a);
  } else {
    if (clamp) grad_loop_impl<ACT, 2, false, true>(g, x, b, y, out, a);
    else grad_loop_impl<ACT, 2, false, false>(g, x, b, y, out, a);
  }
}

#define NDA_DISPATCH_ACT(act, ...)                              \
  switch (act) {                                                \
    case LINEAR: { constexpr int A = LINEAR; __VA_ARGS__; break; }     \
    case RELU: { constexpr int A = RELU; __VA_ARGS__; break; }         \
    case LRELU: { constexpr int A = LRELU; __VA_ARGS__; break; }       \
    case TANH: { constexpr int A = TANH; __VA_ARGS__; break; }         \
    case SIGMOID: { constexpr int A = SIGMOID; __VA_ARGS__; break; }   \
    case ELU: { constexpr int A = ELU; __VA_ARGS__; break; }           \
    case SELU: { constexpr int A = SELU; __VA_ARGS__; break; }         \
    case SOFTPLUS: { constexpr int A = SOFTPLUS; __VA_ARGS__; break; } \
    case SWISH: { constexpr int A = SWISH; __VA_ARGS__; break; }       \
    default: TORCH_CHECK(false, "bias_act: unknown activation code ", act); \
  }

// Checks shared by forward and backward; returns the [outer, size, inner] view of x.
Args make_args(const at::Tensor& x, const at::Tensor& b, int64_t dim, double alpha, double gain,
               double clamp) {
  TORCH_CHECK(x.is_non_overlapping_and_dense(), "bias_act: x must be dense (contiguous or channels_last)");
  TORCH_CHECK(dim >= 0 && dim < x.dim(), "bias_act: dim out of range");
  if (b.numel() > 0) {
    TORCH_CHECK(b.dim() == 1 && b.size(0) == x.size(dim), "bias_act: b must have x.shape[dim] elements");
    TORCH_CHECK(b.scalar_type() == x.scalar_type() && b.device() == x.device(),
                "bias_act: b must match x in dtype and device");
  }
  Args a;
  a.size = x.size(dim);
  a.inner = x.stride(dim);
  a.outer = a.size * a.inner > 0 ? x.numel() / (a.size * a.inner) : 0;
  a.alpha = alpha;
  a.gain = gain;
  a.clamp = clamp;
  return a;
}

at::Tensor bias_act_cpu(const at::Tensor& x, const at::Tensor& b, int64_t dim, int64_t act,
                        double alpha, double gain, double clamp) {
  Args a = make_args(x, b, dim, alpha, gain, clamp);
  at::Tensor bc = b.numel() > 0 ? b.contiguous() : b;
  at::Tensor y = at::empty_like(x);
  if (x.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "nda_bias_act_cpu", [&] {
    const scalar_t* bp = bc.numel() > 0 ? bc.data_ptr<scalar_t>() : nullptr;
    NDA_DISPATCH_ACT(act, forward_loop<A, scalar_t>(x.data_ptr<scalar_t>(), bp, y.data_ptr<scalar_t>(), a));
  });
  return y;
}

at::Tensor bias_act_grad_cpu(const at::Tensor& g, const at::Tensor& x, const at::Tensor& b,
                             const at::Tensor& y, int64_t dim, int64_t act, double alpha,
                             double gain, double clamp, int64_t order) {
  TORCH_CHECK(order == 1 || order == 2, "bias_act_grad: order must be 1 or 2");
  const bool has_x = x.numel() > 0;
  const bool has_y = y.numel() > 0;
  TORCH_CHECK(has_x || (order == 1 && act <= LRELU), "bias_act_grad: this activation needs x");
  TORCH_CHECK(has_y || clamp < 0, "bias_act_grad: clamping needs y");
  TORCH_CHECK(g.is_non_overlapping_and_dense(), "bias_act_grad: grad must be dense");
  for (const at::Tensor* t : {&x, &y}) {
    if (t->numel() > 0) {
      TORCH_CHECK(t->sizes() == g.sizes() && t->strides() == g.strides() &&
                      t->scalar_type() == g.scalar_type(),
                  "bias_act_grad: x and y must match grad in shape, strides and dtype");
    }
  }
  Args a = make_args(g, b, dim, alpha, gain, clamp);
  at::Tensor bc = b.numel() > 0 ? b.contiguous() : b;
  at::Tensor out = at::empty_like(g);
  if (g.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "nda_bias_act_grad_cpu", [&] {
    const scalar_t* xp = has_x ? x.data_ptr<scalar_t>() : nullptr;
    const scalar_t* yp = has_y ? y.data_ptr<scalar_t>() : nullptr;
    const scalar_t* bp = bc.numel() > 0 ? bc.data_ptr<scalar_t>() : nullptr;
    if (!has_x && act > LRELU) return;  // unreachable: checked above
    NDA_DISPATCH_ACT(act, grad_loop<A, scalar_t>(g.data_ptr<scalar_t>(), xp, bp, yp,
                                                 out.data_ptr<scalar_t>(), (int)order, a));
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(nda_bias_act, m) {
  // Empty tensors stand for "absent" (portable across torch versions, unlike Tensor?).
  m.def("bias_act(Tensor x, Tensor b, int dim, int act, float alpha, float gain, float clamp) -> Tensor");
  m.def("bias_act_grad(Tensor g, Tensor x, Tensor b, Tensor y, int dim, int act, float alpha, "
        "float gain, float clamp, int order) -> Tensor");
}

TORCH_LIBRARY_IMPL(nda_bias_act, CPU, m) {
  m.impl("bias_act", &bias_act_cpu);
  m.impl("bias_act_grad", &bias_act_grad_cpu);
}

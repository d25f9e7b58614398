// Registers the CUDA implementation of the nda_bias_act ops (schema in bias_act.cpp).
// Light headers: no <ATen/cuda/CUDAContext.h> (it pulls in cusparse.h).

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cuda_runtime.h>

cudaError_t nda_bias_act_cuda_launch(int dtype, int mode, const void* x, const void* b,
                                     const void* y, const void* g, void* out, int64_t n,
                                     int64_t size, int64_t inner, int act, double alpha, double gain,
                                     double clamp, cudaStream_t stream);

namespace {

int dtype_code(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return 0;
    case at::kDouble: return 1;
    case at::kHalf: return 2;
    default: TORCH_CHECK(false, "bias_act (CUDA): unsupported dtype ", t.scalar_type());
  }
  return 0;
}

const void* ptr_or_null(const at::Tensor& t) { return t.numel() > 0 ? t.data_ptr() : nullptr; }

void check_like(const at::Tensor& t, const at::Tensor& ref, const char* what) {
  if (t.numel() == 0) return;
  TORCH_CHECK(t.is_cuda() && t.device() == ref.device(), "bias_act (CUDA): ", what, " must be on ref's device");
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), "bias_act (CUDA): ", what, " must match dtype");
}

at::Tensor run(int mode, const at::Tensor& g, const at::Tensor& x, const at::Tensor& b,
               const at::Tensor& y, const at::Tensor& ref, int64_t dim, int64_t act, double alpha,
               double gain, double clamp) {
  TORCH_CHECK(ref.is_non_overlapping_and_dense(), "bias_act (CUDA): input must be dense");
  TORCH_CHECK(dim >= 0 && dim < ref.dim(), "bias_act (CUDA): dim out of range");
  check_like(x, ref, "x");
  check_like(y, ref, "y");
  check_like(g, ref, "grad");
  check_like(b, ref, "b");
  if (b.numel() > 0) TORCH_CHECK(b.dim() == 1 && b.size(0) == ref.size(dim), "bias_act (CUDA): bad bias shape");
  for (const at::Tensor* t : {&x, &y, &g}) {
    if (t->numel() > 0) TORCH_CHECK(t->strides() == ref.strides() && t->sizes() == ref.sizes(),
                                    "bias_act (CUDA): tensors must share shape and strides");
  }
  c10::cuda::CUDAGuard guard(ref.device());
  at::Tensor bc = b.numel() > 0 ? b.contiguous() : b;
  at::Tensor out = at::empty_like(ref);
  if (ref.numel() == 0) return out;
  const int64_t size = ref.size(dim), inner = ref.stride(dim);
  cudaError_t err = nda_bias_act_cuda_launch(
      dtype_code(ref), mode, ptr_or_null(x), ptr_or_null(bc), ptr_or_null(y), ptr_or_null(g),
      out.data_ptr(), ref.numel(), size, inner, (int)act, alpha, gain, clamp,
      c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "bias_act (CUDA): kernel launch failed: ", cudaGetErrorString(err));
  return out;
}

at::Tensor bias_act_cuda(const at::Tensor& x, const at::Tensor& b, int64_t dim, int64_t act,
                         double alpha, double gain, double clamp) {
  at::Tensor empty = at::empty({0}, x.options());
  return run(0, empty, x, b, empty, x, dim, act, alpha, gain, clamp);
}

at::Tensor bias_act_grad_cuda(const at::Tensor& g, const at::Tensor& x, const at::Tensor& b,
                              const at::Tensor& y, int64_t dim, int64_t act, double alpha,
                              double gain, double clamp, int64_t order) {
  TORCH_CHECK(order == 1 || order == 2, "bias_act_grad (CUDA): order must be 1 or 2");
  TORCH_CHECK(x.numel() > 0 || (order == 1 && act <= 2), "bias_act_grad (CUDA): this activation needs x");
  TORCH_CHECK(y.numel() > 0 || clamp < 0, "bias_act_grad (CUDA): clamping needs y");
  return run((int)order, g, x, b, y, g, dim, act, alpha, gain, clamp);
}

}  // namespace

TORCH_LIBRARY_IMPL(nda_bias_act, CUDA, m) {
  m.impl("bias_act", &bias_act_cuda);
  m.impl("bias_act_grad", &bias_act_grad_cuda);
}

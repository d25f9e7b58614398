// Registers the CUDA implementation of nda_upfirdn2d::upfirdn2d (schema in upfirdn2d.cpp).
// Light headers: no <ATen/cuda/CUDAContext.h> (it pulls in cusparse.h).

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cuda_runtime.h>

cudaError_t nda_upfirdn2d_cuda_launch(int dtype, const void* x, const void* w, void* out,
                                      int64_t planes, int64_t ih, int64_t iw, int64_t oh,
                                      int64_t ow, int fh, int fw, int upx, int upy, int downx,
                                      int downy, int padx0, int pady0, cudaStream_t stream);

namespace {

at::Tensor upfirdn2d_cuda(const at::Tensor& x_in, const at::Tensor& f, int64_t upx, int64_t upy,
                          int64_t downx, int64_t downy, int64_t padx0, int64_t padx1,
                          int64_t pady0, int64_t pady1, bool flip, double gain) {
  TORCH_CHECK(x_in.is_cuda() && x_in.dim() == 4, "upfirdn2d (CUDA): x must be a 4-D CUDA tensor");
  TORCH_CHECK(f.dim() == 2 && f.size(0) > 0 && f.size(1) > 0, "upfirdn2d (CUDA): f must be a non-empty 2-D filter");
  TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "upfirdn2d (CUDA): up and down must be >= 1");
  int dtype;
  switch (x_in.scalar_type()) {
    case at::kFloat: dtype = 0; break;
    case at::kDouble: dtype = 1; break;
    case at::kHalf: dtype = 2; break;
    default: TORCH_CHECK(false, "upfirdn2d (CUDA): unsupported dtype ", x_in.scalar_type());
  }
  c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const int64_t n = x.size(0), c = x.size(1), ih = x.size(2), iw = x.size(3);
  const int64_t fh = f.size(0), fw = f.size(1);
  TORCH_CHECK(ih * upy + pady0 + pady1 >= fh && iw * upx + padx0 + padx1 >= fw,
              "upfirdn2d (CUDA): padded input is smaller than the filter");
  const int64_t oh = (ih * upy + pady0 + pady1 - fh) / downy + 1;
  const int64_t ow = (iw * upx + padx0 + padx1 - fw) / downx + 1;
  at::Tensor out = at::empty({n, c, oh, ow}, x.options());
  if (out.numel() == 0) return out;
  at::Tensor w = f.to(x.device(), dtype == 1 ? at::kDouble : at::kFloat);
  if (!flip) w = w.flip({0, 1});
  w = (w * gain).contiguous();
  cudaError_t err = nda_upfirdn2d_cuda_launch(
      dtype, x.data_ptr(), w.data_ptr(), out.data_ptr(), n * c, ih, iw, oh, ow, (int)fh, (int)fw,
      (int)upx, (int)upy, (int)downx, (int)downy, (int)padx0, (int)pady0,
      c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "upfirdn2d (CUDA): kernel launch failed: ", cudaGetErrorString(err));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(nda_upfirdn2d, CUDA, m) { m.impl("upfirdn2d", &upfirdn2d_cuda); }

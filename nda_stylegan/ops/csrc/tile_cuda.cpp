// Registers the CUDA implementation of nda_tile::apply_plan (schema in tile_cpu.cpp, kernels in
// tile_cuda_kernel.cu). Light headers only: <ATen/cuda/CUDAContext.h> would pull in cuSPARSE.

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>

cudaError_t nda_tile_cuda_launch(int dtype, const void* in, void* out, const int64_t* grid, const int64_t* tiles,
                                 int64_t n_tiles, const int64_t* box, const int64_t* blend_src,
                                 const float* blend_w, void* fill, int32_t* flags, int64_t n, int64_t c,
                                 int64_t h, int64_t w, cudaStream_t stream);

namespace {

at::Tensor plan_tensor(const at::Tensor& t, const at::Tensor& images, at::ScalarType dtype, const char* name) {
  TORCH_CHECK_VALUE(t.device() == images.device(), "plan tensor ", name, " must be on ", images.device(),
                    " like the images, got ", t.device());
  TORCH_CHECK_VALUE(t.scalar_type() == dtype, "plan tensor ", name, " must be ", dtype, ", got ",
                    t.scalar_type());
  return t.contiguous();
}

int dtype_code(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return 0;
    case at::kDouble: return 1;
    case at::kHalf: return 2;
    case at::kBFloat16: return 3;
    default:
      TORCH_CHECK_VALUE(false, "tile kernel supports float32, float64, float16 and bfloat16 images, got ", dtype);
  }
  return -1;
}

// The plan's contents are validated by the kernel itself (flag bit 4 of a bad image: reading
// them here would need a device-to-host copy); the kernels clamp every index they use.
std::tuple<at::Tensor, at::Tensor> apply_plan_cuda(const at::Tensor& images_in, const at::Tensor& grid_in,
                                                   const at::Tensor& tiles_in, const at::Tensor& box_in,
                                                   const at::Tensor& blend_src_in,
                                                   const at::Tensor& blend_w_in) {
  TORCH_CHECK_VALUE(images_in.dim() == 4, "images must be N, C, H, W; got ", images_in.dim(), " dims");
  const int code = dtype_code(images_in.scalar_type());
  c10::cuda::CUDAGuard guard(images_in.device());
  const at::Tensor images = images_in.contiguous();  // also turns channels_last into NCHW
  const int64_t n = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3);
  const at::Tensor grid = plan_tensor(grid_in, images, at::kLong, "grid");
  const at::Tensor tiles = plan_tensor(tiles_in, images, at::kLong, "tiles");
  const at::Tensor box = plan_tensor(box_in, images, at::kLong, "box");
  const at::Tensor blend_src = plan_tensor(blend_src_in, images, at::kLong, "blend_src");
  const at::Tensor blend_w = plan_tensor(blend_w_in, images, at::kFloat, "blend_w");
  TORCH_CHECK_VALUE(grid.dim() == 2 && grid.size(0) == n, "plan is for a batch of ", grid.size(0),
                    " images but got ", n);
  TORCH_CHECK_VALUE(grid.size(1) == 2 && tiles.dim() == 3 && tiles.size(0) == n && tiles.size(1) >= 1 &&
                        tiles.size(2) == 3 && box.dim() == 2 && box.size(0) == n && box.size(1) == 6 &&
                        blend_src.numel() == n && blend_w.numel() == n,
                    "plan tensors have the wrong shapes for a batch of ", n, " images");
  TORCH_CHECK_VALUE(n * c <= std::numeric_limits<int32_t>::max() &&
                        h * w / 256 < std::numeric_limits<int32_t>::max(),
                    "batch too large for the tile kernel: split it");

  at::Tensor out = at::empty({n, c, h, w}, images.options());
  at::Tensor flags = at::zeros({n}, images.options().dtype(at::kInt));
  if (n * c * h * w == 0) return {out, flags};
  const auto op_dtype = images.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor fill = at::empty({n * c}, images.options().dtype(op_dtype));
  C10_CUDA_CHECK(nda_tile_cuda_launch(code, images.data_ptr(), out.data_ptr(), grid.data_ptr<int64_t>(),
                                      tiles.data_ptr<int64_t>(), tiles.size(1), box.data_ptr<int64_t>(),
                                      blend_src.data_ptr<int64_t>(), blend_w.data_ptr<float>(), fill.data_ptr(),
                                      flags.data_ptr<int32_t>(), n, c, h, w,
                                      c10::cuda::getCurrentCUDAStream().stream()));
  return {out, flags};
}

}  // namespace

TORCH_LIBRARY_IMPL(nda_tile, CUDA, m) {
  m.impl("apply_plan", &apply_plan_cuda);
}

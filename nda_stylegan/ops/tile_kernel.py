"""Loading and calling the fused TilePlan kernel (C++ on CPU, CUDA on GPU).

The library ``nda_tile`` is built on first use through ``nda_stylegan.ops.build`` (cached per
source hash, memoised per process: a failed build warns once and is never retried).
"""

import os

import torch

from . import build

_CSRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")
LIBRARY = "nda_tile"
CPU_SOURCES = (os.path.join(_CSRC, "tile_cpu.cpp"),)
CUDA_SOURCES = (os.path.join(_CSRC, "tile_cuda.cpp"), os.path.join(_CSRC, "tile_cuda_kernel.cu"))
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


_built = {}  # device type -> bool: whether the library (with its kernels for it) loaded


def unsupported_reason(images):
    """Why the kernel cannot apply a plan to ``images`` (None when it can). May build it.

    Called on every apply, so the common case costs a dict lookup and one environment read.
    """
    kind = "cpu" if images.is_cpu else images.device.type
    if images.dtype not in DTYPES:
        return "the tile kernel supports float32, float64, float16 and bfloat16 images, not %s" % images.dtype
    if kind not in ("cpu", "cuda"):
        return "the tile kernel runs on cpu and cuda devices, not %s" % kind
    if os.environ.get("NDA_STYLEGAN_OPS") is not None and build.ops_mode() == "reference":
        return "NDA_STYLEGAN_OPS=reference disables the tile kernel"
    ok = _built.get(kind)
    if ok is None:
        # With a GPU visible the library is built with its CUDA sources, so cuda images are covered.
        ok = _built[kind] = build.load_op_library(LIBRARY, CPU_SOURCES, CUDA_SOURCES)
    if not ok:
        return "the tile kernel failed to build (see the warning above)"
    return None


_op = []  # the op's overload, looked up once (torch.ops resolves two names per call)


def apply_plan_kernel(images, plan):
    """Run the kernel (call ``unsupported_reason`` first). Returns ``(out, flags)``."""
    if not _op:
        _op.append(torch.ops.nda_tile.apply_plan.default)
    return _op[0](images, plan.grid, plan.tiles, plan.box, plan.blend_src, plan.blend_w)

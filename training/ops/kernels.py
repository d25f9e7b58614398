"""Loading the trainer's op libraries through the project's one build mechanism.

``nda_stylegan`` is imported lazily, only when a kernel is first wanted: a network pickled by
the trainer must unpickle (and run, on the reference path) in a process without it.
"""

import functools
import os

import torch

CSRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")
IMPLS = ("auto", "reference", "kernel")


def _sources(names):
    return [os.path.join(CSRC, n) for n in names]


def op_sources(op):
    """``(cpu_sources, cuda_sources)`` of op library ``op`` (``"bias_act"`` or ``"upfirdn2d"``)."""
    return _sources(["%s.cpp" % op]), _sources(["%s_cuda.cpp" % op, "%s.cu" % op])


def check_impl(impl):
    if impl not in IMPLS:
        raise ValueError("impl=%r is not known; use one of: %s" % (impl, ", ".join(IMPLS)))


_ready = {}  # (op, cuda available) -> bool, once the build was tried


@functools.lru_cache(maxsize=None)
def _cuda_available():
    # Asked once per process: torch.cuda.is_available() costs microseconds, and ops run per layer.
    return torch.cuda.is_available()


def kernels_ready(op):
    """True when op library ``op`` is built and loaded (False under NDA_STYLEGAN_OPS=reference,
    after a failed build in ``auto`` mode, or when nda_stylegan cannot be imported)."""
    if os.environ.get("NDA_STYLEGAN_OPS", "").strip().lower() == "reference":
        return False  # checked on every call: the switch may change at run time
    key = (op, _cuda_available())
    if key not in _ready:
        try:
            from nda_stylegan.ops.build import load_op_library
        except ImportError:
            _ready[key] = False
            return False
        cpu, cuda = op_sources(op)
        ready = load_op_library("nda_" + op, cpu, cuda)
        if not ready and os.environ.get("NDA_STYLEGAN_OPS", "").strip().lower() == "reference":
            return False  # not a verdict on the build: ask again when the switch is off
        _ready[key] = ready
    return _ready[key]


def use_kernel(op, impl, tensor, dtypes):
    """Decide between kernel and reference for one call.

    ``impl="kernel"`` insists (a clear error when the kernel cannot serve this input);
    ``"auto"`` takes the kernel when it serves this device and dtype.
    """
    check_impl(impl)
    if impl == "reference":
        return False
    # dtypes: {"cpu": (...), "cuda": (...)}, the dtypes each kernel is compiled for.
    device_ok = tensor.device.type in ("cpu", "cuda")  # a CUDA tensor exists only where CUDA works
    dtype_ok = tensor.dtype in dtypes.get(tensor.device.type, ())
    if impl == "kernel":
        if not device_ok or not dtype_ok:
            raise ValueError("%s impl='kernel' does not support %s tensors on %s; use impl='auto'"
                             % (op, tensor.dtype, tensor.device.type))
        if not kernels_ready(op):
            raise ValueError("%s impl='kernel': the kernel library is unavailable (build failed or "
                             "NDA_STYLEGAN_OPS=reference); use impl='auto'" % op)
        return True
    if not device_ok or not dtype_ok:
        return False
    return kernels_ready(op)

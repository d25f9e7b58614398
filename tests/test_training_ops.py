"""The trainer's custom ops: C++ kernels against their pure-PyTorch references (values, first-
and second-order gradients), the reference's own semantics, the impl switch, and a CUDA
compile check of the GPU sources."""

import itertools
import math
import threading

import pytest
import torch
import torch.nn.functional as F

from training.ops import kernels
from training.ops.bias_act import ACTIVATIONS, bias_act
from training.ops.conv2d_resample import conv2d_resample
from training.ops.upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d
from kernel_checks import (UPFIRDN2D_GRADIENT_CASES, bias_act_gradients, r1_double_backward, upfirdn2d_grid,
                           upfirdn2d_gradients)
from trainer_helpers import one_thread, require_kernels, seeded_randn

one_thread_per_module = pytest.fixture(scope="module", autouse=True)(one_thread)  # tiny tensors: one thread


@pytest.fixture(scope="module", autouse=True)
def built_kernels():
    require_kernels("bias_act", "upfirdn2d")


# ---------------------------------------------------------------- bias_act

@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_bias_act_kernel_matches_reference_values(act):
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        for shape, dim, layout in (([2, 5, 4, 3], 1, "nchw"), ([2, 5, 4, 3], 1, "channels_last"),
                                   ([6, 7], 1, "nchw"), ([5, 3], 0, "nchw")):
            x = seeded_randn(*shape, dtype=dtype) * 3
            if layout == "channels_last":
                x = x.to(memory_format=torch.channels_last)
            b = seeded_randn(shape[dim], dtype=dtype, seed=1)
            for clamp, gain, alpha in ((None, None, None), (0.8, 1.7, 0.1)):
                out = bias_act(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp, impl="kernel")
                ref = bias_act(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp, impl="reference")
                assert out.shape == ref.shape
                torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
            out = bias_act(x, None, dim=dim, act=act, impl="kernel")
            torch.testing.assert_close(out, bias_act(x, None, dim=dim, act=act, impl="reference"), rtol=tol, atol=tol)


def test_bias_act_reference_semantics():
    x = torch.tensor([[-2.0, 0.5], [1.0, -0.25]])
    b = torch.tensor([0.5, -1.0])
    # lrelu of (x + b) with slope 0.2 and gain sqrt(2), then clamped to [-1, 1].
    z = torch.tensor([[-1.5, -0.5], [1.5, -1.25]])
    expected = torch.where(z > 0, z, 0.2 * z) * math.sqrt(2)
    expected = expected.clamp(-1, 1)
    for impl in ("reference", "kernel"):
        torch.testing.assert_close(bias_act(x, b, act="lrelu", clamp=1, impl=impl), expected)


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
@pytest.mark.parametrize("clamp", [None, 0.9])
def test_bias_act_kernel_gradients_first_and_second_order(act, clamp):
    bias_act_gradients("cpu", act, clamp)


def test_bias_act_r1_style_double_backward_matches_reference():
    r1_double_backward("cpu")


def test_bias_act_impl_switch(monkeypatch):
    x = torch.randn(8, 64, 8, 8)
    b = torch.randn(64)
    y = bias_act(x, b, act="lrelu", impl="auto").requires_grad_(False)
    assert "BiasActKernel" in type(bias_act(x.requires_grad_(True), b, act="lrelu").grad_fn).__name__
    monkeypatch.setenv("NDA_STYLEGAN_OPS", "reference")
    fn = bias_act(x, b, act="lrelu").grad_fn
    assert "BiasActKernel" not in type(fn).__name__
    with pytest.raises(ValueError, match="unavailable"):
        bias_act(x, b, act="lrelu", impl="kernel")
    monkeypatch.delenv("NDA_STYLEGAN_OPS")
    torch.testing.assert_close(bias_act(x, b, act="lrelu", impl="reference"), y)
    # Tiny CPU inputs and dtypes without a CPU kernel fall back to the reference under "auto".
    small = torch.randn(4, 8, requires_grad=True)
    assert "BiasActKernel" not in type(bias_act(small, None, act="lrelu").grad_fn).__name__
    half = torch.randn(8, 64, 8, 8, dtype=torch.bfloat16)
    assert bias_act(half, None, act="lrelu").dtype == torch.bfloat16
    with pytest.raises(ValueError, match="does not support"):
        bias_act(half, None, act="lrelu", impl="kernel")


def test_bias_act_bad_input_is_a_clear_error():
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="not a known activation"):
        bias_act(x, act="gelu-ish")
    with pytest.raises(ValueError, match="b must be 1-D"):
        bias_act(x, torch.zeros(4))
    with pytest.raises(ValueError, match="clamp"):
        bias_act(x, clamp=-1)
    with pytest.raises(ValueError, match="dim"):
        bias_act(x, dim=4)
    with pytest.raises(ValueError, match="impl"):
        bias_act(x, impl="fast")


# ---------------------------------------------------------------- upfirdn2d



def test_upfirdn2d_kernel_matches_reference_over_parameter_grid():
    checked = upfirdn2d_grid("cpu", tol=1e-12)
    assert checked > 400
    # float32 and a channels_last input take the same path.
    x32 = seeded_randn(2, 4, 9, 9, dtype=torch.float32).to(memory_format=torch.channels_last)
    f = setup_filter([1, 3, 3, 1])
    torch.testing.assert_close(upfirdn2d(x32, f, up=2, padding=[2, 1, 2, 1], gain=4, impl="kernel"),
                               upfirdn2d(x32, f, up=2, padding=[2, 1, 2, 1], gain=4, impl="reference"))


@pytest.mark.parametrize("up,down,pad,taps", UPFIRDN2D_GRADIENT_CASES)
def test_upfirdn2d_kernel_gradients_first_and_second_order(up, down, pad, taps):
    upfirdn2d_gradients("cpu", up, down, pad, taps, tol=1e-12)


def test_upfirdn2d_down_past_the_padded_extent_matches_the_reference():
    # The CPU kernel keeps a buffer per phase of down: a huge factor (one output sample per row)
    # ran out of memory before the wrapper capped it at the padded extent.
    x = seeded_randn(2, 3, 16, 16).requires_grad_(True)
    f = seeded_randn(3, 3, seed=2)
    for kw in (dict(down=(1_200_000_000, 1)), dict(down=(1, 1_200_000_000), padding=(1, 2, 3, 0)),
               dict(up=2, down=(1_100_000_000, 3), padding=1), dict(down=15), dict(down=14)):
        out = upfirdn2d(x, f, impl="kernel", **kw)
        ref = upfirdn2d(x, f, impl="reference", **kw)
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
        g = torch.randn_like(out)
        torch.testing.assert_close(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(ref, x, g)[0],
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", ["reference", "kernel"])
def test_upfirdn2d_semantics_impulse_response_and_helpers(impl):
    # An impulse comes out as the filter itself (true convolution), or flipped with flip_filter.
    f = setup_filter([[1.0, 2.0], [3.0, 4.0], [5.0, 7.0]], normalize=False)
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 1
    y = upfirdn2d(x, f, padding=[1, 0, 2, 0], impl=impl)  # fw=2, fh=3: output 5x5, impulse at the centre
    assert y.shape == (1, 1, 5, 5)
    torch.testing.assert_close(y[0, 0, 2:5, 2:4], f)
    y = upfirdn2d(x, f, padding=[0, 1, 0, 2], flip_filter=True, impl=impl)
    torch.testing.assert_close(y[0, 0, 0:3, 1:3], f.flip([0, 1]))
    # Zero insertion: up=2 with a 1x1 filter puts x on the even pixels.
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    y = upfirdn2d(x, None, up=2, impl=impl)
    assert y.shape == (1, 1, 4, 6)
    torch.testing.assert_close(y[0, 0, ::2, ::2], x[0, 0])
    assert y[0, 0, 1::2].abs().sum() == 0 and y[0, 0, :, 1::2].abs().sum() == 0
    # Helpers keep a constant image constant and have the expected sizes.
    c = torch.full([2, 3, 8, 8], 2.0)
    f = setup_filter([1, 3, 3, 1])
    assert upsample2d(c, f, impl=impl).shape == (2, 3, 16, 16)
    assert downsample2d(c, f, impl=impl).shape == (2, 3, 4, 4)
    assert filter2d(c, f, impl=impl).shape == (2, 3, 8, 8)
    torch.testing.assert_close(upsample2d(c, f, impl=impl)[:, :, 2:-2, 2:-2], torch.full([2, 3, 12, 12], 2.0))
    torch.testing.assert_close(downsample2d(c, f, impl=impl)[:, :, 1:-1, 1:-1], torch.full([2, 3, 2, 2], 2.0))
    torch.testing.assert_close(filter2d(c, f, impl=impl)[:, :, 2:-2, 2:-2], torch.full([2, 3, 4, 4], 2.0))


def test_setup_filter():
    f = setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and f.dtype == torch.float32
    torch.testing.assert_close(f.sum(), torch.tensor(1.0))
    torch.testing.assert_close(f, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64)
    assert setup_filter([1] * 8).shape == (8,)  # long 1-D filters stay separable
    torch.testing.assert_close(setup_filter([1, 2, 1], gain=4).sum(), torch.tensor(4.0))
    with pytest.raises(ValueError, match="sum to 0"):
        setup_filter([1, -1])


def test_upfirdn2d_bad_input_is_a_clear_error():
    x = torch.randn(1, 2, 4, 4)
    f = setup_filter([1, 3, 3, 1])
    with pytest.raises(ValueError, match="4-D"):
        upfirdn2d(x[0], f)
    with pytest.raises(ValueError, match="up and down"):
        upfirdn2d(x, f, up=0)
    with pytest.raises(ValueError, match="padding"):
        upfirdn2d(x, f, padding=[1, 2, 3])
    with pytest.raises(ValueError, match="smaller than the filter"):
        upfirdn2d(x, f, padding=-2)


# ---------------------------------------------------------------- conv2d_resample

def _slow_conv2d_resample(x, w, f, up, down, pad, groups, flip_weight):
    """The definition in conv2d_resample's docstring, computed the direct (expensive) way."""
    fw = f.shape[-1]
    wc = w if flip_weight else w.flip([2, 3])
    px0, px1, py0, py1 = pad if isinstance(pad, list) else [pad] * 4
    if up > 1:
        q0, q1 = (fw + up - 1) // 2, (fw - up) // 2
        u = upfirdn2d(x, None, up=up, impl="reference")
        c = F.conv2d(F.pad(u, [px0 + q0, px1 + q1, py0 + q0, py1 + q1]), wc, groups=groups)
        return upfirdn2d(c, f, gain=up * up, impl="reference")
    if down > 1:
        q0, q1 = (fw - down + 1) // 2, (fw - down) // 2
        c = F.conv2d(F.pad(x, [px0 + q0, px1 + q1, py0 + q0, py1 + q1]), wc, groups=groups)
        return upfirdn2d(c, f, down=down, impl="reference")
    return F.conv2d(F.pad(x, [px0, px1, py0, py1]), wc, groups=groups)


def test_conv2d_resample_matches_its_definition():
    f = setup_filter([1, 3, 3, 1]).double()
    for k, (up, down), pad, flip, groups, impl in itertools.product(
            [1, 3], [(1, 1), (2, 1), (1, 2)], [0, 1, [1, 0, 2, 1]], [True, False], [1, 2],
            ["kernel", "reference"]):
        x = seeded_randn(2, 4, 6, 5)
        w = seeded_randn(6, 4 // groups, k, k, seed=1)
        fast = conv2d_resample(x, w, f, up, down, pad, groups, flip, impl=impl)
        slow = _slow_conv2d_resample(x, w, f, up, down, pad, groups, flip)
        assert fast.shape == slow.shape, (k, up, down, pad)
        torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="both"):
        conv2d_resample(x, w, f, up=2, down=2)
    with pytest.raises(ValueError, match="channels"):
        conv2d_resample(x[:, :3], w, f)


# ---------------------------------------------------------------- CUDA sources

def test_cuda_sources_compile():
    from nda_stylegan.ops.build import OpBuildError, compile_in_subprocess, find_cuda_home
    from torch.utils import cpp_extension

    if torch.version.cuda is None or not hasattr(cpp_extension, "CUDA_HOME"):
        pytest.skip("this torch build (%s) has no CUDA support, so it cannot compile .cu files" % torch.__version__)
    if find_cuda_home() is None:
        pytest.skip("no CUDA toolkit found (nvcc not on PATH and CUDA_HOME unset)")
    errors = {}

    def build(op):
        cpu, cuda = kernels.op_sources(op)
        try:
            compile_in_subprocess("nda_" + op + "_compile_check", cpu + cuda, cuda=True)
        except OpBuildError as exc:
            errors[op] = str(exc)

    # Both libraries at once: each nvcc + g++ run is mostly single-threaded.
    threads = [threading.Thread(target=build, args=(op,)) for op in ("bias_act", "upfirdn2d")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors

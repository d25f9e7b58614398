"""upfirdn2d's CPU kernel paths against the pure-PyTorch reference: which path a call takes
(rank-one taps -> the separable path), values and gradients of the separable path over up,
down, padding / cropping, flip, gain, odd sizes and both dtypes, the shapes the networks call,
and threads splitting the planes."""

import itertools

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from training.ops.upfirdn2d import setup_filter, upfirdn2d
from trainer_helpers import one_thread, require_kernels, seeded_randn

one_thread_per_module = pytest.fixture(scope="module", autouse=True)(one_thread)  # tiny tensors: one thread


@pytest.fixture(scope="module", autouse=True)
def built_kernel():
    require_kernels("upfirdn2d")


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _pad4(p):
    return [p] * 4 if isinstance(p, int) else list(p)


def cpu_path(x, f, up=1, down=1, padding=0, flip=False, gain=1.0):
    """The path the CPU kernel takes for this call: "separable", "padded" or "general"."""
    (upx, upy), (downx, downy) = _pair(up), _pair(down)
    return torch.ops.nda_upfirdn2d.cpu_path(x, f, upx, upy, downx, downy, *_pad4(padding), flip, float(gain))


def _outer(col, row, dtype):
    col, row = torch.tensor(col, dtype=dtype), torch.tensor(row, dtype=dtype)
    return torch.outer(col, row) / (col.sum() * row.sum())


# Rank-one (outer product) taps, 2-D, made in the data's dtype: the kernel should split every one.
RANK_ONE = {
    "stylegan 4x4": lambda dtype: setup_filter([1, 3, 3, 1]).to(dtype),  # exact in float32
    "binomial 3x3": lambda dtype: setup_filter([1, 2, 1]).to(dtype),
    "asymmetric 3x5": lambda dtype: _outer([1.0, 2.0, 5.0], [3.0, -1.0, 4.0, 1.0, 5.0], dtype),
    "8x8 taller than the row ring": lambda dtype: _outer([1, 2, 3, 4, 4, 3, 2, 1], [1, 2, 3, 4, 4, 3, 2, 1], dtype),
    "5x2 tall": lambda dtype: _outer([1.0, 4.0, 6.0, 4.0, 1.0], [2.0, 1.0], dtype),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rank_one_taps_take_the_separable_path(dtype):
    x = torch.zeros(1, 1, 9, 9, dtype=dtype)
    for (name, make), flip, (up, down, pad) in itertools.product(
            RANK_ONE.items(), [False, True],
            [(1, 1, 1), (1, 1, 2), (1, 2, 1), (2, 1, [2, 1, 2, 1]), ([2, 1], [1, 3], [3, -1, 0, 2])]):
        f = make(dtype)
        assert cpu_path(x, f, up, down, pad, flip, gain=4) == "separable", (name, up, down, pad, flip)


def test_other_taps_take_the_2d_paths():
    x = torch.zeros(1, 1, 9, 9)
    full_rank = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 7.0]])
    assert cpu_path(x, full_rank) == "padded"
    assert cpu_path(x, full_rank, down=2) == "padded"
    assert cpu_path(x, full_rank, up=2) == "general"
    # Off rank one by far more than rounding: not split.
    nearly = setup_filter([1, 3, 3, 1]).clone()
    nearly[1, 2] *= 1.001
    assert cpu_path(x, nearly) == "padded"
    # One tap along an axis: nothing to split.
    assert cpu_path(x, torch.ones(1, 4) / 4) == "padded"
    assert cpu_path(x, torch.zeros(4, 4)) == "padded"


def test_split_tolerance_follows_the_data_precision():
    # Outer product rounded to float32: rank one to float32 precision only. float32 data may take
    # the split (its error is float32 rounding); float64 data must not (it would lose digits).
    f = _outer([1.0, 2.0, 5.0], [3.0, -1.0, 4.0, 1.0, 5.0], torch.float32)
    assert cpu_path(torch.zeros(1, 1, 9, 9), f) == "separable"
    assert cpu_path(torch.zeros(1, 1, 9, 9, dtype=torch.float64), f) == "padded"


def _check_values(x, f, up, down, pad, flip, gain, tol):
    try:
        ref = upfirdn2d(x, f, up, down, pad, flip, gain=gain, impl="reference")
    except ValueError:
        return False  # padded size smaller than the filter: refused the same way by both
    assert cpu_path(x, f, up, down, pad, flip, gain) == "separable", (up, down, pad)
    out = upfirdn2d(x, f, up, down, pad, flip, gain=gain, impl="kernel")
    assert out.shape == ref.shape, (up, down, pad)
    torch.testing.assert_close(out, ref, **tol)
    return True


@pytest.mark.parametrize("name", sorted(RANK_ONE))
def test_separable_path_matches_reference_float64(name):
    f = RANK_ONE[name](torch.float64)
    # Odd sizes; the width 37 gives rows of whole wide blocks, single vectors and a partial one.
    checked = 0
    for shape, up, down, pad, flip in itertools.product(
            [(2, 3, 7, 6), (1, 2, 5, 37)], [1, 2, 3, [2, 1]], [1, 2, 3, [1, 2]],
            [0, 2, [1, -1, 2, 0], [-2, 3, 4, -1]], [False, True]):
        x = seeded_randn(*shape)
        checked += _check_values(x, f, up, down, pad, flip, 1.5, dict(rtol=1e-12, atol=1e-12))
    assert checked > 150


def test_separable_path_matches_reference_float32():
    f = setup_filter([1, 3, 3, 1])
    for shape, up, down, pad, flip in itertools.product(
            [(2, 3, 9, 9), (1, 2, 6, 41)], [1, 2, [1, 2]], [1, 2, [2, 1]], [1, 2, [2, 1, 2, 1], [0, -1, 3, 1]],
            [False, True]):
        x = seeded_randn(*shape, dtype=torch.float32)
        _check_values(x, f, up, down, pad, flip, 4.0, dict(rtol=1e-5, atol=1e-5))


# The calls the 32x32 networks make (cpu preset), at a small batch: G's up-filter after its x2
# transposed convolution and its rgb upsample, D's down-filter before a stride-2 convolution and
# its 1x1 skip downsample.
NETWORK_CALLS = {
    "G up-filter": ([2, 4, 33, 33], dict(padding=1, gain=4)),
    "D down-filter": ([2, 4, 32, 32], dict(padding=2)),
    "D skip downsample": ([2, 4, 32, 32], dict(down=2, padding=1)),
    "G rgb upsample": ([2, 3, 16, 16], dict(up=2, padding=[2, 1, 2, 1], gain=4)),
}


@pytest.mark.parametrize("name", sorted(NETWORK_CALLS))
def test_network_calls_match_reference_with_gradients(name):
    shape, kw = NETWORK_CALLS[name]
    f = setup_filter([1, 3, 3, 1])
    x = seeded_randn(*shape, dtype=torch.float32)
    assert cpu_path(x, f, kw.get("up", 1), kw.get("down", 1), kw["padding"], False, kw.get("gain", 1)) == "separable"
    results = {}
    for impl in ("reference", "kernel"):
        xi = x.clone().requires_grad_(True)
        y = upfirdn2d(xi, f, impl=impl, **kw)
        gy = seeded_randn(*y.shape, dtype=torch.float32, seed=1)
        (gx,) = torch.autograd.grad(y, xi, gy)
        results[impl] = (y, gx)
    torch.testing.assert_close(results["kernel"][0], results["reference"][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results["kernel"][1], results["reference"][1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("up,down,pad", [
    (1, 1, 1),
    (2, 1, [2, 1, 2, 1]),
    (1, 2, 1),
    ([1, 2], [3, 1], [-1, 2, 3, 0]),
])
def test_separable_path_gradients_first_and_second_order(up, down, pad):
    f = setup_filter([1, 3, 3, 1]).double()
    x = seeded_randn(1, 2, 5, 6).requires_grad_(True)
    fn = lambda x: upfirdn2d(x, f, up, down, pad, flip_filter=True, gain=3.0, impl="kernel")
    assert gradcheck(fn, (x,))
    assert gradgradcheck(fn, (x,))
    gy = seeded_randn(*fn(x).shape, seed=2)
    grads = [torch.autograd.grad(upfirdn2d(x, f, up, down, pad, flip_filter=True, gain=3.0, impl=impl), x, gy)[0]
             for impl in ("kernel", "reference")]
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-12)


def test_non_contiguous_input_and_threads_splitting_the_planes():
    f = setup_filter([1, 3, 3, 1])
    # 256 planes of 16x16 outputs: enough work for the kernel to hand planes to two threads.
    x = seeded_randn(4, 64, 16, 16, dtype=torch.float32)
    one = upfirdn2d(x, f, padding=[1, 2, 1, 2], impl="kernel")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two = upfirdn2d(x, f, padding=[1, 2, 1, 2], impl="kernel")
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)  # each plane is computed the same way whichever thread runs it
    torch.testing.assert_close(one, upfirdn2d(x, f, padding=[1, 2, 1, 2], impl="reference"), rtol=1e-5, atol=1e-5)
    # A transposed (non-contiguous) view gives the same as its contiguous copy.
    xt = x[:1, :8].transpose(2, 3)
    torch.testing.assert_close(upfirdn2d(xt, f, down=2, padding=1, impl="kernel"),
                               upfirdn2d(xt.contiguous(), f, down=2, padding=1, impl="reference"),
                               rtol=1e-5, atol=1e-5)

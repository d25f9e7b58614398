"""Checks of the trainer's ops that run on any device: the CPU kernels' tests
(test_training_ops.py) and the CUDA kernels' tests (test_cuda_ops.py) call the same functions,
with ``device`` "cpu" or "cuda". Each compares ``impl="kernel"`` with ``impl="reference"``."""

import torch
from torch.autograd import gradcheck, gradgradcheck

from trainer_helpers import seeded_randn

FILTERS = {
    "4x4 outer": [1, 3, 3, 1],
    "3x3 outer": [1, 2, 1],
    "asymmetric 3x2": [[1.0, 2.0], [3.0, 4.0], [5.0, 7.0]],
    "separable 8": [1, 2, 3, 4, 4, 3, 2, 1],
}

# (up, down, padding, filter name) of the gradient checks: asymmetric everything.
UPFIRDN2D_GRADIENT_CASES = [
    (1, 1, 1, "asymmetric 3x2"),
    (2, 1, [2, 1, 1, 2], "asymmetric 3x2"),
    (1, 2, [1, 1, 0, 2], "4x4 outer"),
    ([2, 3], [3, 1], [-1, 2, 3, 0], "asymmetric 3x2"),
    (2, 1, [3, 2, 3, 2], "separable 8"),
]


def randn(*shape, dtype=torch.float64, seed=0, device="cpu"):
    return seeded_randn(*shape, dtype=dtype, seed=seed).to(device)


def bias_act_gradients(device, act, clamp):
    """gradcheck and gradgradcheck of the kernel, then the same first and second derivatives as
    autograd through the reference."""
    from training.ops.bias_act import bias_act

    x = (randn(2, 3, 3, 2, device=device) * 2).requires_grad_(True)
    b = randn(3, seed=1, device=device).requires_grad_(True)
    fn = lambda x, b: bias_act(x, b, act=act, clamp=clamp, impl="kernel")
    assert gradcheck(fn, (x, b)) and gradgradcheck(fn, (x, b))
    gy = randn(2, 3, 3, 2, seed=2, device=device)
    results = {}
    for impl in ("kernel", "reference"):
        y = bias_act(x, b, act=act, clamp=clamp, impl=impl)
        gx, gb = torch.autograd.grad(y, (x, b), gy, create_graph=True)
        objective = gx.square().sum() + gb.square().sum() * 0.5
        second = [torch.zeros_like(x), torch.zeros_like(b)]
        if objective.requires_grad:  # not for linear: its input gradient is constant
            second = [torch.zeros_like(t) if g is None else g
                      for g, t in zip(torch.autograd.grad(objective, (x, b), allow_unused=True), (x, b))]
        results[impl] = [gx, gb] + second
    for got, want in zip(results["kernel"], results["reference"]):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def r1_double_backward(device):
    """R1: a penalty on d(out)/d(input) with create_graph, then backprop into the parameters."""
    from training.ops.bias_act import bias_act

    w = randn(4, 3, seed=3, device=device).requires_grad_(True)
    b = randn(4, seed=4, device=device).requires_grad_(True)
    grads = {}
    for impl in ("kernel", "reference"):
        inp = randn(5, 3, seed=5, device=device).requires_grad_(True)
        h = bias_act(inp.matmul(w.t()), b, act="lrelu", clamp=2.0, impl=impl)
        out = bias_act(h.sum(dim=1, keepdim=True), None, act="softplus", impl=impl)
        (g,) = torch.autograd.grad(out.sum(), inp, create_graph=True)
        grads[impl] = torch.autograd.grad(g.square().sum(), (w, b))
    for got, want in zip(grads["kernel"], grads["reference"]):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def upfirdn2d_grid(device, tol):
    """float64 values over a grid of filters, up/down factors, paddings and flips; returns how
    many combinations were compared (those whose padded size fits the filter)."""
    import itertools

    from training.ops.upfirdn2d import setup_filter, upfirdn2d

    x = randn(2, 3, 7, 6, device=device)
    checked = 0
    for (name, taps), up, down, pad, flip in itertools.product(
            FILTERS.items(), [1, 2, 3, [2, 1]], [1, 2, 3, [1, 2]], [0, 2, [1, -1, 2, 0], [-1, 3, 0, 2]],
            [False, True]):
        f = setup_filter(taps).double().to(device)
        try:
            ref = upfirdn2d(x, f, up, down, pad, flip, gain=1.5, impl="reference")
        except ValueError:
            continue  # padded size smaller than the filter: refused the same way by both
        out = upfirdn2d(x, f, up, down, pad, flip, gain=1.5, impl="kernel")
        assert out.shape == ref.shape, (name, up, down, pad)
        torch.testing.assert_close(out, ref, rtol=tol, atol=tol, msg=lambda m: "%s up %s down %s pad %s flip %s: %s"
                                   % (name, up, down, pad, flip, m))
        checked += 1
    return checked


def upfirdn2d_gradients(device, up, down, pad, taps, tol):
    from training.ops.upfirdn2d import setup_filter, upfirdn2d

    x = randn(2, 2, 5, 4, device=device).requires_grad_(True)
    f = setup_filter(FILTERS[taps]).double().to(device)
    fn = lambda x: upfirdn2d(x, f, up, down, pad, gain=2.0, impl="kernel")
    assert gradcheck(fn, (x,)) and gradgradcheck(fn, (x,))
    gy = randn(*fn(x).shape, seed=9, device=device)
    grads = [torch.autograd.grad(upfirdn2d(x, f, up, down, pad, gain=2.0, impl=impl), x, gy)[0]
             for impl in ("kernel", "reference")]
    torch.testing.assert_close(grads[0], grads[1], rtol=tol, atol=tol)

"""``bias_act``: add a bias, apply an activation, scale by a gain and clamp, in one pass.

    y = clamp(act(x + b) * gain, -clamp, clamp)

The kernel (C++ on CPU, CUDA on GPU) is fused; its backward is a second kernel call, and the
backward of that backward (second order, which R1 regularisation needs) is expressed with the
same kernel, so gradients of any order up to two match the pure-PyTorch reference.
"""

import collections
import math

import torch
import torch.nn.functional as F

from . import kernels

ActSpec = collections.namedtuple("ActSpec", "code def_alpha def_gain piecewise_linear reference")


def _swish(x, alpha):
    return x * torch.sigmoid(x)


# code: the kernels' activation index; piecewise_linear: f' can be read from the output's sign
# (so the backward keeps y only, not x), and f'' = 0.
ACTIVATIONS = {
    "linear": ActSpec(0, 0.0, 1.0, True, lambda x, a: x),
    "relu": ActSpec(1, 0.0, math.sqrt(2), True, lambda x, a: torch.relu(x)),
    "lrelu": ActSpec(2, 0.2, math.sqrt(2), True, lambda x, a: F.leaky_relu(x, a)),
    "tanh": ActSpec(3, 0.0, 1.0, False, lambda x, a: torch.tanh(x)),
    "sigmoid": ActSpec(4, 0.0, 1.0, False, lambda x, a: torch.sigmoid(x)),
    "elu": ActSpec(5, 0.0, 1.0, False, lambda x, a: F.elu(x)),
    "selu": ActSpec(6, 0.0, 1.0, False, lambda x, a: F.selu(x)),
    "softplus": ActSpec(7, 0.0, 1.0, False, lambda x, a: F.softplus(x)),
    "swish": ActSpec(8, 0.0, math.sqrt(2), False, _swish),
}

KERNEL_DTYPES = {
    "cpu": (torch.float32, torch.float64),
    "cuda": (torch.float16, torch.float32, torch.float64),
}
AUTO_MIN_CPU_NUMEL = 1 << 14
_EMPTY = {}


def default_gain(act):
    """The gain that keeps unit variance through ``act`` (sqrt(2) for relu / lrelu / swish)."""
    return _spec(act).def_gain


def _spec(act):
    if act not in ACTIVATIONS:
        raise ValueError("act=%r is not a known activation; use one of: %s"
                         % (act, ", ".join(ACTIVATIONS)))
    return ACTIVATIONS[act]


def _empty(like):
    key = (like.device, like.dtype)
    if key not in _EMPTY:
        _EMPTY[key] = torch.empty([0], device=like.device, dtype=like.dtype)
    return _EMPTY[key]


def _dense(t):
    """Contiguous or channels_last: a layout the kernels walk in storage order."""
    return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))


def bias_act(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None, impl="auto"):
    """Fused bias + activation + gain + clamp.

    Args:
        x: input tensor of any shape.
        b: bias, 1-D with ``x.shape[dim]`` elements, or None.
        dim: the dimension of ``x`` the bias runs along.
        act: one of ``linear, relu, lrelu, tanh, sigmoid, elu, selu, softplus, swish``.
        alpha: negative slope of ``lrelu`` (default 0.2); the other activations ignore it.
        gain: output scale (default: the activation's variance-keeping gain, see ``default_gain``).
        clamp: clamp the output to ``[-clamp, clamp]`` (None: no clamping).
        impl: ``"auto"`` (kernel when built for this device/dtype), ``"reference"`` or ``"kernel"``.

    Returns a tensor shaped like ``x``.

    Example:
        >>> y = bias_act(torch.randn(4, 8, 16, 16), torch.zeros(8), act="lrelu")
    """
    spec = _spec(act)
    if not isinstance(x, torch.Tensor):
        raise ValueError("bias_act: x must be a torch.Tensor, got %s" % type(x).__name__)
    if x.dim() == 0:
        raise ValueError("bias_act: x must have at least one dimension")
    if not -x.dim() <= dim < x.dim():
        raise ValueError("bias_act: dim=%d is out of range for a %d-D input" % (dim, x.dim()))
    dim = dim % x.dim()
    if b is not None:
        if b.dim() != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError("bias_act: b must be 1-D with x.shape[%d]=%d elements, got shape %s"
                             % (dim, x.shape[dim], list(b.shape)))
        if b.dtype != x.dtype:
            b = b.to(x.dtype)
    alpha = float(spec.def_alpha if alpha is None else alpha)
    gain = float(spec.def_gain if gain is None else gain)
    if clamp is not None and clamp < 0:
        raise ValueError("bias_act: clamp must be >= 0 or None, got %r" % (clamp,))
    clamp = -1.0 if clamp is None else float(clamp)
    # On CPU a tiny input (the mapping network's [N, 512]) costs less in plain ops than the
    # autograd.Function round trip, so "auto" keeps those on the reference.
    tiny = impl == "auto" and x.device.type == "cpu" and x.numel() < AUTO_MIN_CPU_NUMEL
    if not tiny and kernels.use_kernel("bias_act", impl, x, KERNEL_DTYPES):
        if b is None:
            b = _empty(x)
        return _BiasActKernel.apply(x, b, (dim, act, alpha, gain, clamp))
    return bias_act_reference(x, b, dim, act, alpha, gain, clamp)


def bias_act_reference(x, b, dim, act, alpha, gain, clamp):
    """Plain PyTorch ops; ``clamp < 0`` means no clamping. The kernel is tested against this."""
    spec = _spec(act)
    if b is not None and b.numel() > 0:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.dim())])
    x = spec.reference(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


class _BiasActKernel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, cfg):
        dim, act, alpha, gain, clamp = cfg
        spec = ACTIVATIONS[act]
        if not _dense(x):
            x = x.contiguous()
        y = torch.ops.nda_bias_act.bias_act(x, b, dim, spec.code, alpha, gain, clamp)
        # Keep what the backward needs, and no more: piecewise-linear activations read f' from
        # the sign of y (valid when gain > 0 and alpha >= 0); the others need x (and b).
        from_y = spec.piecewise_linear and gain > 0 and alpha >= 0
        empty = _empty(x)
        xs = empty if from_y else x
        bs = empty if from_y else b
        ys = y if (clamp >= 0 or (from_y and act != "linear")) else empty
        ctx.save_for_backward(xs, bs, ys)
        ctx.cfg = cfg
        ctx.trivial = from_y and act == "linear" and clamp < 0
        ctx.b_given = b.numel() > 0
        return y

    @staticmethod
    def backward(ctx, dy):
        xs, bs, ys = ctx.saved_tensors
        dim = ctx.cfg[0]
        if ctx.trivial:
            dx = dy * ctx.cfg[3]
        else:
            dx = _BiasActGrad.apply(dy, xs, bs, ys, ctx.cfg)
        db = None
        if ctx.b_given and ctx.needs_input_grad[1]:
            db = dx.sum([i for i in range(dx.dim()) if i != dim])
        return dx, db, None


class _BiasActGrad(torch.autograd.Function):
    """dx = dy * gain * f'(x + b) * [|y| < clamp]: linear in dy, so its own backward w.r.t. dy is
    itself; w.r.t. x it needs f'' (zero for the piecewise-linear activations)."""

    @staticmethod
    def forward(ctx, dy, x, b, y, cfg):
        ref = x if x.numel() > 0 else y
        if dy.stride() != ref.stride() or not _dense(dy):
            dy = torch.empty_like(ref).copy_(dy)
        dim, act, alpha, gain, clamp = cfg
        dx = torch.ops.nda_bias_act.bias_act_grad(dy, x, b, y, dim, ACTIVATIONS[act].code,
                                                  alpha, gain, clamp, 1)
        ctx.save_for_backward(dy, x, b, y)
        ctx.cfg = cfg
        return dx

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, ddx):
        dy, x, b, y = ctx.saved_tensors
        dim, act, alpha, gain, clamp = ctx.cfg
        code = ACTIVATIONS[act].code
        if ddx.stride() != dy.stride() or not _dense(ddx):
            ddx = torch.empty_like(dy).copy_(ddx)
        d_dy = d_x = d_b = None
        if ctx.needs_input_grad[0]:
            d_dy = torch.ops.nda_bias_act.bias_act_grad(ddx, x, b, y, dim, code, alpha, gain, clamp, 1)
        if x.numel() > 0 and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
            d_x = torch.ops.nda_bias_act.bias_act_grad(ddx * dy, x, b, y, dim, code, alpha, gain,
                                                       clamp, 2)
            if b.numel() > 0 and ctx.needs_input_grad[2]:
                d_b = d_x.sum([i for i in range(d_x.dim()) if i != dim])
            if not ctx.needs_input_grad[1]:
                d_x = None
        return d_dy, d_x, d_b, None, None

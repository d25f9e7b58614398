"""``upfirdn2d``: upsample (zero insertion), pad, FIR-filter and downsample a batch of images,
per channel, in one op; plus the resampling helpers StyleGAN builds on it.

    out = downsample(correlate(pad(zero_insert(x, up), padding), flipped f * gain), down)

A 2-D filter is applied directly; a 1-D filter is separable and applied as a horizontal then
a vertical pass. The kernel's backward is another ``upfirdn2d`` call (up and down swapped,
padding mirrored, filter flipped), so gradients of every order are available.
"""

import torch
import torch.nn.functional as F

from . import kernels

KERNEL_DTYPES = {
    "cpu": (torch.float32, torch.float64),
    "cuda": (torch.float16, torch.float32, torch.float64),
}


def _pair(value, name):
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise ValueError("%s must be an int or [x, y] ints, got %r" % (name, value))


def _padding4(padding):
    if isinstance(padding, int):
        return [padding] * 4
    if isinstance(padding, (list, tuple)) and all(isinstance(p, int) for p in padding):
        if len(padding) == 2:
            return [padding[0], padding[0], padding[1], padding[1]]
        if len(padding) == 4:
            return [int(p) for p in padding]
    raise ValueError("padding must be an int, [x, y] or [x0, x1, y0, y1] ints, got %r" % (padding,))


def filter_size(f):
    """``(fw, fh)`` of a filter made by ``setup_filter`` (None: a 1x1 identity)."""
    if f is None:
        return 1, 1
    if f.dim() not in (1, 2):
        raise ValueError("the filter must be 1-D (separable) or 2-D, got shape %s" % list(f.shape))
    return f.shape[-1], f.shape[0]


def setup_filter(f, device=torch.device("cpu"), normalize=True, flip_filter=False, gain=1,
                 separable=None):
    """Turn taps (a list, array or tensor; None = identity) into a float32 filter tensor.

    1-D taps of fewer than 8 taps become their 2-D outer product unless ``separable=True``;
    ``normalize`` scales the taps to sum 1; ``gain`` is spread over the filter's dimensions so
    the 2-D response is scaled by ``gain`` either way.
    """
    if f is None:
        f = 1
    # Taps are tiny: prepared on the CPU even under a ``torch.device("meta")`` context (a network
    # is first built there to size it before any memory is spent; see training.snapshot).
    f = torch.as_tensor(f, dtype=torch.float32, device="cpu")
    if f.dim() == 0:
        f = f.reshape(1)
    if f.dim() not in (1, 2) or f.numel() == 0:
        raise ValueError("filter taps must be a non-empty 1-D or 2-D array, got shape %s" % list(f.shape))
    if separable is None:
        separable = f.dim() == 1 and f.numel() >= 8
    if f.dim() == 1 and not separable:
        f = torch.outer(f, f)
    if f.dim() == 2 and separable:
        raise ValueError("separable=True needs 1-D taps")
    if normalize:
        total = f.sum()
        if total == 0:
            raise ValueError("cannot normalize a filter whose taps sum to 0; pass normalize=False")
        f = f / total
    if flip_filter:
        f = f.flip(list(range(f.dim())))
    f = f * (gain ** (f.dim() / 2))
    return f.to(device=device)


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl="auto"):
    """Upsample, pad, filter and downsample ``x`` ``[N, C, H, W]``.

    Args:
        x: input images.
        f: filter from ``setup_filter`` (1-D separable or 2-D), or None for identity.
        up, down: integer factors, an int or ``[x, y]``.
        padding: pixels added after upsampling (negative crops): int, ``[x, y]`` or ``[x0, x1, y0, y1]``.
        flip_filter: False = true convolution with ``f``; True = correlation.
        gain: scale of the output.
        impl: ``"auto"``, ``"reference"`` or ``"kernel"``.

    Returns ``[N, C, (H * upy + pady0 + pady1 - fh) // downy + 1, (same for x)]``.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError("upfirdn2d: x must be a 4-D tensor [N, C, H, W], got %s"
                         % (list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__))
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    fw, fh = filter_size(f)
    upx, upy = _pair(up, "up")
    downx, downy = _pair(down, "down")
    if min(upx, upy, downx, downy) < 1:
        raise ValueError("upfirdn2d: up and down must be >= 1, got up=%r down=%r" % (up, down))
    padx0, padx1, pady0, pady1 = _padding4(padding)
    for size, u, p0, p1, k, axis in ((x.shape[3], upx, padx0, padx1, fw, "width"),
                                      (x.shape[2], upy, pady0, pady1, fh, "height")):
        if size * u + p0 + p1 < k:
            raise ValueError("upfirdn2d: the padded %s (%d) is smaller than the filter (%d); "
                             "use less cropping or a smaller filter" % (axis, size * u + p0 + p1, k))
    if f.device != x.device:
        f = f.to(x.device)
    # A down factor past the padded extent keeps output 0 alone, as any larger one does: capped
    # there, the CPU kernel (a buffer per phase of down) never allocates for a huge factor.
    downx = min(downx, x.shape[3] * upx + padx0 + padx1 - fw + 1)
    downy = min(downy, x.shape[2] * upy + pady0 + pady1 - fh + 1)
    if kernels.use_kernel("upfirdn2d", impl, x, KERNEL_DTYPES):
        if f.dim() == 1:
            # Separable: horizontal pass (with the gain), then vertical pass.
            x = _Upfirdn2dKernel.apply(x, f.unsqueeze(0), (upx, 1, downx, 1, padx0, padx1, 0, 0,
                                                           flip_filter, float(gain)))
            return _Upfirdn2dKernel.apply(x, f.unsqueeze(1), (1, upy, 1, downy, 0, 0, pady0, pady1,
                                                              flip_filter, 1.0))
        return _Upfirdn2dKernel.apply(x, f, (upx, upy, downx, downy, padx0, padx1, pady0, pady1,
                                             flip_filter, float(gain)))
    return upfirdn2d_reference(x, f, (upx, upy), (downx, downy), [padx0, padx1, pady0, pady1],
                               flip_filter, gain)


def upfirdn2d_reference(x, f, up, down, padding, flip_filter, gain):
    """Plain PyTorch ops (zero insertion by reshape + pad, depthwise conv2d, strided slice)."""
    n, c, h, w = x.shape
    upx, upy = up
    downx, downy = down
    padx0, padx1, pady0, pady1 = padding
    if upx > 1 or upy > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
        x = x.reshape(n, c, h * upy, w * upx)
    x = F.pad(x, [max(padx0, 0), max(padx1, 0), max(pady0, 0), max(pady1, 0)])
    x = x[:, :, max(-pady0, 0): x.shape[2] - max(-pady1, 0), max(-padx0, 0): x.shape[3] - max(-padx1, 0)]
    # Gain spread over the passes; flip for true convolution (conv2d correlates).
    f = (f * (gain ** (f.dim() / 2))).to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.dim())))
    if f.dim() == 2:
        x = F.conv2d(x, f[None, None].expand(c, 1, *f.shape), groups=c)
    else:
        x = F.conv2d(x, f.reshape(1, 1, 1, -1).expand(c, 1, 1, f.numel()), groups=c)
        x = F.conv2d(x, f.reshape(1, 1, -1, 1).expand(c, 1, f.numel(), 1), groups=c)
    return x[:, :, ::downy, ::downx]


class _Upfirdn2dKernel(torch.autograd.Function):
    """cfg = (upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain); f is 2-D and
    receives no gradient."""

    @staticmethod
    def forward(ctx, x, f, cfg):
        upx, upy, downx, downy, px0, px1, py0, py1, flip, gain = cfg
        y = torch.ops.nda_upfirdn2d.upfirdn2d(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip, gain)
        ctx.save_for_backward(f)
        ctx.cfg = cfg
        ctx.in_hw = (x.shape[2], x.shape[3])
        ctx.out_hw = (y.shape[2], y.shape[3])
        return y

    @staticmethod
    def backward(ctx, dy):
        (f,) = ctx.saved_tensors
        upx, upy, downx, downy, px0, px1, py0, py1, flip, gain = ctx.cfg
        ih, iw = ctx.in_hw
        oh, ow = ctx.out_hw
        fh, fw = f.shape
        # The adjoint: zero-insert by `down`, filter with the flipped taps, keep every up-th
        # sample; the padding mirrors the forward's so the result has x's size.
        bx0 = fw - px0 - 1
        bx1 = iw * upx - ow * downx + px0 - upx + 1
        by0 = fh - py0 - 1
        by1 = ih * upy - oh * downy + py0 - upy + 1
        dx = _Upfirdn2dKernel.apply(dy, f, (downx, downy, upx, upy, bx0, bx1, by0, by1, not flip, gain))
        return dx, None, None


def _resample_padding(padding, fw, fh, lead_x, trail_x, lead_y, trail_y):
    px0, px1, py0, py1 = _padding4(padding)
    return [px0 + lead_x, px1 + trail_x, py0 + lead_y, py1 + trail_y]


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl="auto"):
    """Upsample by ``up`` with filter ``f`` (output ``H * up``, ``W * up`` plus padding); the
    gain is multiplied by ``up**2`` so that the zero insertion does not dim the image."""
    upx, upy = _pair(up, "up")
    fw, fh = filter_size(f)
    p = _resample_padding(padding, fw, fh, (fw + upx - 1) // 2, (fw - upx) // 2,
                          (fh + upy - 1) // 2, (fh - upy) // 2)
    return upfirdn2d(x, f, up=[upx, upy], padding=p, flip_filter=flip_filter,
                     gain=gain * upx * upy, impl=impl)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl="auto"):
    """Low-pass with ``f`` then keep every ``down``-th pixel (output ``H // down``, ``W // down``)."""
    downx, downy = _pair(down, "down")
    fw, fh = filter_size(f)
    p = _resample_padding(padding, fw, fh, (fw - downx + 1) // 2, (fw - downx) // 2,
                          (fh - downy + 1) // 2, (fh - downy) // 2)
    return upfirdn2d(x, f, down=[downx, downy], padding=p, flip_filter=flip_filter, gain=gain,
                     impl=impl)


def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl="auto"):
    """Filter with ``f`` keeping the image size (plus padding)."""
    fw, fh = filter_size(f)
    p = _resample_padding(padding, fw, fh, fw // 2, (fw - 1) // 2, fh // 2, (fh - 1) // 2)
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)

"""2-D convolution fused with FIR upsampling or downsampling, as StyleGAN's layers use it.

Meaning (what the tests check against): with ``q`` the centred padding of ``upsample2d`` /
``downsample2d`` for filter ``f``,

- ``up > 1``:   zero-insert ``x`` by ``up``; convolve with ``w`` over the image padded by
                ``padding + q``; filter the result with ``f`` (gain ``up**2``), no padding.
- ``down > 1``: convolve with ``w`` over ``x`` padded by ``padding + q``; filter with ``f`` and
                keep every ``down``-th pixel, no padding.
- otherwise:    a plain convolution with ``padding`` (negative crops).

Both resampling paths are computed the cheap way round: a strided transposed convolution
followed by the filter (up), or the filter followed by a strided convolution (down).
"""

import torch
import torch.nn.functional as F

from .upfirdn2d import _padding4, filter_size, upfirdn2d


def _check_factor(value, name):
    if not isinstance(value, int) or value < 1:
        raise ValueError("conv2d_resample: %s must be an int >= 1, got %r" % (name, value))
    return value


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True,
                    flip_filter=False, impl="auto"):
    """Convolve ``x`` ``[N, C, H, W]`` with ``w`` ``[O, C // groups, kh, kw]``, resampling by
    ``up`` or ``down`` through filter ``f`` (from ``setup_filter``).

    ``flip_weight=True`` correlates (like ``torch.nn.functional.conv2d``), False convolves;
    ``padding`` (int, ``[x, y]`` or ``[x0, x1, y0, y1]``) is counted on the upsampled image.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError("conv2d_resample: x must be a 4-D tensor [N, C, H, W]")
    if not isinstance(w, torch.Tensor) or w.dim() != 4:
        raise ValueError("conv2d_resample: w must be a 4-D tensor [O, C // groups, kh, kw]")
    up = _check_factor(up, "up")
    down = _check_factor(down, "down")
    if up > 1 and down > 1:
        raise ValueError("conv2d_resample: up and down cannot both be > 1; resample in two calls")
    if (up > 1 or down > 1) and f is None:
        raise ValueError("conv2d_resample: resampling needs a filter f (see setup_filter)")
    if x.shape[1] != w.shape[1] * groups:
        raise ValueError("conv2d_resample: x has %d channels but w expects %d (groups=%d)"
                         % (x.shape[1], w.shape[1] * groups, groups))
    out_c, in_per_group, kh, kw = w.shape
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = _padding4(padding)
    if up > 1:
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2

    if kw == 1 and kh == 1 and (up > 1 or down > 1):
        # A 1x1 convolution commutes with resampling: resample first, then mix channels.
        x = upfirdn2d(x, f, up=up, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter,
                      gain=up * up, impl=impl)
        return F.conv2d(x, w, groups=groups)

    if down > 1:
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter, impl=impl)
        return F.conv2d(x, w if flip_weight else w.flip([2, 3]), stride=down, groups=groups)

    if up > 1:
        # conv_transpose2d convolves (flips) by nature, so flip only to get a correlation.
        wt = w.flip([2, 3]) if flip_weight else w
        wt = wt.reshape(groups, out_c // groups, in_per_group, kh, kw).transpose(1, 2)
        wt = wt.reshape(groups * in_per_group, out_c // groups, kh, kw)
        x = F.conv_transpose2d(x, wt, stride=up, groups=groups)
        return upfirdn2d(x, f, padding=[px0 - kw + 1, px1 - kw + up, py0 - kh + 1, py1 - kh + up],
                         flip_filter=flip_filter, gain=up * up, impl=impl)

    wc = w if flip_weight else w.flip([2, 3])
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return F.conv2d(x, wc, padding=(py0, px0), groups=groups)
    return F.conv2d(F.pad(x, [px0, px1, py0, py1]), wc, groups=groups)

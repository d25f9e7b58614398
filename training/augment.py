"""ADA's augmentation pipeline (Karras et al. 2020, "Training GANs with Limited Data").

``AugmentPipe(**multipliers)`` holds a buffer ``p`` (the overall probability, tuned by the training
loop); each enabled transform is applied to each image independently with probability
``multiplier * p``. Stages, in order:

- geometric (xflip, rotate90, xint, scale, rotate, aniso, xfrac): composed into one 3x3 matrix per
  image, applied once: 2x upsampling with an orthogonal low-pass (symlet-6), one bilinear
  ``grid_sample`` with reflection at the image borders, 2x downsampling with the same filter. With
  only pixel-exact transforms (flips, 90-degree turns, integer shifts) the batch is resampled
  exactly at native resolution instead;
- colour (brightness, contrast, lumaflip, hue, saturation): one 4x4 matrix per image;
- image-space filtering (imgfilter): random gains of four frequency bands, power-normalised;
- corruptions: additive Gaussian noise, cutout.

Everything is differentiable with respect to the images (gradients reach G). Random parameters
are drawn on the CPU (``torch.Generator`` optional) and replayable::

    pipe = AugmentPipe(**AUGPIPE_PRESETS["bgc"]); pipe.p.fill_(0.5)
    params = pipe.sample(images.shape, generator=torch.Generator().manual_seed(0))
    out = pipe.apply(images, params)          # == pipe(images, generator=<same seed>)

Images are ``[N, C, H, W]`` floats (the trainer's range is [-1, 1]); colour transforms need 1 or 3
channels.
"""

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F

# --augpipe names, as in the host's train.py.
_BLIT = dict(xflip=1, rotate90=1, xint=1)
_GEOM = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_COLOR = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
AUGPIPE_PRESETS = {
    "blit": dict(_BLIT),
    "geom": dict(_GEOM),
    "color": dict(_COLOR),
    "filter": dict(imgfilter=1),
    "noise": dict(noise=1),
    "cutout": dict(cutout=1),
    "bg": dict(_BLIT, **_GEOM),
    "bgc": dict(_BLIT, **_GEOM, **_COLOR),
    "bgcf": dict(_BLIT, **_GEOM, **_COLOR, imgfilter=1),
    "bgcfn": dict(_BLIT, **_GEOM, **_COLOR, imgfilter=1, noise=1),
    "bgcfnc": dict(_BLIT, **_GEOM, **_COLOR, imgfilter=1, noise=1, cutout=1),
}

# Expected share of image power in the four filter bands (low to high): natural images have a
# roughly 1/f amplitude spectrum, so the lowest band (everything below 1/8 of Nyquist, DC included)
# carries most of it. Gains are normalised so that the expected power is unchanged.
BAND_POWER = (10.0 / 13, 1.0 / 13, 1.0 / 13, 1.0 / 13)


# ----------------------------------------------------------------------------------------------
# Filters, computed once.

def symlet_lowpass(vanishing_moments=6):
    """Orthogonal low-pass filter with near-linear phase (least-asymmetric Daubechies, "symlet").

    Spectral factorisation of the Daubechies half-band polynomial; of the valid root choices the
    one with the most linear phase wins. Returns ``2 * vanishing_moments`` taps summing to sqrt(2),
    orthonormal to their own even shifts (so 2x upsampling then 2x downsampling is the identity).
    """
    n = int(vanishing_moments)
    poly = [math.comb(n - 1 + k, k) for k in range(n)]  # P(y), ascending powers
    y_roots = np.roots(poly[::-1])
    # y = (2 - z - 1/z) / 4 maps each root y to a pair (z, 1/z); pick one z per pair.
    z_roots = [((2 - 4 * y) + np.sqrt((2 - 4 * y) ** 2 - 4 + 0j)) / 2 for y in y_roots]
    groups, used = [], set()
    for i, y in enumerate(y_roots):
        if i in used:
            continue
        used.add(i)
        group = [i]
        if abs(y.imag) > 1e-9:  # complex roots: flip a conjugate pair together to keep taps real
            j = min((j for j in range(len(y_roots)) if j not in used), key=lambda j: abs(y_roots[j] - np.conj(y)))
            used.add(j)
            group.append(j)
        groups.append(group)
    w = np.linspace(0.05, 0.6 * np.pi, 256)
    best = None
    for choice in itertools.product((False, True), repeat=len(groups)):
        roots = [1 / z_roots[i] if flip else z_roots[i] for group, flip in zip(groups, choice) for i in group]
        taps = np.convolve(np.poly([-1.0] * n), np.poly(roots))
        if np.abs(taps.imag).max() > 1e-8:
            continue
        taps = taps.real * math.sqrt(2) / taps.real.sum()
        phase = np.unwrap(np.angle(np.polyval(taps[::-1], np.exp(-1j * w))))
        nonlinearity = np.sum((phase - np.polyval(np.polyfit(w, phase, 1), w)) ** 2)
        if best is None or nonlinearity < best[0]:
            best = (nonlinearity, taps)
    return best[1]


def band_filters(lowpass):
    """Four zero-phase 1D band filters (low to high) that sum to a unit impulse.

    The zero-phase half-band filter is the orthogonal low-pass correlated with itself; dilating it
    ("a trous") gives cut-offs at 1/2, 1/4 and 1/8 of Nyquist; bands are differences of those.
    """
    half = np.convolve(lowpass, lowpass[::-1]) / 2  # zero phase, DC gain 1
    lows = [half]
    for step in (2, 4):
        dilated = np.zeros((len(half) - 1) * step + 1)
        dilated[::step] = half
        lows.append(np.convolve(lows[-1], dilated))
    size = len(lows[-1])

    def centred(f):
        out = np.zeros(size)
        start = (size - len(f)) // 2
        out[start:start + len(f)] = f
        return out

    delta = centred(np.ones(1))
    l1, l2, l3 = (centred(f) for f in lows)
    return np.stack([l3, l2 - l3, l1 - l2, delta - l1])


# ----------------------------------------------------------------------------------------------
# Batched matrices. Geometric matrices act on centred pixel coordinates (x, y, 1) and map an
# output pixel to where it samples the input; colour matrices act on (r, g, b, 1).

def _eye(n, batch):
    return torch.eye(n).repeat(batch, 1, 1)


def _translate2d(tx, ty):
    m = _eye(3, tx.shape[0])
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def _scale2d(sx, sy):
    m = _eye(3, sx.shape[0])
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def _rotate2d(theta):
    m = _eye(3, theta.shape[0])
    c, s = torch.cos(theta), torch.sin(theta)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return m


LUMA_AXIS = torch.tensor([1.0, 1.0, 1.0, 0.0]) / math.sqrt(3)


def _quarter_turns(k):
    """Rotation by k * 90 degrees with exact 0/1 entries (cos(pi / 2) is not 0 in floating point)."""
    cos = torch.tensor([1.0, 0.0, -1.0, 0.0])[k]
    sin = torch.tensor([0.0, 1.0, 0.0, -1.0])[k]
    m = _eye(3, k.shape[0])
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, -sin, sin, cos
    return m


def _rotate_about_luma(theta):
    """Rodrigues rotation around the grey axis (hue rotation), homogeneous 4x4."""
    v = LUMA_AXIS[:3]
    k = torch.tensor([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    s, c = torch.sin(theta)[:, None, None], torch.cos(theta)[:, None, None]
    r = torch.eye(3) + s * k + (1 - c) * (k @ k)
    m = _eye(4, theta.shape[0])
    m[:, :3, :3] = r
    return m


def _where(mask, value, default):
    """Per-image choice: ``value`` where ``mask`` else ``default`` (broadcast over trailing dims)."""
    shape = mask.shape + (1,) * (value.dim() - mask.dim())
    return torch.where(mask.reshape(shape), value, torch.full_like(value, default))


# ----------------------------------------------------------------------------------------------

class AugmentPipe(torch.nn.Module):
    """ADA augmentation; multipliers are per-transform probabilities relative to ``p``."""

    def __init__(self, xflip=0, rotate90=0, xint=0, xint_max=0.125,
                 scale=0, rotate=0, aniso=0, xfrac=0, scale_std=0.2, rotate_max=1, aniso_std=0.2, xfrac_std=0.125,
                 brightness=0, contrast=0, lumaflip=0, hue=0, saturation=0,
                 brightness_std=0.2, contrast_std=0.5, hue_max=1, saturation_std=1,
                 imgfilter=0, imgfilter_bands=(1, 1, 1, 1), imgfilter_std=1,
                 noise=0, cutout=0, noise_std=0.1, cutout_size=0.5):
        super().__init__()
        self.init_kwargs = dict(locals())
        del self.init_kwargs["self"], self.init_kwargs["__class__"]
        self.init_kwargs["imgfilter_bands"] = [float(b) for b in imgfilter_bands]
        for key, value in self.init_kwargs.items():
            if key == "imgfilter_bands":
                continue
            value = float(value)
            if not math.isfinite(value) or value < 0:
                raise ValueError("AugmentPipe: %s must be a finite number >= 0, got %r" % (key, value))
            setattr(self, key, value)
        self.imgfilter_bands = list(self.init_kwargs["imgfilter_bands"])
        if len(self.imgfilter_bands) != 4 or min(self.imgfilter_bands) < 0:
            raise ValueError("AugmentPipe: imgfilter_bands must be 4 numbers >= 0, got %r" % (imgfilter_bands,))
        self.register_buffer("p", torch.ones([]))
        lowpass = symlet_lowpass(6)
        # Filters are derived data: not saved in state_dict (non-persistent).
        self.register_buffer("lowpass", torch.tensor(lowpass, dtype=torch.float32), persistent=False)
        self.register_buffer("bands", torch.tensor(band_filters(lowpass), dtype=torch.float32), persistent=False)
        # From the float32 taps the buffer holds, once: apply() must not read a (GPU) buffer back.
        self.lowpass_offset = _upsample_offset(np.float32(lowpass))

    # -------------------------------------------------------------------------------- sampling
    def sample(self, shape, generator=None):
        """Draw parameters for a batch of ``shape`` ``[N, C, H, W]`` on the CPU. Returns a dict."""
        n, c, h, w = [int(s) for s in shape]
        p = float(self.p)
        g = generator

        def chance(multiplier, size=None):
            return torch.rand(size or [n], generator=g) < multiplier * p

        def uniform(low, high, size=None):
            return low + (high - low) * torch.rand(size or [n], generator=g)

        def normal(std, size=None):
            return torch.randn(size or [n], generator=g) * std

        # Geometric transforms, composed as inverse matrices (output pixel -> input pixel).
        geom = _eye(3, n)
        blit_only = True
        if self.xflip > 0:
            flip = _where(chance(self.xflip), torch.randint(0, 2, [n], generator=g).float(), 0)
            geom = geom @ _scale2d(1 - 2 * flip, torch.ones(n))
        if self.rotate90 > 0:
            quarter = _where(chance(self.rotate90), torch.randint(0, 4, [n], generator=g), 0)
            geom = geom @ _quarter_turns(quarter)
        if self.xint > 0:
            t = _where(chance(self.xint), uniform(-self.xint_max, self.xint_max, [n, 2]), 0)
            geom = geom @ _translate2d(-torch.round(t[:, 0] * w), -torch.round(t[:, 1] * h))
        if self.scale > 0:
            s = _where(chance(self.scale), torch.exp2(normal(self.scale_std)), 1)
            geom = geom @ _scale2d(1 / s, 1 / s)
            blit_only = False
        # Rotation happens before and/or after the anisotropic scaling; each with p_rot so that
        # P(any rotation) = rotate * p.
        p_rot = 1 - math.sqrt(max(0.0, min(1.0, 1 - self.rotate * p)))
        if self.rotate > 0:
            theta = _where(torch.rand([n], generator=g) < p_rot, uniform(-math.pi, math.pi) * self.rotate_max, 0)
            geom = geom @ _rotate2d(-theta)
        if self.aniso > 0:
            s = _where(chance(self.aniso), torch.exp2(normal(self.aniso_std)), 1)
            geom = geom @ _scale2d(1 / s, s)
        if self.rotate > 0:
            theta = _where(torch.rand([n], generator=g) < p_rot, uniform(-math.pi, math.pi) * self.rotate_max, 0)
            geom = geom @ _rotate2d(-theta)
        if self.xfrac > 0:
            t = _where(chance(self.xfrac), normal(self.xfrac_std, [n, 2]), 0)
            geom = geom @ _translate2d(-t[:, 0] * w, -t[:, 1] * h)
        if self.rotate > 0 or self.aniso > 0 or self.xfrac > 0:
            blit_only = False

        # Colour transforms, composed as forward matrices on (r, g, b, 1).
        color = _eye(4, n)
        v = LUMA_AXIS
        if self.brightness > 0:
            b = _where(chance(self.brightness), normal(self.brightness_std), 0)
            color = _translate3d(b) @ color
        if self.contrast > 0:
            k = _where(chance(self.contrast), torch.exp2(normal(self.contrast_std)), 1)
            color = _scale3d(k) @ color
        if self.lumaflip > 0:
            flip = _where(chance(self.lumaflip), torch.randint(0, 2, [n], generator=g).float(), 0)
            color = (torch.eye(4) - 2 * torch.outer(v, v) * flip[:, None, None]) @ color
        if self.hue > 0 and c > 1:
            theta = _where(chance(self.hue), uniform(-math.pi, math.pi) * self.hue_max, 0)
            color = _rotate_about_luma(theta) @ color
        if self.saturation > 0 and c > 1:
            s = _where(chance(self.saturation), torch.exp2(normal(self.saturation_std)), 1)
            vv = torch.outer(v, v)
            color = (vv + (torch.eye(4) - vv) * s[:, None, None]) @ color

        # Band gains: one band at a time, each renormalised to keep the expected power.
        gains = None
        if self.imgfilter > 0:
            power = torch.tensor(BAND_POWER)
            gains = torch.ones([n, 4])
            for i, band_strength in enumerate(self.imgfilter_bands):
                t_i = _where(chance(self.imgfilter * band_strength), torch.exp2(normal(self.imgfilter_std)), 1)
                t = torch.ones([n, 4])
                t[:, i] = t_i
                gains = gains * t / (power * t.square()).sum(dim=1, keepdim=True).sqrt()

        noise_sigma = None
        if self.noise > 0:
            noise_sigma = _where(chance(self.noise), normal(1.0).abs() * self.noise_std, 0)
        cutout_centre = cutout_on = None
        if self.cutout > 0:
            cutout_on = chance(self.cutout)
            cutout_centre = torch.rand([n, 2], generator=g)
        # The noise itself is drawn in apply() on the images' device, from this seed.
        noise_seed = int(torch.randint(0, 2 ** 62, [1], generator=g)) if noise_sigma is not None else None

        return dict(shape=[n, c, h, w], geom=geom, blit_only=blit_only, color=color, gains=gains,
                    noise_sigma=noise_sigma, noise_seed=noise_seed, cutout_on=cutout_on, cutout_centre=cutout_centre)

    # -------------------------------------------------------------------------------- applying
    def apply(self, images, params):
        _check_images(images)
        if list(images.shape) != list(params["shape"]):
            raise ValueError("AugmentPipe: parameters were sampled for shape %s, images are %s"
                             % (list(params["shape"]), list(images.shape)))
        device, dtype = images.device, images.dtype
        eye3, eye4 = torch.eye(3), torch.eye(4)
        if not torch.equal(params["geom"], eye3.expand_as(params["geom"])):
            geom = params["geom"].to(device=device, dtype=torch.float32)
            if params["blit_only"]:
                images = _resample_exact(images, geom)
            else:
                images = _resample_filtered(images, geom, self.lowpass.to(device), self.lowpass_offset)
        if not torch.equal(params["color"], eye4.expand_as(params["color"])):
            images = _apply_color(images, params["color"].to(device=device, dtype=dtype))
        if params["gains"] is not None and not torch.all(params["gains"] == 1):
            images = _apply_band_gains(images, params["gains"].to(device=device, dtype=dtype), self.bands.to(device, dtype))
        if params["noise_sigma"] is not None and bool((params["noise_sigma"] > 0).any()):
            gen = torch.Generator(device=device)
            gen.manual_seed(params["noise_seed"])
            noise = torch.randn(images.shape, generator=gen, device=device, dtype=dtype)
            images = images + noise * params["noise_sigma"].to(device=device, dtype=dtype)[:, None, None, None]
        if params["cutout_on"] is not None and bool(params["cutout_on"].any()):
            images = images * _cutout_mask(params, self.cutout_size, images.shape, device, dtype)
        return images

    def forward(self, images, generator=None):
        _check_images(images)
        return self.apply(images, self.sample(images.shape, generator=generator))

    def extra_repr(self):
        on = ", ".join("%s=%g" % (k, v) for k, v in self.init_kwargs.items()
                       if not isinstance(v, list) and v and not k.endswith(("_std", "_max", "_size")))
        return on or "identity"


def _check_images(images):
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise ValueError("AugmentPipe: images must be a float tensor [N, C, H, W], got %s"
                         % (getattr(images, "shape", type(images)),))


def _translate3d(b):
    m = _eye(4, b.shape[0])
    m[:, 0, 3] = m[:, 1, 3] = m[:, 2, 3] = b
    return m


def _scale3d(k):
    m = _eye(4, k.shape[0])
    m[:, 0, 0] = m[:, 1, 1] = m[:, 2, 2] = k
    return m


def _sampling_grid(geom, out_h, out_w, in_h, in_w, step, origin_x, origin_y, shift=0.0):
    """grid_sample grid for output samples at centred coords ``origin + step * index``; the input
    is ``in_h x in_w`` pixels, or its 2x upsampling whose samples are offset by ``shift / 2``."""
    dev = geom.device
    xs = origin_x + step * torch.arange(out_w, device=dev, dtype=torch.float32)
    ys = origin_y + step * torch.arange(out_h, device=dev, dtype=torch.float32)
    xx, yy = xs[None, :].expand(out_h, out_w), ys[:, None].expand(out_h, out_w)
    points = torch.stack([xx, yy, torch.ones_like(xx)], dim=-1).reshape(1, -1, 3)
    src = points @ geom.transpose(1, 2)  # [N, P, 3]
    # Centred input coords -> grid_sample's normalised coords (align_corners=False).
    grid = torch.stack([(src[..., 0] * 2 + shift) / in_w, (src[..., 1] * 2 + shift) / in_h], dim=-1)
    return grid.reshape(geom.shape[0], out_h, out_w, 2)


class _GridSampleLinear(torch.autograd.Function):
    """``F.grid_sample`` as a linear map of the images for a constant grid, with a backward that
    is itself differentiable. Older torch (2.0 and before) has no derivative for
    ``grid_sampler_2d_backward``, so the R1 penalty (a gradient of D(augment(reals)) w.r.t. the
    reals, then backpropagated) fails there; this gives the same values using public API only."""

    @staticmethod
    def forward(ctx, images, grid, kwargs):
        ctx.save_for_backward(grid)
        ctx.kwargs, ctx.shape = kwargs, images.shape
        return F.grid_sample(images, grid, **kwargs)

    @staticmethod
    def backward(ctx, grad_out):
        grid, = ctx.saved_tensors
        return _GridSampleAdjoint.apply(grad_out, grid, ctx.shape, ctx.kwargs), None, None


class _GridSampleAdjoint(torch.autograd.Function):
    """The transpose of _GridSampleLinear (its first-order backward); its own backward is the
    forward sampling again."""

    @staticmethod
    def forward(ctx, grad_out, grid, shape, kwargs):
        ctx.save_for_backward(grid)
        ctx.kwargs = kwargs
        with torch.enable_grad():
            x = grad_out.new_zeros(shape).requires_grad_(True)
            y = F.grid_sample(x, grid, **kwargs)
        return torch.autograd.grad(y, x, grad_out)[0]

    @staticmethod
    def backward(ctx, grad_grad):
        grid, = ctx.saved_tensors
        return _GridSampleLinear.apply(grad_grad, grid, ctx.kwargs), None, None, None


_grid_sample_double_backward = None  # probed once: does this torch differentiate grid_sample twice?


def _has_grid_sample_double_backward():
    global _grid_sample_double_backward
    if _grid_sample_double_backward is None:
        try:
            with torch.enable_grad():
                x = torch.zeros(1, 1, 2, 2, requires_grad=True)
                go = torch.ones(1, 1, 1, 1, requires_grad=True)
                y = F.grid_sample(x, torch.zeros(1, 1, 1, 2), mode="bilinear", align_corners=False)
                gx, = torch.autograd.grad(y, x, go, create_graph=True)
                torch.autograd.grad(gx.sum(), go)
            _grid_sample_double_backward = True
        except RuntimeError:  # "derivative for aten::grid_sampler_2d_backward is not implemented"
            _grid_sample_double_backward = False
    return _grid_sample_double_backward


def _grid_sample(images, grid, **kwargs):
    """F.grid_sample, twice differentiable w.r.t. the images on every torch (see _GridSampleLinear).
    The fallback treats the grid as a constant, which the pipeline's grids are."""
    if grid.requires_grad or not torch.is_grad_enabled() or _has_grid_sample_double_backward():
        return F.grid_sample(images, grid, **kwargs)
    return _GridSampleLinear.apply(images, grid, kwargs)


def _resample_exact(images, geom):
    """Pixel-exact transforms (flips, quarter turns, integer shifts): every output pixel centre
    lands on an input pixel centre, so nearest sampling copies values exactly (rounding in the
    normalised coordinates cannot blend neighbours) and still passes gradients back."""
    n, c, h, w = images.shape
    grid = _sampling_grid(geom, h, w, h, w, 1.0, -(w - 1) / 2, -(h - 1) / 2)
    return _grid_sample(images, grid.to(images.dtype), mode="nearest", padding_mode="reflection",
                         align_corners=False)


def _symmetric_pad_index(size, pad, device):
    """Indices that extend a length-``size`` axis by ``pad`` on each side, mirroring about the
    outer pixel edges (dcba|abcd|dcba), the same extension grid_sample's reflection uses."""
    idx = torch.arange(-pad, size + pad, device=device)
    period = 2 * size
    idx = torch.remainder(idx, period)
    return torch.where(idx >= size, period - 1 - idx, idx)


def _filter_axis(x, taps, dim, stride=1):
    """Correlate ``x`` [N, C, H, W] along ``dim`` (2 or 3) with 1D ``taps`` (valid, no padding)."""
    n, c, h, w = x.shape
    k = taps.numel()
    if dim == 3:
        out = F.conv2d(x.reshape(n * c, 1, h, w), taps.reshape(1, 1, 1, k), stride=(1, stride))
    else:
        out = F.conv2d(x.reshape(n * c, 1, h, w), taps.reshape(1, 1, k, 1), stride=(stride, 1))
    return out.reshape(n, c, out.shape[2], out.shape[3])


def _upsample_offset(lowpass):
    """Output sample j of _upsample2x sits at input pixel coordinate ``j / 2 + offset``.

    The filter's delay at low frequencies is its centroid; for a symmetric filter it is the
    centre, (k - 1) / 2, and the offset -1/4. A symlet is only nearly symmetric: using the centre
    would shift every resampled image by a fraction of a pixel.
    """
    taps = np.asarray(lowpass, dtype=np.float64)  # numbers, not a tensor: no device involved
    k = taps.size
    delay = float((np.arange(k) * taps).sum() / taps.sum())
    return (k / 2 - 1 - delay) / 2


def _upsample2x(x, lowpass):
    """2x upsampling with the orthogonal low-pass; see _upsample_offset for sample positions.

    ``conv_transpose2d`` with stride 2 computes y[m] = sum_n x[n] * h[m - 2n] directly (no
    zero-stuffed copy); the input is first extended by symmetric reflection.
    """
    k = lowpass.numel()
    pad = k // 4 + 1
    up = lowpass * math.sqrt(2)
    for dim in (3, 2):
        size = x.shape[dim]
        x = x.index_select(dim, _symmetric_pad_index(size, pad, x.device))
        n, c, h, w = x.shape
        if dim == 3:
            full = F.conv_transpose2d(x.reshape(n * c, 1, h, w), up.reshape(1, 1, 1, k), stride=(1, 2))
        else:
            full = F.conv_transpose2d(x.reshape(n * c, 1, h, w), up.reshape(1, 1, k, 1), stride=(2, 1))
        full = full.reshape(n, c, full.shape[2], full.shape[3])
        x = full.narrow(dim, 2 * pad + k // 2 - 1, 2 * size)
    return x


def _resample_filtered(images, geom, lowpass, offset):
    """General transforms: upsample 2x, sample once, downsample 2x (anti-aliased both ways).
    ``offset``: ``_upsample_offset`` of the filter (a number, computed once by the pipe)."""
    n, c, h, w = images.shape
    k = lowpass.numel()
    border = k // 2 - 1  # extra samples per side that the downsampling filter consumes
    upsampled = _upsample2x(images, lowpass)
    out_h, out_w = 2 * h + 2 * border, 2 * w + 2 * border
    # Extended output sample e sits at centred coordinate (e - border) / 2 + offset - (size - 1) / 2
    # (the downsampling is the adjoint of the upsampling, so it uses the same sample positions).
    grid = _sampling_grid(geom, out_h, out_w, h, w, 0.5, -border / 2 + offset - (w - 1) / 2,
                          -border / 2 + offset - (h - 1) / 2, shift=-2 * offset - 0.5)
    x = _grid_sample(upsampled, grid.to(images.dtype), mode="bilinear", padding_mode="reflection",
                      align_corners=False)
    down = lowpass / math.sqrt(2)
    x = _filter_axis(x, down, 3, stride=2)
    return _filter_axis(x, down, 2, stride=2)


def _apply_color(images, color):
    n, c, h, w = images.shape
    flat = images.reshape(n, c, h * w)
    if c == 3:
        flat = color[:, :3, :3] @ flat + color[:, :3, 3:]
    elif c == 1:
        # A grey image is (g, g, g): apply the matrix and average the result back to grey.
        gain = color[:, :3, :3].sum(dim=2).mean(dim=1)
        offset = color[:, :3, 3].mean(dim=1)
        flat = flat * gain[:, None, None] + offset[:, None, None]
    else:
        raise ValueError("AugmentPipe: colour transforms need 1 or 3 channels, got %d; use an augpipe "
                         "without colour (e.g. --augpipe=bg)" % c)
    return flat.reshape(n, c, h, w)


def _apply_band_gains(images, gains, bands):
    """Filter each image with sum_i gains[i] * band_i, separably (rows then columns)."""
    n, c, h, w = images.shape
    taps = (gains @ bands)  # [N, K] zero-phase 1D filter per image
    k = taps.shape[1]
    pad = k // 2
    x = images.index_select(3, _symmetric_pad_index(w, pad, images.device))
    x = x.index_select(2, _symmetric_pad_index(h, pad, images.device))
    weight = taps.repeat_interleave(c, dim=0)  # [N*C, K]
    x = x.reshape(1, n * c, h + 2 * pad, w + 2 * pad)
    x = F.conv2d(x, weight[:, None, None, :], groups=n * c)
    x = F.conv2d(x, weight[:, None, :, None], groups=n * c)
    return x.reshape(n, c, h, w)


def _cutout_mask(params, size, shape, device, dtype):
    n, c, h, w = shape
    half = torch.where(params["cutout_on"], torch.tensor(size / 2), torch.tensor(0.0)).to(device)
    centre = params["cutout_centre"].to(device)
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
    outside_x = (xs[None, :] - centre[:, 0:1]).abs() >= half[:, None]
    outside_y = (ys[None, :] - centre[:, 1:2]).abs() >= half[:, None]
    keep = outside_x[:, None, :] | outside_y[:, :, None]
    return keep[:, None].to(dtype)

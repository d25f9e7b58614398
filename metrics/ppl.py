"""Perceptual path length (PPL; Karras et al. 2019, StyleGAN2's form): how far, in LPIPS
distance, the image moves for a small step along an interpolation path between two latents.

One path sample: latents z0, z1 and a label c; a position t (uniform in [0, 1) for ``full``
sampling, 0 for ``end``); the images at t and t + epsilon, interpolated spherically in Z
(``space="z"``) or linearly in W (``space="w"``); the sample's value is
``||lpips(img_t) - lpips(img_t+eps)||^2 / epsilon^2``. PPL is the mean of the values between the
1st and 99th percentiles (the host's rule against outliers). Both images of a pair share their
noise inputs, so only the latent step changes them.
"""

import contextlib
import math

import torch
import torch.nn.functional as F

from metrics.features import gather_rows, sample_labels, seeded_global_rng, world_and_rank

SPACES = ("z", "w")
SAMPLINGS = ("full", "end")
LPIPS_MAX_RESOLUTION = 256  # larger images are box-downsampled to this, as the host does


def _unit(v):
    return v / v.norm(dim=-1, keepdim=True)


def slerp(a, b, t):
    """Points at fraction ``t`` of the great-circle arc from direction ``a`` to direction ``b``
    (unit vectors, [N, D]; ``t``: [N, 1] or a number)."""
    a, b = _unit(a), _unit(b)
    cos_ab = (a * b).sum(dim=-1, keepdim=True).clamp(-1, 1)
    # b's component orthogonal to a, as a unit vector: the arc's direction of travel from a.
    toward_b = _unit(b - cos_ab * a)
    angle = torch.acos(cos_ab) * t
    return _unit(a * torch.cos(angle) + toward_b * torch.sin(angle))


def sample_paths(batch, z_dim, sampling, generator):
    """``(z0, z1, t)`` for ``batch`` path samples; ``t`` is 0 for ``end`` sampling."""
    if sampling not in SAMPLINGS:
        raise ValueError("sampling=%r is not known; use one of: %s" % (sampling, ", ".join(SAMPLINGS)))
    z = torch.randn([2 * batch, z_dim], generator=generator)
    t = torch.rand([batch], generator=generator)
    return z[:batch], z[batch:], t if sampling == "full" else torch.zeros_like(t)


def path_ws(G, z0, z1, c, t, epsilon, space):
    """The ws of both ends of each step, ``[2N, num_ws, w_dim]``: rows ``:N`` at t, ``N:`` at t + epsilon."""
    if space not in SPACES:
        raise ValueError("space=%r is not known; use one of: %s" % (space, ", ".join(SPACES)))
    if space == "w":
        w0, w1 = G.mapping(torch.cat([z0, z1]), torch.cat([c, c])).chunk(2)
        t = t.to(w0.dtype).reshape(-1, 1, 1)
        return torch.cat([torch.lerp(w0, w1, t), torch.lerp(w0, w1, t + epsilon)])
    t = t.to(z0.dtype).reshape(-1, 1)
    z = torch.cat([slerp(z0, z1, t), slerp(z0, z1, t + epsilon)])
    return G.mapping(z, torch.cat([c, c]))


@contextlib.contextmanager
def shared_random_noise(synthesis, generator):
    """Fill every ``noise_const`` buffer with fresh noise from ``generator`` for one batch, then
    put the old values back; inside, ``noise_mode="const"`` gives both images of a pair the
    same noise (a different draw per batch)."""
    saved = [(buf, buf.detach().clone()) for name, buf in synthesis.named_buffers() if name.endswith("noise_const")]
    try:
        for buf, _old in saved:
            buf.copy_(torch.randn(buf.shape, generator=generator))
        yield
    finally:
        for buf, old in saved:
            buf.copy_(old)


def lpips_input(images, crop, resolution):
    """Generator output ([-1, 1]) as the LPIPS network wants it: the host's face crop when asked,
    box-downsampled to at most 256 pixels, in [0, 255], three channels."""
    if crop:
        eighth = images.shape[2] // 8
        images = images[:, :, eighth * 3:eighth * 7, eighth * 2:eighth * 6]
    factor = resolution // LPIPS_MAX_RESOLUTION
    if factor > 1:
        images = F.avg_pool2d(images, factor)
    images = (images + 1) * (255 / 2)
    if images.shape[1] == 1:
        images = images.repeat([1, 3, 1, 1])
    return images


def step_distances(G, lpips, z0, z1, c, t, epsilon, space, crop, generator):
    """Squared LPIPS distance per path sample, divided by ``epsilon**2`` ([N])."""
    ws = path_ws(G, z0, z1, c, t, epsilon, space)
    with shared_random_noise(G.synthesis, generator):
        images = G.synthesis(ws, noise_mode="const")
    if images.dtype in (torch.float16, torch.bfloat16):
        images = images.float()  # mixed-precision outputs: the difference of a pair needs the bits
    features = lpips(lpips_input(images, crop, G.img_resolution))
    here, there = features.chunk(2)
    return (here - there).square().sum(dim=1) / epsilon ** 2


def filtered_mean(values, lo_percent=1.0, hi_percent=99.0):
    """Mean of the values between two percentiles (taken as the nearest sample below / above,
    numpy's ``lower`` / ``higher`` rules)."""
    values = torch.as_tensor(values, dtype=torch.float64).flatten()
    if values.numel() == 0:
        raise ValueError("no path samples to average")
    ordered = values.sort().values
    last = values.numel() - 1
    lo = ordered[math.floor(last * lo_percent / 100)]
    hi = ordered[math.ceil(last * hi_percent / 100)]
    kept = values[(values >= lo) & (values <= hi)]
    return float(kept.mean())


@torch.no_grad()
def compute_ppl(opts, num_samples, epsilon, space, sampling, crop, batch_size):
    """PPL of ``opts.G`` over ``num_samples`` path samples (split across ranks; rank 0 returns the value)."""
    G = opts.G
    lpips_net = opts.detector("vgg16")
    lpips = lambda images: lpips_net(images, resize_images=False, return_lpips=True)  # noqa: E731
    world, rank = world_and_rank()
    dataset = opts.dataset() if G.c_dim else None
    generator = torch.Generator().manual_seed(int(opts.seed) * 1000003 + rank)
    per_step = batch_size * world
    progress = opts.progress.sub(tag="ppl samples", num_items=num_samples)
    distances = []
    with seeded_global_rng(int(opts.seed) * 1000003 + rank + 1, opts.device):
        for done in range(0, num_samples, per_step):
            z0, z1, t = sample_paths(batch_size, G.z_dim, sampling, generator)
            if G.c_dim:
                c = sample_labels(dataset, batch_size, generator)
            else:
                c = torch.zeros([batch_size, 0])
            d = step_distances(G, lpips, z0.to(opts.device), z1.to(opts.device), c.to(opts.device),
                               t.to(opts.device), epsilon, space, crop, generator)
            distances.append(gather_rows(d).cpu())
            progress.update(min(done + per_step, num_samples))
    if opts.rank != 0:
        return float("nan")
    return filtered_mean(torch.cat(distances)[:num_samples])

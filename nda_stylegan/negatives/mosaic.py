"""Mosaic: each of k x k tiles taken from a different image of the batch, in place."""

import torch

from .base import Negative, Param, identity_plan, randint, redraw_until, uniform


class Mosaic(Negative):
    """Build each output from ``k x k`` tiles, each from a different image, at the same position.

    When the batch has at least ``k * k`` images the tiles of one output come from ``k * k``
    distinct images (possibly including the source itself); with a smaller batch images repeat,
    but never all tiles from one image. So at least one tile never comes from the source, and
    no output is a copy of any real image. When the size is not divisible by ``k`` the last row
    and column of tiles are larger.

    Parameters:
        k (int, default 2): tiles per side.

    Shapes: input ``(N, C, H, W)`` float with ``N >= 2``, ``H, W >= k``; output ``(N, C, H, W)``.

    Example:
        >>> import torch
        >>> from nda_stylegan.negatives.mosaic import Mosaic
        >>> x = torch.rand(8, 3, 32, 32)
        >>> neg = Mosaic(k=2)
        >>> params = neg.sample(x, torch.Generator().manual_seed(0))
        >>> [len(set(row)) for row in params.tile_src_image[:2, :4].tolist()]  # 4 source images each
        [4, 4]
        >>> neg.apply(x, params).shape
        torch.Size([8, 3, 32, 32])
    """

    name = "mosaic"
    needs_partner = True
    PARAMS = {"k": Param(2, "int", "tiles per side (k x k tiles)", low=2, high=64)}

    def check_size(self, height, width):
        if min(height, width) < self.k:
            raise ValueError("mosaic with k=%d needs images at least %d pixels per side, got %dx%d; use a "
                             "smaller k" % (self.k, self.k, height, width))

    def sample_plan(self, n, height, width, generator):
        t = self.k * self.k
        if n >= t:
            sources = _distinct_sources(n, t, generator)
        else:
            sources, _ = redraw_until(lambda count: randint(n, (count, t), generator),
                                      lambda s: (s == s[:, :1]).all(1), n, max_rounds=10 ** 6)
        plan = identity_plan(n, self.k, self.k)
        plan.tile_src_image = sources
        return plan


def _distinct_sources(n, t, generator):
    """Per row, ``t`` distinct images out of ``n`` in random order: Floyd's subset sampling,
    vectorised over rows (a loop over the ``t`` tiles, memory ``n * t``, not ``n * n``)."""
    chosen = torch.empty(n, t, dtype=torch.int64)
    for i, j in enumerate(range(n - t, n)):
        r = randint(j + 1, (n,), generator)
        taken = (chosen[:, :i] == r[:, None]).any(1)
        chosen[:, i] = torch.where(taken, torch.full_like(r, j), r)
    return chosen.gather(1, uniform((n, t), generator).argsort(1))

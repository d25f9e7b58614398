"""Cutout: a square of each image replaced by that square's per-channel mean."""

import torch

from .base import Negative, Param, identity_plan, randint, uniform
from .plan import BOX_FILL


class Cutout(Negative):
    """Fill a random square of each image with the square's own per-channel mean.

    The side is ``floor(S * u)`` pixels with ``u ~ U(size[0], size[1])`` and ``S`` the shorter
    image side (at least 1 pixel, at most ``S``); the default ``(0.3125, 0.625)`` gives the
    official 10..19 px at 32x32 and scales with the resolution. The top-left corner is
    ``floor((H - side) * U(0, 1))``, ``floor((W - side) * U(0, 1))`` as in the official code,
    so the square always lies inside the image. Drawn per image.

    Parameters:
        size (float or (low, high), default (0.3125, 0.625)): side as a fraction of the shorter
            image side; one number gives a fixed side.

    Shapes: input ``(N, C, H, W)`` float, output ``(N, C, H, W)``; ``N >= 1``.

    Example:
        >>> import torch
        >>> from nda_stylegan.negatives.cutout import Cutout
        >>> neg = Cutout(size=0.25)
        >>> x = torch.rand(2, 3, 32, 32) * 2 - 1
        >>> params = neg.sample(x, torch.Generator().manual_seed(0))
        >>> y0, y1, x0, x1 = params.box_bounds[0].tolist()
        >>> (y1 - y0, x1 - x0)
        (8, 8)
    """

    name = "cutout"
    PARAMS = {"size": Param((0.3125, 0.625), "fraction", "square side as a fraction of the shorter image side",
                            low=0, high=1, low_open=True)}

    def sample_plan(self, n, height, width, generator):
        low, high = self.size
        short = min(height, width)
        side = (short * (low + (high - low) * uniform((n,), generator))).floor().long().clamp(1, short)
        y0 = randint(height - side, (n,), generator)
        x0 = randint(width - side, (n,), generator)
        plan = identity_plan(n)
        plan.box_bounds = torch.stack([y0, y0 + side, x0, x0 + side], 1)
        plan.box_mode = BOX_FILL
        return plan

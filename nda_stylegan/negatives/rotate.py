"""Rotate: each image turned by a multiple of 90 degrees."""

import torch

from .base import Negative, Param, identity_plan, randint


class Rotate(Negative):
    """Turn each image counter-clockwise by an angle drawn per image from ``angles``.

    Turns are exact (``torch.rot90``), no interpolation. A quarter turn would change the shape
    of a non-square image, so on non-square images only 180 degrees is drawn (90 and 270 are
    skipped); if ``angles`` does not contain 180 a non-square batch raises ValueError. An image
    with the matching symmetry is returned unchanged and marked invalid by ``apply_masked``.

    Parameters:
        angles (tuple of 90, 180, 270, default (90, 180, 270)): angles to draw from, uniformly.

    Shapes: input ``(N, C, H, W)`` float, output ``(N, C, H, W)``; ``N >= 1``.

    Example:
        >>> import torch
        >>> from nda_stylegan.negatives.rotate import Rotate
        >>> x = torch.rand(2, 3, 16, 16)
        >>> out = Rotate(angles=180)(x)
        >>> torch.equal(out, torch.rot90(x, 2, dims=(2, 3)))
        True
    """

    name = "rotate"
    PARAMS = {"angles": Param((90, 180, 270), "subset", "counter-clockwise angles in degrees to draw from",
                              choices=(90, 180, 270))}

    def _allowed(self, height, width):
        return self.angles if height == width else tuple(a for a in self.angles if a == 180)

    def check_size(self, height, width):
        if not self._allowed(height, width):
            raise ValueError("rotate: a %dx%d image is not square, so only 180 degrees keeps its shape, but "
                             "angles=%r; add 180 to angles" % (height, width, self.angles))

    def sample_plan(self, n, height, width, generator):
        allowed = torch.tensor(self._allowed(height, width), dtype=torch.int64)
        pick = randint(len(allowed), (n,), generator)
        plan = identity_plan(n)
        plan.tile_rot[:, 0] = allowed[pick] // 90
        return plan

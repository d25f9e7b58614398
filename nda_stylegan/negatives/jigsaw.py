"""Jigsaw: cut each image into k x k tiles and shuffle them (the paper's default negative)."""

import torch

from .base import Negative, Param, identity_plan, redraw_until, uniform


class Jigsaw(Negative):
    """Cut each image into ``k x k`` tiles and put them back in a random order (never the identity).

    The permutation is drawn per image, uniformly among the ``(k*k)! - 1`` non-identity ones
    (rows that drew the identity are redrawn together). The official code reassembled the tile
    grid transposed, so one of its permutations returned the unmodified image; ours never does.

    Parameters:
        k (int, default 2): tiles per side; height and width must be divisible by ``k``.

    Shapes: input ``(N, C, H, W)`` float, output ``(N, C, H, W)``; ``N >= 1``.

    Example:
        >>> import torch
        >>> from nda_stylegan.negatives.jigsaw import Jigsaw
        >>> neg = Jigsaw(k=2)
        >>> x = torch.rand(4, 3, 32, 32) * 2 - 1
        >>> params = neg.sample(x, torch.Generator().manual_seed(0))
        >>> neg.apply(x, params).shape
        torch.Size([4, 3, 32, 32])
    """

    name = "jigsaw"
    PARAMS = {"k": Param(2, "int", "tiles per side (k x k tiles)", low=2, high=64)}

    def check_size(self, height, width):
        if height % self.k or width % self.k:
            raise ValueError("jigsaw with k=%d needs height and width divisible by %d, got %dx%d; pick a k that "
                             "divides the image size" % (self.k, self.k, height, width))

    def sample_plan(self, n, height, width, generator):
        t = self.k * self.k
        ident = torch.arange(t)

        def draw(count):
            return uniform((count, t), generator).argsort(1)

        perm, _ = redraw_until(draw, lambda p: (p == ident).all(1), n, max_rounds=10 ** 6)
        plan = identity_plan(n, self.k, self.k)
        plan.tile_src_tile = perm
        return plan

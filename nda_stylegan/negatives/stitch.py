"""Stitch: an image's own top (or left) half joined to another image's other half."""

import torch

from .base import Negative, Param, derangement, identity_plan, randint

ORIENTATIONS = ("batch", "image", "horizontal", "vertical")


class Stitch(Negative):
    """Join each image's top (or left) half with the bottom (or right) half of another image.

    The partner is never the image itself (a random derangement of the batch). With an odd
    size the own half is the smaller one (``H // 2`` rows or ``W // 2`` columns).

    Parameters:
        orientation (str, default ``"batch"``): ``"batch"`` draws one seam direction per batch
            (official), ``"image"`` one per image, ``"horizontal"`` always a horizontal seam
            (own top half, partner's bottom half), ``"vertical"`` always a vertical seam (own
            left half, partner's right half).

    Shapes: input ``(N, C, H, W)`` float with ``N >= 2``, output ``(N, C, H, W)``.

    Example:
        >>> import torch
        >>> from nda_stylegan.negatives.stitch import Stitch
        >>> neg = Stitch(orientation="horizontal")
        >>> x = torch.rand(4, 3, 32, 32) * 2 - 1
        >>> out = neg(x, torch.Generator().manual_seed(0))
        >>> bool((out[:, :, :16] == x[:, :, :16]).all())
        True
    """

    name = "stitch"
    needs_partner = True
    PARAMS = {"orientation": Param("batch", "choice", "seam direction: random per batch or per image, or fixed",
                                   choices=ORIENTATIONS)}

    def check_size(self, height, width):
        if self.orientation in ("batch", "image", "horizontal") and height < 2:
            raise ValueError("stitch with a horizontal seam needs images at least 2 pixels high, got %d; use "
                             "orientation='vertical'" % height)
        if self.orientation in ("batch", "image", "vertical") and width < 2:
            raise ValueError("stitch with a vertical seam needs images at least 2 pixels wide, got %d; use "
                             "orientation='horizontal'" % width)

    def sample_plan(self, n, height, width, generator):
        if self.orientation == "batch":
            vertical = randint(2, (1,), generator).bool().expand(n)
        elif self.orientation == "image":
            vertical = randint(2, (n,), generator).bool()
        else:
            vertical = torch.full((n,), self.orientation == "vertical", dtype=torch.bool)
        partner = derangement(n, generator)
        plan = identity_plan(n, 2, 1)
        plan.grid_rows = 2 - vertical.long()  # horizontal seam: 2 x 1 grid; vertical: 1 x 2
        plan.grid_cols = 1 + vertical.long()
        plan.tile_src_image[:, 1] = partner  # tile 1 (bottom or right) comes from the partner, same place
        return plan

"""CutMix: a box of another image pasted into each image at the same place."""

import torch

from .base import Negative, beta, draw_with_partner, identity_plan, partner_params, randint, redraw_until
from .plan import BOX_PASTE


class Cutmix(Negative):
    """Paste a box of a partner image (the same place) into each image; box area about ``1 - l``.

    ``l ~ Beta(alpha, alpha)`` (``alpha = 1``: uniform, the official value). As in the official
    code the box has sides ``2 * (floor(H * sqrt(1 - l)) // 2)`` by ``2 * (floor(W * sqrt(1 - l)) // 2)``,
    is centred on a uniform pixel and clipped to the image. Degenerate boxes (empty, or the whole
    image, which would return the partner: a real image) are redrawn. The partner is never the
    image itself (a random derangement of the batch).

    Parameters:
        alpha (float, default 1.0): Beta(alpha, alpha) concentration of ``l``.
        per_image (bool, default False): one box per image instead of one per batch (official).

    Shapes: input ``(N, C, H, W)`` float with ``N >= 2`` and ``H * W >= 2``, output ``(N, C, H, W)``.

    Example:
        >>> import torch
        >>> from nda_stylegan.negatives.cutmix import Cutmix
        >>> neg = Cutmix()
        >>> x = torch.rand(4, 3, 32, 32) * 2 - 1
        >>> out, valid = neg.apply_masked(x, neg.sample(x, torch.Generator().manual_seed(0)))
        >>> bool(valid.all())
        True
    """

    name = "cutmix"
    needs_partner = True
    PARAMS = partner_params(1.0, "l (box area 1 - l)", "box")

    def check_size(self, height, width):
        if height * width < 2:
            raise ValueError("cutmix needs images of at least 2 pixels, got %dx%d" % (height, width))

    def _boxes(self, count, height, width, generator):
        def draw(k):
            cut = (1 - beta(self.alpha, k, generator)).sqrt()
            half_h = (height * cut).floor().long() // 2
            half_w = (width * cut).floor().long() // 2
            cy = randint(height, (k,), generator)
            cx = randint(width, (k,), generator)
            return torch.stack([(cy - half_h).clamp(0, height), (cy + half_h).clamp(0, height),
                                (cx - half_w).clamp(0, width), (cx + half_w).clamp(0, width)], 1)

        def bad(b):
            empty = (b[:, 1] <= b[:, 0]) | (b[:, 3] <= b[:, 2])
            whole = (b[:, 0] == 0) & (b[:, 1] == height) & (b[:, 2] == 0) & (b[:, 3] == width)
            return empty | whole

        boxes, still_bad = redraw_until(draw, bad, count)
        # Tiny images where draws keep failing: a fixed non-degenerate box (the top-left half).
        fallback = torch.tensor([0, max(1, height // 2), 0, width if height > 1 else max(1, width // 2)])
        boxes[still_bad] = fallback
        return boxes

    def sample_plan(self, n, height, width, generator):
        boxes, partner = draw_with_partner(lambda k: self._boxes(k, height, width, generator), n, self.per_image,
                                           generator)
        plan = identity_plan(n)
        plan.box_bounds = boxes
        plan.box_mode = BOX_PASTE
        plan.box_src = partner
        return plan

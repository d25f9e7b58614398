"""Mixup: a convex blend of each image with another image of the batch."""

from .base import Negative, beta, draw_with_partner, identity_plan, partner_params

# Keeps the weight away from 1 (a plan weight of exactly 1 means "no blend") and from 0 (which
# would return the partner, a real image).
_EDGE = 1e-3


class Mixup(Negative):
    """Blend ``l * x + (1 - l) * x[partner]`` with ``l ~ Beta(alpha, alpha)``.

    The partner is never the image itself (a random derangement of the batch). ``l`` is
    clipped to ``[0.001, 0.999]`` so that no output is one of the inputs.

    Parameters:
        alpha (float, default 25.0): Beta concentration (the official value; mean 0.5, std 0.07).
        per_image (bool, default False): one ``l`` per image instead of one per batch (official).

    Shapes: input ``(N, C, H, W)`` float with ``N >= 2``, output ``(N, C, H, W)``.

    Example:
        >>> import torch
        >>> from nda_stylegan.negatives.mixup import Mixup
        >>> neg = Mixup(alpha=25.0)
        >>> x = torch.rand(4, 3, 32, 32) * 2 - 1
        >>> params = neg.sample(x, torch.Generator().manual_seed(0))
        >>> out, valid = neg.apply_masked(x, params)
        >>> bool(valid.all())
        True
    """

    name = "mixup"
    needs_partner = True
    PARAMS = partner_params(25.0, "the blend weight", "blend weight")

    def sample_plan(self, n, height, width, generator):
        lam, partner = draw_with_partner(lambda k: beta(self.alpha, k, generator).clamp(_EDGE, 1 - _EDGE), n,
                                         self.per_image, generator)
        plan = identity_plan(n)
        plan.blend_src = partner
        plan.blend_w = lam.float().contiguous()
        return plan

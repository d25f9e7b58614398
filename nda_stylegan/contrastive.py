"""NDA for contrastive representation learning: NDA views as extra negatives in InfoNCE.

For anchor ``i`` the positive is its own second view; the negatives are the other images'
positives (as in SimCLR/MoCo-style in-batch InfoNCE) plus NDA views of the anchors (jigsaw,
stitch, ...). Each anchor's own NDA views are always among its negatives, so the encoder
learns to push an in-support image away from its structure-less versions.

Works with any encoder that maps ``N, C, H, W`` images to ``N, D`` embeddings. Example::

    loss_fn = NDAContrastiveLoss("jigsaw", num_views=2, temperature=0.1, seed=0)
    loss, stats = loss_fn(encoder, anchors, positives)
"""

import torch
import torch.nn.functional as F

from .pipe import NDAPipe


def check_temperature(temperature):
    if not float(temperature) > 0:
        raise ValueError("temperature must be > 0; got %r" % (temperature,))
    return float(temperature)


def info_nce_with_nda(anchor, positive, nda, temperature=0.1, nda_mask=None, own_nda_only=False):
    """InfoNCE loss of ``N`` anchors with NDA views as extra negatives.

    Args:
        anchor, positive: ``[N, D]`` embeddings (normalised here).
        nda: ``[N, V, D]`` embeddings of ``V`` NDA views per anchor.
        temperature: softmax temperature (> 0).
        nda_mask: optional bool ``[N, V]``; False drops a view (a negative equal to its source).
        own_nda_only: use only each anchor's own NDA views, not every anchor's.
    Returns the mean loss over anchors.
    """
    temperature = check_temperature(temperature)
    if anchor.dim() != 2 or positive.shape != anchor.shape:
        raise ValueError(
            "anchor and positive must both be [N, D]; got %s and %s"
            % (tuple(anchor.shape), tuple(positive.shape))
        )
    n, d = anchor.shape
    if nda.dim() != 3 or nda.shape[0] != n or nda.shape[2] != d or nda.shape[1] < 1:
        raise ValueError("nda must be [N, V, D] with V >= 1 and N, D as the anchors; got %s" % (tuple(nda.shape),))
    a = F.normalize(anchor, dim=1)
    p = F.normalize(positive, dim=1)
    v = F.normalize(nda, dim=2)
    views = v.shape[1]
    pair_logits = a @ p.t() / temperature  # [N, N]; the diagonal holds the positives
    if own_nda_only:
        nda_logits = torch.einsum("nd,nvd->nv", a, v) / temperature  # [N, V]
        keep = torch.ones_like(nda_logits, dtype=torch.bool) if nda_mask is None else nda_mask
    else:
        nda_logits = a @ v.reshape(n * views, d).t() / temperature  # [N, N * V]
        keep = (torch.ones(n, n * views, dtype=torch.bool, device=a.device) if nda_mask is None
                else nda_mask.reshape(1, n * views).expand(n, -1))
    nda_logits = nda_logits.masked_fill(~keep, float("-inf"))
    logits = torch.cat([pair_logits, nda_logits], dim=1)
    target = torch.arange(n, device=a.device)
    return F.cross_entropy(logits, target)


class NDAContrastiveLoss:
    """InfoNCE with NDA views of the anchors as extra negatives, for any encoder.

    Args:
        spec: negatives as for ``--nda`` (e.g. ``"jigsaw"`` or ``"jigsaw,stitch"``).
        num_views: NDA views drawn per anchor (>= 1).
        temperature: softmax temperature (> 0).
        seed: seed of the negatives' generator.
    """

    def __init__(self, spec="jigsaw", num_views=1, temperature=0.1, seed=None, own_nda_only=False):
        if int(num_views) != num_views or num_views < 1:
            raise ValueError("num_views must be a whole number >= 1; got %r" % (num_views,))
        self.num_views = int(num_views)
        self.temperature = check_temperature(temperature)
        self.own_nda_only = own_nda_only
        self.pipe = NDAPipe(spec, seed=seed)

    @torch.no_grad()
    def nda_views(self, anchors, generator=None):
        """``[N * V, C, H, W]`` NDA views (view-major) and their validity ``[N, V]``."""
        views, masks = [], []
        for _ in range(self.num_views):
            negatives, _, valid = self.pipe(anchors.detach(), generator=generator)
            views.append(negatives)
            masks.append(valid)
        return torch.cat(views, 0), torch.stack(masks, 1)

    def __call__(self, encoder, anchors, positives, generator=None):
        """Encode anchors, positives and NDA views; returns ``(loss, stats)``."""
        if anchors.shape != positives.shape:
            raise ValueError(
                "anchors %s and positives %s must have the same shape"
                % (tuple(anchors.shape), tuple(positives.shape))
            )
        n = anchors.shape[0]
        views, valid = self.nda_views(anchors, generator)
        z = encoder(torch.cat([anchors, positives, views], 0))
        za, zp, zv = z[:n], z[n:2 * n], z[2 * n:]
        # views are view-major ([V * N]); regroup to [N, V, D].
        zv = zv.reshape(self.num_views, n, -1).transpose(0, 1)
        loss = info_nce_with_nda(za, zp, zv, self.temperature, nda_mask=valid,
                                 own_nda_only=self.own_nda_only)
        with torch.no_grad():
            a = F.normalize(za, dim=1)
            sim_pos = (a * F.normalize(zp, dim=1)).sum(1).mean()
            sim_nda = torch.einsum("nd,nvd->nv", a, F.normalize(zv, dim=2))[valid].mean()
        stats = {"sim_positive": float(sim_pos), "sim_nda": float(sim_nda),
                 "share_masked": float(1 - valid.float().mean())}
        return loss, stats

"""NDA for paired image-to-image translation (Pix2Pix-style conditional GANs).

A paired discriminator ``D(input, target)`` sees three kinds of pairs:

- real pairs ``(x, y)``, labelled real;
- generated pairs ``(x, G(x))``, labelled fake with weight ``lambda``;
- negative pairs ``(x, NDA(y))``, labelled fake with weight ``1 - lambda``: the target is
  pushed through a negative (jigsaw, stitch, ...) while the input stays, so D learns that a
  target without global structure is not a valid translation of ``x``.

``D`` may return one score per image (``[N, 1]``) or a PatchGAN score map (``[N, 1, h, w]``);
losses are averaged over the map. The generator's adversarial loss never sees negatives.

Example::

    nda = TranslationNDA("jigsaw,stitch", nda_lambda=0.25, loss="lsgan", seed=0)
    d_loss, stats = nda.discriminator_loss(D, inputs, targets, G(inputs).detach())
    g_loss = nda.generator_loss(D, inputs, G(inputs))
"""

import torch
import torch.nn.functional as F

from .pipe import NDAPipe

LOSSES = ("logistic", "hinge", "lsgan")


def real_loss(scores, kind):
    """Per-element loss for scores that D should call real."""
    if kind == "logistic":
        return F.softplus(-scores)
    if kind == "hinge":
        return F.relu(1 - scores)
    return (scores - 1) ** 2


def fake_loss(scores, kind):
    """Per-element loss for scores that D should call fake."""
    if kind == "logistic":
        return F.softplus(scores)
    if kind == "hinge":
        return F.relu(1 + scores)
    return scores ** 2


def check_loss_kind(kind):
    if kind not in LOSSES:
        raise ValueError("unknown loss %r; choose one of: %s" % (kind, ", ".join(LOSSES)))
    return kind


def check_scores(scores, batch, who):
    """D's output must be [N, 1] (one score per image) or [N, 1, h, w] (a PatchGAN map)."""
    if not torch.is_tensor(scores) or scores.dim() not in (2, 4) or scores.shape[0] != batch:
        shape = tuple(scores.shape) if torch.is_tensor(scores) else type(scores).__name__
        raise ValueError(
            "D's output for %s pairs has shape %s; expected [N, 1] scores or an [N, 1, h, w] "
            "score map with N = %d" % (who, shape, batch)
        )
    return scores


def per_image(values):
    """Mean of a per-element loss over everything but the batch dimension."""
    return values.flatten(1).mean(1)


def check_pairs(inputs, targets, name="targets"):
    if not (torch.is_tensor(inputs) and torch.is_tensor(targets)):
        raise ValueError("inputs and %s must be tensors" % name)
    if inputs.dim() != 4 or targets.dim() != 4:
        raise ValueError(
            "inputs and %s must be N, C, H, W batches; got ranks %d and %d"
            % (name, inputs.dim(), targets.dim())
        )
    if inputs.shape[0] != targets.shape[0] or inputs.shape[2:] != targets.shape[2:]:
        raise ValueError(
            "inputs %s and %s %s must have the same batch size and height x width"
            % (tuple(inputs.shape), name, tuple(targets.shape))
        )


class TranslationNDA:
    """Discriminator and generator losses for a paired GAN, with NDA negative pairs.

    Args:
        spec: negatives as for ``--nda`` (text such as ``"jigsaw,stitch"`` or a parsed spec).
        nda_lambda: weight of the generated pairs; negative pairs get ``1 - nda_lambda``.
        loss: ``"lsgan"`` (Pix2Pix's least squares), ``"logistic"`` or ``"hinge"``.
        seed: seed of the negatives' own generator (reproducible runs).
    """

    def __init__(self, spec="jigsaw", nda_lambda=0.25, loss="lsgan", seed=None):
        if not 0 < float(nda_lambda) <= 1:
            raise ValueError("nda_lambda must be in (0, 1]; got %r" % (nda_lambda,))
        self.nda_lambda = float(nda_lambda)
        self.loss = check_loss_kind(loss)
        self.pipe = NDAPipe(spec, seed=seed)

    @torch.no_grad()
    def negative_targets(self, targets, generator=None):
        """NDA versions of the targets and the mask of those that differ from their source."""
        negatives, _, valid = self.pipe(targets.detach(), generator=generator)
        return negatives, valid

    def discriminator_loss(self, D, inputs, targets, fakes, generator=None):
        """``L_real + lambda * L_fake + (1 - lambda) * L_nda``; returns ``(loss, stats)``.

        ``fakes`` are the generator's outputs for ``inputs`` (detach them first as usual).
        """
        check_pairs(inputs, targets)
        check_pairs(inputs, fakes, name="fakes")
        n = inputs.shape[0]
        negatives, valid = self.negative_targets(targets, generator)
        real = per_image(real_loss(check_scores(D(inputs, targets), n, "real"), self.loss))
        fake = per_image(fake_loss(check_scores(D(inputs, fakes), n, "generated"), self.loss))
        neg_scores = check_scores(D(inputs, negatives), n, "negative")
        weights = valid.to(neg_scores.dtype)
        nda = (per_image(fake_loss(neg_scores, self.loss)) * weights).sum() / weights.sum().clamp(min=1)
        loss = real.mean() + self.nda_lambda * fake.mean() + (1 - self.nda_lambda) * nda
        with torch.no_grad():
            neg_per_image = neg_scores.flatten(1).mean(1)[valid]
            stats = {
                "loss_real": float(real.mean()),
                "loss_fake": float(fake.mean()),
                "loss_nda": float(nda),
                "score_negative": float(neg_per_image.mean()) if len(neg_per_image) else float("nan"),
                "share_masked": float(1 - weights.mean()),
            }
        return loss, stats

    def generator_loss(self, D, inputs, fakes):
        """The generator's adversarial loss (negatives never enter it)."""
        check_pairs(inputs, fakes, name="fakes")
        scores = check_scores(D(inputs, fakes), inputs.shape[0], "generated")
        if self.loss == "hinge":
            return -scores.mean()  # the usual generator side of the hinge loss
        return per_image(real_loss(scores, self.loss)).mean()

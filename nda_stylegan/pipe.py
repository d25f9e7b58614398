"""NDAPipe: a batch of real images -> one negative per image, mixed by weight, in one op call."""

import torch

from .negatives.base import check_flags, check_images, cpu_generator, valid_from_flags
from .negatives.plan import TilePlan
from .negatives.registry import make_negative
from .spec import format_entry, format_spec, normalize_spec


class NDAPipe(torch.nn.Module):
    """Make negatives from real images: each image gets one negative chosen by weight.

    Every negative of the spec samples a plan for the full batch (on the CPU generator), the
    plans are merged by the per-image choice and the whole mixed batch is made by ONE
    ``apply_plan`` call, without gradient. Negative ``n`` is made from image ``n``, so labels
    pass through unchanged.

    Args:
        spec: ``--nda`` text (``"jigsaw(k=4):3,cutout"``) or a parsed list of
            ``(name, params, weight)``.
        seed: when given, the pipe owns a CPU generator seeded with it (reproducible runs);
            otherwise draws use torch's default CPU generator unless a call passes one.

    Call: ``pipe(images, labels=None, generator=None) -> (negatives, labels, valid)`` where
    ``valid`` (bool ``[N]``) is False where a negative equals its source image.

    Example:
        >>> import torch
        >>> from nda_stylegan.pipe import NDAPipe
        >>> pipe = NDAPipe("jigsaw:3,stitch", seed=0)
        >>> x = torch.rand(8, 3, 32, 32) * 2 - 1
        >>> neg, labels, valid = pipe(x, torch.arange(8))
        >>> neg.shape, labels.tolist() == list(range(8)), bool(valid.all())
        (torch.Size([8, 3, 32, 32]), True, True)
    """

    def __init__(self, spec, seed=None):
        super().__init__()
        self.entries = normalize_spec(spec)
        self.negatives = [make_negative(name, **params) for name, params, _ in self.entries]
        self.names = self._entry_labels()
        weights = torch.tensor([w for _, _, w in self.entries], dtype=torch.float64)
        self.probs = weights / weights.sum()
        self.min_batch = max(neg.min_batch for neg in self.negatives)
        self.seed = seed
        self.generator = None if seed is None else torch.Generator().manual_seed(int(seed))
        self.reset_stats()

    # A torch.Generator does not pickle on every torch version: keep its state instead, so a
    # loss holding this pipe can be deep-copied or pickled and resumes the same random stream.
    def __getstate__(self):
        state = self.__dict__.copy()
        gen = state.pop("generator", None)
        state["_generator_state"] = None if gen is None else gen.get_state()
        return state

    def __setstate__(self, state):
        state = dict(state)
        gen_state = state.pop("_generator_state", None)
        self.__dict__.update(state)
        self.generator = None
        if gen_state is not None:
            self.generator = torch.Generator()
            self.generator.set_state(gen_state)

    def _entry_labels(self):
        labels = [format_entry(name, params) for name, params, _ in self.entries]
        # Same negative listed twice with the same parameters: keep the stats apart anyway.
        return [lab if labels.count(lab) == 1 else "%s#%d" % (lab, i) for i, lab in enumerate(labels)]

    @property
    def spec(self):
        return format_spec(self.entries)

    def extra_repr(self):
        return "spec=%r, seed=%r" % (self.spec, self.seed)

    # -- sampling and applying -------------------------------------------------------------------
    def sample(self, images, generator=None):
        """Draw ``(plan, choice)``: the merged TilePlan (on ``images.device``) and the CPU int64
        index ``[N]`` of the negative each image got."""
        n, _, h, w = check_images(images, "NDA", self.min_batch)
        gen = cpu_generator(generator if generator is not None else self.generator)
        if len(self.negatives) == 1:
            choice = torch.zeros(n, dtype=torch.int64)
        else:
            choice = torch.multinomial(self.probs, n, replacement=True, generator=gen)
        plans = [neg.sample_cpu(n, h, w, gen) for neg in self.negatives]
        plan = plans[0] if len(plans) == 1 else TilePlan.select(plans, choice)
        return plan.to(images.device), choice

    def apply_masked(self, images, plan):
        """Negatives and validity mask for a plan drawn by :meth:`sample` (no gradient)."""
        from .ops.tile import apply_plan  # late: the op module may build a kernel

        check_images(images, "NDA", self.min_batch)
        with torch.no_grad():
            out, flags = apply_plan(images.detach(), plan)
        check_flags(flags, "NDA")
        return out, valid_from_flags(flags)

    def forward(self, images, labels=None, generator=None):
        plan, choice = self.sample(images, generator)
        out, valid = self.apply_masked(images, plan)
        if labels is not None:
            if not isinstance(labels, torch.Tensor) or labels.dim() < 1 or labels.shape[0] != images.shape[0]:
                raise ValueError("NDA: labels must be a tensor with one row per image (%d), got %s; pass the "
                                 "labels of the same real batch" % (images.shape[0], getattr(labels, "shape", labels)))
        self._record(choice, valid)
        return out, labels, valid

    # -- statistics -----------------------------------------------------------------------------
    def reset_stats(self):
        self._count = torch.zeros(len(self.negatives), dtype=torch.int64)
        self._invalid = torch.zeros(len(self.negatives), dtype=torch.int64)

    def _record(self, choice, valid):
        k = len(self.negatives)
        self._count += torch.bincount(choice, minlength=k)
        self._invalid += torch.bincount(choice[~valid.cpu()], minlength=k)

    def stats(self):
        """Counts since the last reset: ``nda/count``, ``nda/invalid_share`` (share of negatives equal
        to their source, i.e. masked out) and per negative ``nda/<name>/share`` and ``/invalid_share``."""
        total = int(self._count.sum())
        out = {"nda/count": float(total),
               "nda/invalid_share": float(self._invalid.sum()) / total if total else 0.0}
        for name, count, invalid in zip(self.names, self._count.tolist(), self._invalid.tolist()):
            out["nda/%s/share" % name] = count / total if total else 0.0
            out["nda/%s/invalid_share" % name] = invalid / count if count else 0.0
        return out

    def pop_stats(self):
        """:meth:`stats`, then reset the counters."""
        out = self.stats()
        self.reset_stats()
        return out

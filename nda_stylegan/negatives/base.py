"""The base class of every negative, its parameter declarations and shared sampling helpers.

A negative draws a :class:`~nda_stylegan.negatives.plan.TilePlan` (``sample``) and applies it
(``apply``) with the one fused op ``nda_stylegan.ops.tile.apply_plan``. Random draws always
happen on the CPU with a ``torch.Generator`` and the plan is then moved to the images' device,
so a seed gives the same negatives on every device.
"""

import math

import torch

from .plan import FLAG_CHANGED, FLAG_NONFINITE, TilePlan

_INF = float("inf")


class Param(object):
    """One declared parameter: default, kind, allowed range and a one-line description.

    ``kind`` is one of ``"int"``, ``"float"``, ``"bool"``, ``"choice"`` (one of ``choices``),
    ``"subset"`` (a non-empty tuple of ``choices``; a single value is accepted) or
    ``"fraction"`` (a number or a ``(low, high)`` pair, each within ``[low, high]``).
    """

    def __init__(self, default, kind, help, low=None, high=None, choices=None, low_open=False):
        self.default = default
        self.kind = kind
        self.help = help
        self.low = low
        self.high = high
        self.choices = tuple(choices) if choices is not None else None
        self.low_open = low_open

    def _bounds_text(self):
        left = "(" if self.low_open else "["
        low = "-inf" if self.low is None else _num(self.low)
        high = "inf" if self.high is None else _num(self.high)
        return "%s%s, %s]" % (left, low, high)

    def allowed(self):
        """What values are allowed, in words (used in errors and ``describe``)."""
        if self.kind == "int":
            return "an int in " + self._bounds_text()
        if self.kind == "float":
            return "a number in " + self._bounds_text()
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind == "subset":
            return "a non-empty tuple of " + ", ".join(str(c) for c in self.choices)
        if self.kind == "fraction":
            return "a number or a (low, high) pair in " + self._bounds_text()
        raise AssertionError(self.kind)

    def _in_bounds(self, v):
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            return False
        return self.high is None or v <= self.high

    def validate(self, owner, name, value):
        """Return ``value`` normalised, or raise a one-line ValueError naming what is allowed."""

        def fail():
            return ValueError("%s: %s=%r is not allowed; use %s (%s)" % (owner, name, value, self.allowed(), self.help))

        if self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int) or not self._in_bounds(value):
                raise fail()
            return int(value)
        if self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise fail()
            value_f = float(value)
            if not math.isfinite(value_f) or not self._in_bounds(value_f):
                raise fail()
            return value_f
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise fail()
            return value
        if self.kind == "choice":
            if value not in self.choices:
                raise fail()
            return value
        if self.kind == "subset":
            items = value if isinstance(value, (tuple, list)) else (value,)
            if not items or any(isinstance(v, bool) or v not in self.choices for v in items):
                raise fail()
            return tuple(sorted(set(items)))
        if self.kind == "fraction":
            items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
            if len(items) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in items):
                raise fail()
            low, high = float(items[0]), float(items[1])
            if not (math.isfinite(low) and math.isfinite(high) and self._in_bounds(low)
                    and self._in_bounds(high) and low <= high):
                raise fail()
            return (low, high)
        raise AssertionError(self.kind)


def _num(v):
    return ("%d" % v) if float(v).is_integer() else repr(float(v))


# -- shared checks ---------------------------------------------------------------------------
def check_images(images, owner, min_batch=1):
    """Raise a one-line ValueError unless ``images`` is a float ``N, C, H, W`` tensor."""
    if not isinstance(images, torch.Tensor):
        raise ValueError("%s: images must be a torch.Tensor of shape [N, C, H, W], got %s"
                         % (owner, type(images).__name__))
    if images.dim() != 4:
        raise ValueError("%s: images must have shape [N, C, H, W], got %d dimensions %s; add or remove "
                         "batch/channel dimensions" % (owner, images.dim(), tuple(images.shape)))
    if not images.is_floating_point():
        raise ValueError("%s: images must be floating point (e.g. in [-1, 1]), got %s; convert with "
                         "images.float() / 127.5 - 1" % (owner, images.dtype))
    n, _, h, w = images.shape
    if n < min_batch:
        raise ValueError("%s needs a batch of at least %d images (it pairs each image with another one), got %d; "
                         "use a larger batch" % (owner, min_batch, n))
    if h < 1 or w < 1 or images.shape[1] < 1:
        raise ValueError("%s: images must not be empty, got shape %s" % (owner, tuple(images.shape)))
    return n, images.shape[1], h, w


# Flags hold only these two bits, so a flag value >= FLAG_NONFINITE has the non-finite bit set.
assert FLAG_CHANGED < FLAG_NONFINITE and FLAG_CHANGED | FLAG_NONFINITE == 3


def check_flags(flags, owner):
    """Raise when ``apply_plan`` reported a non-finite output (no extra pass over the pixels).

    One reduction and one host sync (``max``), cheaper than counting: this runs on every apply,
    where small batches make such fixed costs count; the count is only taken to report it.
    """
    if flags.numel() and int(flags.max()) >= FLAG_NONFINITE:
        bad = int(((flags & FLAG_NONFINITE) != 0).sum())
        raise ValueError("%s: %d of %d images hold NaN or Inf values; clean or clamp the batch before making "
                         "negatives" % (owner, bad, flags.shape[0]))


def valid_from_flags(flags):
    """``True`` where the negative differs from its source image."""
    return (flags & FLAG_CHANGED) != 0


def cpu_generator(generator):
    """The generator to draw with: ``generator`` (a CPU one) or torch's default CPU generator."""
    if generator is None:
        return torch.default_generator
    if not isinstance(generator, torch.Generator):
        raise ValueError("generator must be a torch.Generator, got %s" % type(generator).__name__)
    if generator.device.type != "cpu":
        raise ValueError("generator must be a CPU torch.Generator (draws happen on the CPU so that they are "
                         "identical on every device), got one on %s" % generator.device)
    return generator


# -- shared random draws (all on the CPU) ------------------------------------------------------
def uniform(shape, generator):
    """float64 uniform in [0, 1)."""
    return torch.rand(shape, generator=generator, dtype=torch.float64)


def randint(high, shape, generator):
    """int64 uniform in ``0 .. high - 1`` (``high`` an int or an int64 tensor broadcastable to shape)."""
    return (uniform(shape, generator) * high).floor().long()


def beta(alpha, count, generator):
    """``count`` draws of Beta(alpha, alpha) as float64 (ratio of two Gamma draws)."""
    conc = torch.full((2, count), float(alpha), dtype=torch.float64)
    g = torch._standard_gamma(conc, generator=generator)
    total = g[0] + g[1]
    # Both gammas can underflow to 0 for tiny alpha: fall back to a fair coin's 0.5.
    return torch.where(total > 0, g[0] / total.clamp(min=1e-300), torch.full_like(total, 0.5))


def derangement(n, generator):
    """A random permutation of ``0 .. n-1`` with no fixed point (one random n-cycle).

    For each image the partner is uniform over the other images, and every image is a partner
    exactly once; it needs no rejection loop.
    """
    order = torch.randperm(n, generator=generator)
    partner = torch.empty(n, dtype=torch.int64)
    partner[order] = order.roll(-1)
    return partner


# -- negatives that take pixels from a partner image with a Beta-drawn amount (mixup, cutmix) -----
def partner_params(alpha, amount, unit):
    """Their ``PARAMS``: ``alpha`` of the Beta(alpha, alpha) draw of ``amount``, and ``per_image``
    (one ``unit`` per image instead of one per batch, the official choice)."""
    return {
        "alpha": Param(alpha, "float", "Beta(alpha, alpha) concentration of " + amount, low=0, high=1e6,
                       low_open=True),
        "per_image": Param(False, "bool", "draw one %s per image instead of one per batch" % unit),
    }


def draw_with_partner(draw, n, per_image, generator):
    """``draw(k)`` rows for one draw per batch (``k = 1``, expanded to ``n`` rows) or one per
    image, then each image's partner (never itself): ``(rows, partner)``, drawn in that order."""
    rows = draw(n if per_image else 1)
    return rows.expand(n, *rows.shape[1:]), derangement(n, generator)


_tile_ops = None  # the module nda_stylegan.ops.tile, imported on first apply (not an import statement per call)


# -- the base class ----------------------------------------------------------------------------
class Negative(object):
    """Base class: a random transform that turns real images into out-of-distribution negatives.

    Subclasses declare ``name``, ``PARAMS`` (name -> :class:`Param`), ``needs_partner`` and
    implement ``check_size(height, width)`` and ``sample_plan(n, height, width, generator)``
    (which draws on the CPU and returns a CPU ``TilePlan``).
    """

    name = "negative"
    PARAMS = {}
    needs_partner = False

    def __init__(self, **params):
        unknown = sorted(set(params) - set(self.PARAMS))
        if unknown:
            raise ValueError("%s: unknown parameter %s; allowed: %s" % (
                self.name, ", ".join(unknown), self.allowed_params_text()))
        self.params = {}
        for key, spec in self.PARAMS.items():
            value = spec.validate(self.name, key, params.get(key, spec.default))
            self.params[key] = value
            setattr(self, key, value)

    # -- description --------------------------------------------------------------------------
    @classmethod
    def allowed_params_text(cls):
        if not cls.PARAMS:
            return "none"
        return "; ".join("%s (%s)" % (key, spec.allowed()) for key, spec in cls.PARAMS.items())

    @classmethod
    def summary(cls):
        """First line of the class docstring."""
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else cls.name

    @classmethod
    def describe(cls):
        """Name, one-line summary and one line per parameter (default, allowed values, meaning)."""
        lines = ["%s: %s" % (cls.name, cls.summary())]
        for key, spec in cls.PARAMS.items():
            lines.append("  %s=%r  (%s) %s" % (key, spec.default, spec.allowed(), spec.help))
        return "\n".join(lines)

    def __repr__(self):
        inner = ", ".join("%s=%r" % kv for kv in self.params.items())
        return "%s(%s)" % (type(self).__name__, inner)

    # -- to implement ------------------------------------------------------------------------
    def check_size(self, height, width):
        """Raise a one-line ValueError when this negative cannot handle images of this size."""

    def sample_plan(self, n, height, width, generator):
        raise NotImplementedError

    # -- public API -----------------------------------------------------------------------------
    @property
    def min_batch(self):
        return 2 if self.needs_partner else 1

    def sample(self, images, generator=None):
        """Draw the parameters (a ``TilePlan`` on ``images.device``) for this batch."""
        n, _, h, w = check_images(images, self.name, self.min_batch)
        return self.sample_cpu(n, h, w, generator).to(images.device)

    def sample_cpu(self, n, height, width, generator=None):
        """Draw a CPU ``TilePlan`` for ``n`` images of ``height x width`` pixels."""
        if n < self.min_batch:
            raise ValueError("%s needs a batch of at least %d images (it pairs each image with another one), "
                             "got %d; use a larger batch" % (self.name, self.min_batch, n))
        self.check_size(height, width)
        plan = self.sample_plan(n, height, width, cpu_generator(generator))
        return plan

    def _apply_plan(self, images, params):
        """Checked inputs -> ``apply_plan`` -> checked flags. Returns ``(out, flags)``."""
        global _tile_ops
        if _tile_ops is None:
            from ..ops import tile as _tile_ops  # late: the op module may build a kernel on import
        check_images(images, self.name)
        if not isinstance(params, TilePlan):
            raise ValueError("%s: params must be the TilePlan returned by sample(), got %s"
                             % (self.name, type(params).__name__))
        out, flags = _tile_ops.apply_plan(images, params)
        check_flags(flags, self.name)
        return out, flags

    def apply_masked(self, images, params):
        """Negatives and a bool ``[N]`` mask that is False where a negative equals its source."""
        out, flags = self._apply_plan(images, params)
        # check_flags has ruled out FLAG_NONFINITE, so any set flag is FLAG_CHANGED (one op, not two).
        return out, flags != 0

    def apply(self, images, params):
        """Negatives of ``images`` for the parameters ``params`` drawn by :meth:`sample`."""
        if type(self).apply_masked is not Negative.apply_masked:
            return self.apply_masked(images, params)[0]  # a subclass's own apply_masked decides
        # No validity mask: it costs as much as the rest of the Python around the kernel.
        return self._apply_plan(images, params)[0]

    def __call__(self, images, generator=None):
        return self.apply(images, self.sample(images, generator))


def identity_plan(n, gh=1, gw=1):
    """A CPU plan that copies every image unchanged on a ``gh x gw`` grid."""
    return TilePlan.identity(n, gh, gw, device="cpu")


def redraw_until(draw, bad, count, max_rounds=64):
    """Draw ``count`` rows, then redraw only the rows where ``bad(*values)`` is True.

    ``draw(k)`` returns ``k`` new rows (a tensor or a tuple of tensors, rows first). Returns
    the values and the mask of rows still bad after ``max_rounds`` rounds (vectorised: one
    draw per round, never one per image).
    """
    values = draw(count)
    single = isinstance(values, torch.Tensor)
    if single:
        values = (values,)
    mask = bad(*values)
    for _ in range(max_rounds):
        idx = mask.nonzero().flatten()
        if idx.numel() == 0:
            break
        fresh = draw(idx.numel())
        fresh = (fresh,) if single else fresh
        for v, f in zip(values, fresh):
            v[idx] = f
        mask = bad(*values)
    return (values[0] if single else values), mask

"""NDALoss: the paper's negative-data term added to a host trainer's own loss, without editing it.

A host builds its loss from ``loss_kwargs.class_name``; the trainer plugin points that at
``nda_stylegan.loss.NDALoss`` and moves the host's class name to ``nda_inner_class_name``. NDALoss
builds the host's loss with the remaining keyword arguments and delegates every phase to it. In
the discriminator's main phase (``Dmain`` / ``Dboth``) it adds the NDA term; G's phases and R1 are
untouched.

Modes (``nda_mode``):

- ``weighted`` (the paper's): ``L_D = L_real + lambda * L_fake + (1 - lambda) * L_nda``. The host's
  fake term is scaled without editing the host: on the inner loss *instance* (never on G, D or
  the augment pipe) ``run_G`` and ``run_D`` are wrapped; in a D main step, when ``run_D`` receives
  the very tensor ``run_G`` just returned, its logits pass through an identity whose gradient is
  multiplied by ``lambda``. Forward values (and the host's own statistics) stay unchanged.
  Negatives go through the host's ``run_D`` (so ADA / DiffAugment augment them too) in their own
  forward pass, so minibatch-stddev never groups them with reals or fakes.
- ``mixture``: a ``(1 - lambda)`` share of the fake batch (in expectation, whole minibatch-stddev
  groups at a time; sample ``i`` is in group ``i % (N // group_size)``) is replaced by negatives
  with their source labels before the host's ``run_D`` sees it. No extra D pass; negatives take
  the host's own fake loss.

Negatives are made from the same real minibatch in the same D step, without gradient, and keep
their source labels. A negative whose ``valid_mask`` is False (it equals its source) is left out
of the NDA term. Statistics: ``pop_stats()`` and, inside a fork, ``torch_utils.training_stats``.
"""

import importlib
import inspect

import torch
import torch.nn.functional as F

D_MAIN_PHASES = ("Dmain", "Dboth")
MODES = ("weighted", "mixture")
LOSSES = ("logistic", "hinge")
STAT_NAMES = ("Loss/NDA/score", "Loss/NDA/loss", "Loss/NDA/masked")


class _ScaleGradient(torch.autograd.Function):
    """Identity in the forward pass; multiplies the incoming gradient by ``scale`` (a number or a
    tensor broadcastable to the input)."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def scale_gradient(x, scale):
    """``x`` unchanged, with its gradient multiplied by ``scale``."""
    return _ScaleGradient.apply(x, scale)


def fake_loss(logits, kind):
    """Per-sample loss for logits that D should score as fake: logistic ``softplus(d)`` or hinge
    ``relu(1 + d)``."""
    if kind == "logistic":
        return F.softplus(logits)
    if kind == "hinge":
        return F.relu(1 + logits)
    raise ValueError("nda_loss=%r is not allowed; use one of %s" % (kind, ", ".join(LOSSES)))


def import_class(dotted):
    """The class named by a dotted path (``"training.loss.StyleGAN2Loss"``)."""
    module_name, _, attr = str(dotted).rpartition(".")
    if not module_name:
        raise ValueError("nda_inner_class_name=%r is not a dotted path; use e.g. 'training.loss.StyleGAN2Loss'" % (dotted,))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError("nda_inner_class_name=%r: cannot import %s (%s); run from the trainer's folder" % (dotted, module_name, exc))
    if not hasattr(module, attr):
        raise ValueError("nda_inner_class_name=%r: module %s has no %s" % (dotted, module_name, attr))
    return getattr(module, attr)


def host_style(loss):
    """``"sync"`` for stylegan2-ada-pytorch's ``accumulate_gradients(..., sync, gain)``,
    ``"cur_nimg"`` for stylegan3's / ours ``(..., gain, cur_nimg)``."""
    params = inspect.signature(loss.accumulate_gradients).parameters
    if "sync" in params and "gain" in params:
        return "sync"
    if "gain" in params and "cur_nimg" in params:
        return "cur_nimg"
    raise ValueError("%s.accumulate_gradients(%s) has neither the stylegan2-ada-pytorch signature "
                     "(..., sync, gain) nor the stylegan3 one (..., gain, cur_nimg)"
                     % (type(loss).__name__, ", ".join(params)))


def mbstd_group_size(D):
    """The ``group_size`` of D's minibatch-stddev module: an int, None (= whole batch), or 1 when
    D has no such module (every sample is its own group)."""
    if D is None:
        return 1
    for module in D.modules():
        if hasattr(module, "group_size") and module is not D:
            return module.group_size
    return 1


def effective_group_size(group_size, n):
    """The group size the host uses for a batch of ``n``: ``min(group_size, n)``, or ``n``."""
    return n if group_size is None else max(1, min(int(group_size), n))


def _optional_training_stats():
    """A fork's ``torch_utils.training_stats`` when importable, else None (our trainer has none)."""
    try:
        module = importlib.import_module("torch_utils.training_stats")
    except ImportError:
        return None
    return module if hasattr(module, "report") else None


def _build_pipe(spec):
    if spec is None:
        return None
    if callable(spec) and not isinstance(spec, str):  # an already-built NDAPipe-like object
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("nda_spec=%r is not allowed; use a spec text such as 'jigsaw' or 'jigsaw,stitch'" % (spec,))
    from .pipe import NDAPipe  # imported late: the pipe pulls in the negatives and their ops

    return NDAPipe(spec)


class NDALoss(object):
    """Wraps a host's loss (``nda_inner_class_name``) and adds the NDA term to D's main phase.

    Args: ``nda_inner_class_name`` dotted path of the host's loss class; ``nda_spec`` a ``--nda``
    spec text (or an NDAPipe-like callable, or None = off); ``nda_lambda`` in (0, 1]: the weight of
    the host's fakes (negatives get ``1 - lambda``); ``nda_mode`` ``"weighted"`` | ``"mixture"``;
    ``nda_loss`` ``"logistic"`` | ``"hinge"`` (weighted mode only); ``nda_seed`` seed of the
    negatives' generator (default: ``torch.initial_seed()``, which hosts set per rank). Every other
    keyword goes to the host's loss unchanged.
    """

    def __init__(self, nda_inner_class_name, nda_spec=None, nda_lambda=0.25, nda_mode="weighted",
                 nda_loss="logistic", nda_seed=None, **host_kwargs):
        if isinstance(nda_lambda, bool) or not isinstance(nda_lambda, (int, float)) or not 0 < nda_lambda <= 1:
            raise ValueError("nda_lambda=%r is not allowed; use a number in (0, 1] (the paper uses 0.25)" % (nda_lambda,))
        if nda_mode not in MODES:
            raise ValueError("nda_mode=%r is not allowed; use one of %s" % (nda_mode, ", ".join(MODES)))
        if nda_loss not in LOSSES:
            raise ValueError("nda_loss=%r is not allowed; use one of %s" % (nda_loss, ", ".join(LOSSES)))
        if nda_mode == "mixture" and nda_loss != "logistic":
            raise ValueError("nda_loss=%r needs nda_mode='weighted': in mixture mode negatives take the "
                             "host's own (logistic) fake loss" % (nda_loss,))
        self.nda_lambda = float(nda_lambda)
        self.nda_mode = nda_mode
        self.nda_loss = nda_loss
        self.inner = import_class(nda_inner_class_name)(**host_kwargs)
        self.style = host_style(self.inner)
        self._inner_signature = inspect.signature(self.inner.accumulate_gradients)
        self.pipe = _build_pipe(nda_spec)
        self.group_size = mbstd_group_size(host_kwargs.get("D"))
        self.generator = torch.Generator()
        self.generator.manual_seed(int(torch.initial_seed() if nda_seed is None else nda_seed) % (2 ** 63))
        self._training_stats = _optional_training_stats()
        self._stat_sums = {}
        self._step = None  # state of the D main step in progress, None outside one
        # Wrap on the loss instance only: nothing of ours reaches G, D or the augment pipe, so
        # host snapshots never reference this package.
        self._host_run_G = self.inner.run_G
        self._host_run_D = self.inner.run_D
        self.inner.run_G = self._run_G
        self.inner.run_D = self._run_D

    def __getattr__(self, name):
        # Attributes we do not define (pl_mean, r1_gamma, ...) are the host loss's.
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    # ---- the host's accumulate_gradients, with the NDA term ----------------------------------

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, *args, **kwargs):
        bound = self._inner_signature.bind(phase, real_img, real_c, gen_z, gen_c, *args, **kwargs)
        if phase not in D_MAIN_PHASES or self.pipe is None:
            return self.inner.accumulate_gradients(*bound.args, **bound.kwargs)
        gain = bound.arguments["gain"]
        step = {"real_img": real_img, "real_c": real_c, "gen_img": None, "real_call": None}
        if self.nda_mode == "mixture":
            return self._inside_step(step, bound)
        if self.nda_lambda == 1:  # no weight left for negatives
            return self.inner.accumulate_gradients(*bound.args, **bound.kwargs)
        if self.style == "sync":
            # First, unsynced: the host's own real pass (sync=sync) then all-reduces D's
            # accumulated gradient, ours included.
            self._negative_pass(real_img, real_c, gain, (), {"sync": False})
            return self._inside_step(step, bound)
        result = self._inside_step(step, bound)
        # After the host's passes, reusing the arguments of its real-image run_D call
        # (stylegan3's blur_sigma): negatives see what the reals saw.
        args_D, kwargs_D = step["real_call"] or ((), {})
        self._negative_pass(real_img, real_c, gain, args_D, kwargs_D)
        return result

    def _inside_step(self, step, bound):
        self._step = step
        try:
            return self.inner.accumulate_gradients(*bound.args, **bound.kwargs)
        finally:
            self._step = None

    def _run_G(self, *args, **kwargs):
        out = self._host_run_G(*args, **kwargs)
        if self._step is not None:
            self._step["gen_img"] = out[0] if isinstance(out, (tuple, list)) else out
        return out

    def _run_D(self, img, c, *args, **kwargs):
        step = self._step
        if step is None:
            return self._host_run_D(img, c, *args, **kwargs)
        if step["gen_img"] is None or img is not step["gen_img"]:
            step["real_call"] = (args, dict(kwargs))
            return self._host_run_D(img, c, *args, **kwargs)
        if self.nda_mode == "weighted":
            return scale_gradient(self._host_run_D(img, c, *args, **kwargs), self.nda_lambda)
        return self._run_D_mixture(step, img, c, args, kwargs)

    # ---- weighted: the negatives' own D pass ------------------------------------------------

    def make_negatives(self, real_img, real_c, generator=None):
        """Negatives of a real batch, with their source labels and validity; no gradient."""
        with torch.no_grad():
            neg, neg_c, valid = self.pipe(real_img.detach(), real_c, generator=self.generator if generator is None else generator)
        if neg_c is None:
            neg_c = real_c
        return neg.detach(), neg_c, valid.to(device=neg.device, dtype=torch.bool)

    def _negative_pass(self, real_img, real_c, gain, args_D, kwargs_D):
        neg, neg_c, valid = self.make_negatives(real_img, real_c)
        n = neg.shape[0]
        g = effective_group_size(self.group_size, n)
        n -= n % g  # whole minibatch-stddev groups only
        neg, neg_c, valid = neg[:n], neg_c[:n], valid[:n]
        logits = self._host_run_D(neg, neg_c, *args_D, **kwargs_D)
        per_sample = fake_loss(logits, self.nda_loss).reshape(n, -1).mean(1)
        weight = valid.to(per_sample.dtype)
        n_valid = weight.sum()
        loss = (per_sample * weight).sum() / n_valid.clamp(min=1)
        (loss * ((1 - self.nda_lambda) * gain)).backward()
        self._record(logits.detach().reshape(n, -1).mean(1), per_sample.detach(), valid)

    # ---- mixture: whole groups of the fake batch replaced -----------------------------------

    def mixture_groups(self, n):
        """Boolean mask [n]: samples of the fake batch to replace by negatives. Whole groups
        (sample ``i`` in group ``i % (n // g)``); the number of groups is ``(1 - lambda)`` times
        the group count, rounded stochastically so that the expected share is exact."""
        g = effective_group_size(self.group_size, n)
        n_groups = max(n // g, 1)
        target = (1 - self.nda_lambda) * n_groups
        k = int(target)
        if torch.rand([], generator=self.generator).item() < target - k:
            k += 1
        chosen = torch.randperm(n_groups, generator=self.generator)[:k]
        replace = torch.zeros(n_groups, dtype=torch.bool)
        replace[chosen] = True
        return replace[torch.arange(n) % n_groups]

    def _run_D_mixture(self, step, gen_img, gen_c, args, kwargs):
        n = gen_img.shape[0]
        replace = self.mixture_groups(n).to(gen_img.device)
        if not bool(replace.any()):
            return self._host_run_D(gen_img, gen_c, *args, **kwargs)
        real_img, real_c = step["real_img"], step["real_c"]
        source = torch.arange(n, device=real_img.device) % real_img.shape[0]
        neg, neg_c, valid = self.make_negatives(real_img[source], real_c[source])
        img_mask = replace.view(n, *([1] * (gen_img.dim() - 1)))
        mixed_img = torch.where(img_mask, neg.to(gen_img.dtype), gen_img)
        mixed_c = gen_c
        if gen_c is not None and gen_c.dim() >= 1 and gen_c.shape[0] == n:
            mixed_c = torch.where(replace.view(n, *([1] * (gen_c.dim() - 1))), neg_c.to(gen_c.dtype), gen_c)
        logits = self._host_run_D(mixed_img, mixed_c, *args, **kwargs)
        # A masked negative equals a real image: it stays in its group (the batch keeps its
        # structure) but contributes no gradient.
        masked = replace & ~valid
        keep = (~masked).to(logits.dtype).view(n, *([1] * (logits.dim() - 1)))
        logits = scale_gradient(logits, keep)
        flat = logits.detach().reshape(n, -1).mean(1)
        self._record(flat[replace], fake_loss(flat[replace], "logistic"), valid[replace])
        return logits

    # ---- statistics and snapshot images -----------------------------------------------------

    def _record(self, scores, losses, valid):
        valid_f = valid.to(scores.dtype)
        n_valid = valid_f.sum()
        values = {
            "Loss/NDA/score": ((scores * valid_f).sum(), n_valid),
            "Loss/NDA/loss": ((losses * valid_f).sum(), n_valid),
            "Loss/NDA/masked": ((1 - valid_f).sum(), torch.as_tensor(float(valid.numel()))),
        }
        for name, (total, count) in values.items():
            old = self._stat_sums.get(name)
            self._stat_sums[name] = (total, count) if old is None else (old[0] + total, old[1] + count.to(old[1].device))
        if self._training_stats is not None:
            self._training_stats.report("Loss/NDA/score", scores[valid])
            self._training_stats.report("Loss/NDA/loss", losses[valid])
            self._training_stats.report("Loss/NDA/masked", 1 - valid_f)

    def pop_stats(self):
        """Means since the last call: D's score on negatives, the NDA loss, the masked share
        (plus the pipe's and the host loss's own statistics when they have ``pop_stats``)."""
        stats = dict(self.inner.pop_stats()) if hasattr(self.inner, "pop_stats") else {}
        if hasattr(self.pipe, "pop_stats"):  # NDAPipe: share of each negative, share equal to source
            stats.update(self.pipe.pop_stats())
        for name, (total, count) in self._stat_sums.items():
            count = float(count)
            if count > 0:
                stats[name] = float(total) / count
        self._stat_sums = {}
        return stats

    def snapshot_images(self, real_img, real_c):
        """``{"negatives": tensor}`` made from ``real_img`` with a fixed seed, so successive
        snapshots show the same draw (plus the host loss's own images when it has any)."""
        images = dict(self.inner.snapshot_images(real_img, real_c)) if hasattr(self.inner, "snapshot_images") else {}
        if self.pipe is not None:
            generator = torch.Generator()
            generator.manual_seed(0)
            images["negatives"] = self.make_negatives(real_img, real_c, generator=generator)[0]
        return images

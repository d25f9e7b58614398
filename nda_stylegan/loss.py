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
- ``reweight``: a control for studies, not NDA: G's fake term is scaled by ``lambda`` exactly as
  in ``weighted`` mode, and no negatives are made. A difference between ``weighted`` and
  ``reweight`` comes from the negatives, not from down-weighting the fakes.

``nda_start_kimg``: before that many thousand real images, the host's loss runs untouched (no
negatives, no scaling): a warm-up curriculum, as the official code offers.

Randomness: the negatives of a D main step come from a generator seeded afresh for that step,
from (base seed, steps taken since the base seed changed). The base is ``torch.initial_seed()``
unless ``nda_seed`` is given (then ``nda_seed`` mixed with the process's rank). Our trainer
reseeds torch before every round from (seed, iteration, phase, global round index), so there the
negatives are a function of exactly that: exact on resume, distinct per rank, and the same for
1 or N processes at the same global batch. A fork that seeds torch once per rank gets a stream
per (seed, rank, step); the step count is part of ``state_dict()``.

Negatives are made from the same real minibatch in the same D step, without gradient, and keep
their source labels. A negative whose ``valid_mask`` is False (it equals its source) is left out
of the NDA term. Statistics: ``pop_stats()`` and, inside a fork, ``torch_utils.training_stats``.
"""

import hashlib
import importlib
import inspect
import warnings

import torch
import torch.nn.functional as F

D_MAIN_PHASES = ("Dmain", "Dboth")
MODES = ("weighted", "mixture", "reweight")
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


def step_seed(base, step):
    """The seed of one D main step's negatives: a 63-bit hash of (base seed, step index)."""
    digest = hashlib.blake2b(repr(("nda-step", int(base), int(step))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _world_and_rank():
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


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
    the host's fakes (negatives get ``1 - lambda``); ``nda_mode`` ``"weighted"`` | ``"mixture"`` |
    ``"reweight"`` (the control: scaling only, needs no spec); ``nda_loss`` ``"logistic"`` |
    ``"hinge"`` (weighted mode only); ``nda_start_kimg`` kimg before which the host's loss runs
    untouched; ``nda_seed`` base seed of the negatives (default: ``torch.initial_seed()`` at each
    step, see the module's notes on randomness). Every other keyword goes to the host's loss
    unchanged.
    """

    def __init__(self, nda_inner_class_name, nda_spec=None, nda_lambda=0.25, nda_mode="weighted",
                 nda_loss="logistic", nda_start_kimg=0, nda_seed=None, **host_kwargs):
        if isinstance(nda_lambda, bool) or not isinstance(nda_lambda, (int, float)) or not 0 < nda_lambda <= 1:
            raise ValueError("nda_lambda=%r is not allowed; use a number in (0, 1] (the paper uses 0.25)" % (nda_lambda,))
        if nda_mode not in MODES:
            raise ValueError("nda_mode=%r is not allowed; use one of %s" % (nda_mode, ", ".join(MODES)))
        if nda_loss not in LOSSES:
            raise ValueError("nda_loss=%r is not allowed; use one of %s" % (nda_loss, ", ".join(LOSSES)))
        if nda_mode == "mixture" and nda_loss != "logistic":
            raise ValueError("nda_loss=%r needs nda_mode='weighted': in mixture mode negatives take the "
                             "host's own (logistic) fake loss" % (nda_loss,))
        if isinstance(nda_start_kimg, bool) or not isinstance(nda_start_kimg, (int, float)) or not 0 <= nda_start_kimg < float("inf"):
            raise ValueError("nda_start_kimg=%r is not allowed; use a number of kimg >= 0 (0: NDA from the start)"
                             % (nda_start_kimg,))
        if nda_mode == "reweight" and nda_spec is not None:
            raise ValueError("nda_mode='reweight' makes no negatives; give nda_spec=None (it is the control "
                             "arm of weighted mode: fakes scaled by nda_lambda, nothing else)")
        self.nda_lambda = float(nda_lambda)
        self.nda_mode = nda_mode
        self.nda_loss = nda_loss
        self.nda_start_kimg = float(nda_start_kimg)
        self.inner = import_class(nda_inner_class_name)(**host_kwargs)
        self.style = host_style(self.inner)
        self._inner_signature = inspect.signature(self.inner.accumulate_gradients)
        self.pipe = _build_pipe(nda_spec)
        self.group_size = mbstd_group_size(host_kwargs.get("D"))
        self.nda_seed = None if nda_seed is None else int(nda_seed)
        self.generator = torch.Generator()
        self._seed_base = None  # base seed of the last step, and steps taken since it changed
        self._seed_steps = 0
        self._seen_nimg = 0  # real images seen in D main steps (all ranks): the kimg of sync-style hosts
        self._warned_unscaled = False
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
        if phase not in D_MAIN_PHASES or not self._active(bound, real_img):
            return self.inner.accumulate_gradients(*bound.args, **bound.kwargs)
        self._seed_step()
        gain = bound.arguments["gain"]
        step = {"real_img": real_img, "real_c": real_c, "gen_img": None, "real_call": None, "fake_seen": False}
        if self.nda_mode in ("mixture", "reweight"):
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

    def _active(self, bound, real_img):
        """Whether this D main step gets the NDA treatment: a pipe (or reweight mode) and past
        the warm-up. Counts the images of sync-style hosts, which do not pass ``cur_nimg``."""
        if self.pipe is None and self.nda_mode != "reweight":
            return False
        if "cur_nimg" in bound.arguments:
            cur_nimg = int(bound.arguments["cur_nimg"])
        else:
            cur_nimg = self._seen_nimg
            self._seen_nimg += int(real_img.shape[0]) * _world_and_rank()[0]
        return cur_nimg >= self.nda_start_kimg * 1000

    def _seed_step(self):
        """Seed ``self.generator`` for this D main step (see the module's notes on randomness)."""
        if self.nda_seed is None:
            base = torch.initial_seed()
        else:
            base = step_seed(self.nda_seed, -1 - _world_and_rank()[1])  # one stream per rank
        if base != self._seed_base:
            self._seed_base, self._seed_steps = base, 0
        self.generator.manual_seed(step_seed(base, self._seed_steps))
        self._seed_steps += 1

    def _inside_step(self, step, bound):
        self._step = step
        try:
            result = self.inner.accumulate_gradients(*bound.args, **bound.kwargs)
        finally:
            self._step = None
        if step["gen_img"] is not None and not step["fake_seen"] and not self._warned_unscaled:
            self._warned_unscaled = True
            warnings.warn("NDALoss (%s mode): the host's D step never passed the tensor returned by run_G to "
                          "run_D (cast or augmented in between?), so G's fake term could not be %s; make the "
                          "host call run_D on run_G's output and cast/augment inside run_D"
                          % (self.nda_mode, "replaced in part by negatives" if self.nda_mode == "mixture"
                             else "scaled by nda_lambda"), RuntimeWarning, stacklevel=3)
        return result

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
        step["fake_seen"] = True
        if self.nda_mode in ("weighted", "reweight"):
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
            # Nothing replaced: report empty statistics anyway, so every rank reports the same
            # names in the same order (a fork's training_stats all-reduces them by position).
            empty = gen_img.new_zeros([0])
            self._record(empty, empty, torch.zeros([0], dtype=torch.bool, device=gen_img.device))
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

    def state_dict(self):
        """The host loss's state plus NDA's step counters (exact resume)."""
        host = self.inner.state_dict() if callable(getattr(self.inner, "state_dict", None)) else None
        nda = {"seed_base": self._seed_base, "seed_steps": self._seed_steps, "seen_nimg": self._seen_nimg}
        return {"host": host, "nda": nda}

    def load_state_dict(self, state):
        """Accepts ``state_dict()``'s format and a bare host state (snapshots from before NDA
        kept its counters)."""
        if isinstance(state, dict) and set(state) == {"host", "nda"}:
            host, nda = state["host"], state["nda"] or {}
            self._seed_base = nda.get("seed_base")
            self._seed_steps = int(nda.get("seed_steps", 0))
            self._seen_nimg = int(nda.get("seen_nimg", 0))
        else:
            host = state
        if host is not None and callable(getattr(self.inner, "load_state_dict", None)):
            self.inner.load_state_dict(host)

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

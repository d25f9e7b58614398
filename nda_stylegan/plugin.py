"""The trainer plugin (entry point ``nda`` in group ``stylegan.trainer_plugins``).

It adds ``--nda``, ``--nda-lambda``, ``--nda-mode``, ``--nda-loss`` and ``--nda-start-kimg`` to a
trainer's ``train.py`` (ours, or a fork patched by ``nda-stylegan patch``) and, when ``--nda`` is
given, rewrites the training config so that the host builds :class:`nda_stylegan.loss.NDALoss`
around its own loss class. ``--nda-mode=reweight`` (without ``--nda``) builds the control arm of a
study: G's fakes scaled by lambda, no negatives. Without either the config is left untouched.
"""

import math

import click

from .spec import DEFAULT_SPEC  # the spec module loads the negatives' registry only when parsing

LOSS_CLASS = "nda_stylegan.loss.NDALoss"
# The defaults of the NDA options (with spec.DEFAULT_SPEC, what --nda=default makes): what the
# README's study "Does NDA help?" recommends by its rule, which for these three are the paper's
# values (tests/test_defaults_follow_study.py checks them against the committed results).
DEFAULT_LAMBDA = 0.25
DEFAULT_MODE = "weighted"
DEFAULT_START_KIMG = 0.0
MODES = ("weighted", "mixture", "reweight")
OFF_WORDS = ("none", "off")
LOSS_CHOICES = ("auto", "logistic", "hinge")


def _check_lambda(ctx, param, value):
    if value is None:
        return None
    if not math.isfinite(value) or not 0 < value <= 1:
        raise click.BadParameter("%g is not in (0, 1]; the paper uses 0.25 (weight of G's fakes; "
                                 "negatives get 1 - lambda)" % value)
    return value


def _check_start(ctx, param, value):
    if value is None:
        return None
    if not math.isfinite(value) or value < 0:
        raise click.BadParameter("%g is not a number of kimg >= 0 (0: NDA from the first step)" % value)
    return value


class NDAPlugin(object):
    """Options and config rewrite of nda_stylegan (docs/contracts.md section 3)."""

    name = "nda"

    def click_options(self):
        """Fresh click options (a host appends them to its train command)."""
        return [
            click.Option(["--nda"], type=str, default=None, metavar="SPEC",
                         help="Negative data augmentation: negatives for D, e.g. 'jigsaw' or "
                              "'jigsaw(k=4):3,stitch'; 'default' is '%s'  [default: off]" % DEFAULT_SPEC),
            click.Option(["--nda-lambda"], type=float, default=None, metavar="FLOAT", callback=_check_lambda,
                         help="Weight of G's fakes in D's fake term, in (0, 1]; negatives get 1 - lambda  "
                              "[default: %g]" % DEFAULT_LAMBDA),
            click.Option(["--nda-mode"], type=click.Choice(MODES), default=None,
                         help="weighted: extra D pass on negatives; mixture: negatives replace part of "
                              "the fake batch; reweight (without --nda): a study's control, fakes scaled "
                              "by lambda and no negatives  [default: %s]" % DEFAULT_MODE),
            click.Option(["--nda-loss"], type=click.Choice(LOSS_CHOICES), default=None,
                         help="Loss of the NDA term; auto = the host's logistic  [default: auto]"),
            click.Option(["--nda-start-kimg"], type=float, default=None, metavar="FLOAT", callback=_check_start,
                         help="Switch NDA on only after this many kimg (a warm-up without it)  [default: %g]"
                              % DEFAULT_START_KIMG),
        ]

    def option_names(self):
        return ["nda", "nda_lambda", "nda_mode", "nda_loss", "nda_start_kimg"]

    def rewrite_config(self, config, options):
        """Point ``config['loss_kwargs']`` at NDALoss around the host's loss class; return the
        run-name text (``"nda-jigsaw-stitch"``), or None without ``--nda`` (config untouched)."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.option_names()))
        if unknown:
            raise click.UsageError("nda plugin: unknown option(s) %s; known: %s"
                                   % (", ".join(unknown), ", ".join(self.option_names())))
        spec = options.get("nda")
        if isinstance(spec, str) and not spec.strip():
            raise click.BadParameter("the spec is empty (an unset shell variable?); give negatives such as "
                                     "'jigsaw,stitch', or --nda=none to train without NDA", param_hint="'--nda'")
        if isinstance(spec, str) and spec.strip().lower() in OFF_WORDS:
            spec = None
        mode = options.get("nda_mode")
        if spec is None and mode != "reweight":
            given = [n for n in self.option_names()[1:] if options.get(n) is not None]
            if given:
                raise click.UsageError("--%s has no effect without --nda; add --nda=SPEC (e.g. --nda=jigsaw)"
                                       % given[0].replace("_", "-"))
            return None
        lam = options.get("nda_lambda")
        lam = DEFAULT_LAMBDA if lam is None else _check_lambda(None, None, float(lam))
        mode = mode or DEFAULT_MODE
        if mode not in MODES:
            raise click.BadParameter("%r is not one of %s" % (mode, ", ".join(MODES)), param_hint="'--nda-mode'")
        loss = options.get("nda_loss") or "auto"
        if loss not in LOSS_CHOICES:
            raise click.BadParameter("%r is not one of %s" % (loss, ", ".join(LOSS_CHOICES)), param_hint="'--nda-loss'")
        loss = "logistic" if loss == "auto" else loss
        if mode == "mixture" and loss != "logistic":
            raise click.UsageError("--nda-loss=%s needs --nda-mode=weighted: in mixture mode negatives take the "
                                   "host's own logistic fake loss" % loss)
        start = options.get("nda_start_kimg")
        start = DEFAULT_START_KIMG if start is None else _check_start(None, None, float(start))
        if mode == "reweight":
            if spec is not None:
                raise click.UsageError("--nda-mode=reweight makes no negatives; drop --nda (reweight is the control "
                                       "arm: G's fakes scaled by --nda-lambda, nothing else)")
            if options.get("nda_loss") is not None:
                raise click.UsageError("--nda-loss has no effect with --nda-mode=reweight (there is no NDA term)")
            slug = "reweight"
        else:
            from .spec import parse_spec, resolve_spec, spec_slug  # late: parsing loads the negatives' registry

            spec = resolve_spec(spec)  # the config records the negatives, not the word 'default'
            try:
                parse_spec(spec)
                slug = spec_slug(spec)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="'--nda'")
        if start:
            slug += "-start%g" % start

        loss_kwargs = config.get("loss_kwargs") if hasattr(config, "get") else None
        if loss_kwargs is None or not loss_kwargs.get("class_name"):
            raise click.UsageError("nda plugin: the training config has no loss_kwargs.class_name to wrap; "
                                   "this train.py is not a StyleGAN2-ADA-style trainer")
        inner = loss_kwargs["class_name"]
        if inner == LOSS_CLASS:
            raise click.UsageError("nda plugin: loss_kwargs already builds %s (plugin applied twice?)" % LOSS_CLASS)
        from .spec import check_spec_fits_config  # the spec against the run's image size and batch

        try:
            check_spec_fits_config(spec, config)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--nda'")
        host_kwargs = [(k, v) for k, v in loss_kwargs.items() if k != "class_name"]
        # In place, keeping the container's type (dict or the host's EasyDict).
        loss_kwargs.clear()
        loss_kwargs["class_name"] = LOSS_CLASS
        loss_kwargs["nda_inner_class_name"] = inner
        loss_kwargs["nda_spec"] = spec
        loss_kwargs["nda_lambda"] = float(lam)
        loss_kwargs["nda_mode"] = mode
        loss_kwargs["nda_loss"] = loss
        if start:  # only when set: configs of runs without a warm-up stay as they were
            loss_kwargs["nda_start_kimg"] = float(start)
        for key, value in host_kwargs:
            loss_kwargs[key] = value
        return "nda-" + slug


plugin = NDAPlugin()

"""The ``--nda`` spec language: which negatives, with which parameters and mixing weights.

    jigsaw                              one negative, default parameters
    jigsaw,stitch                       equal weights (1.0 each)
    jigsaw(k=4):3,cutout(size=0.25):1   parameters in parentheses, weights after a colon
    default                             DEFAULT_SPEC: the negatives the README recommends

Values: ints, floats, ``true``/``false``, words or quoted strings, and tuples such as
``(0.25, 0.5)`` (commas inside parentheses or quotes never split entries).
"""

import ast
import math
import re

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*\Z")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_\-\.]*\Z")
_ENTRY = re.compile(r"\s*([^\s(:]+)\s*(?:\((.*)\))?\s*(?::\s*(.*?))?\s*\Z", re.DOTALL)
_EXAMPLE = "e.g. 'jigsaw,stitch' or 'jigsaw(k=4):3,cutout(size=0.25):1'"

# What ``--nda=default`` makes. It follows the README's study "Does NDA help?" by its rule fixed
# before the study (tests/test_defaults_follow_study.py checks this against the committed
# results): jigsaw alone beat the baseline's Frechet distance there, with full and limited data;
# the paper's pair jigsaw,stitch did not.
DEFAULT_SPEC = "jigsaw"
DEFAULT_WORD = "default"  # never a negative's name: the registry skips a plugin that takes it


def resolve_spec(spec):
    """``spec`` with the word ``default`` (any case) replaced by DEFAULT_SPEC; anything else as it is."""
    if isinstance(spec, str) and spec.strip().lower() == DEFAULT_WORD:
        return DEFAULT_SPEC
    return spec


def _split_top_level(text, what):
    """Split on commas outside parentheses and quotes; ValueError on unbalanced parentheses."""
    parts, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth < 0:
                raise ValueError("unbalanced ')' in %s %r; close every '(' once" % (what, text))
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if quote:
        raise ValueError("unclosed quote in %s %r" % (what, text))
    if depth:
        raise ValueError("unbalanced '(' in %s %r; close every '(' once" % (what, text))
    parts.append(text[start:])
    return parts


def _scalar(value):
    return isinstance(value, (int, float, str)) and not isinstance(value, complex)


def parse_value(text):
    """One parameter value: number, true/false, word, quoted string or tuple of those."""
    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        if _WORD.match(text):
            return text
        raise ValueError("cannot read %r" % text)
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(value, tuple):
        if not all(_scalar(v) for v in value):
            raise ValueError("cannot read %r (tuples may hold numbers, booleans and strings only)" % text)
        return value
    if not _scalar(value):
        raise ValueError("cannot read %r" % text)
    return value


def _parse_weight(text, entry):
    try:
        weight = float(text)
    except ValueError:
        weight = None
    if weight is None or not math.isfinite(weight) or weight <= 0:
        raise ValueError("bad weight %r in NDA spec entry %r; a weight is a positive number after ':', "
                         "e.g. 'jigsaw:3'" % (text, entry.strip()))
    return weight


def _parse_params(text, entry, name):
    params = {}
    if not text.strip():
        return params
    for item in _split_top_level(text, "parameters of %r" % entry.strip()):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not _NAME.match(key) or not raw.strip():
            raise ValueError("bad parameter %r in NDA spec entry %r; write name=value, e.g. '%s(k=4)'"
                             % (item.strip(), entry.strip(), name))
        if key in params:
            raise ValueError("parameter %r given twice in NDA spec entry %r" % (key, entry.strip()))
        try:
            params[key] = parse_value(raw)
        except ValueError as exc:
            raise ValueError("%s as the value of %s in NDA spec entry %r; use a number, true/false, a word or "
                             "a tuple like (0.25, 0.5)" % (exc, key, entry.strip()))
    return params


def validate_entry(name, params, weight):
    """Check one ``(name, params, weight)`` against the registry; returns it normalised."""
    from .negatives.registry import get_negative_class

    cls = get_negative_class(name)  # ValueError listing the available negatives
    if not isinstance(params, dict):
        raise ValueError("parameters of negative %r must be a dict, got %s" % (name, type(params).__name__))
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
        raise ValueError("weight of negative %r must be a positive number, got %r" % (name, weight))
    cls(**params)  # ValueError naming the bad parameter and what is allowed
    return (name, dict(params), float(weight))


def parse_spec(text):
    """Parse an ``--nda`` spec into a list of ``(name, params_dict, weight)``.

    >>> parse_spec("jigsaw(k=4):3,cutout(size=0.25)")
    [('jigsaw', {'k': 4}, 3.0), ('cutout', {'size': 0.25}, 1.0)]
    """
    if not isinstance(text, str):
        raise ValueError("NDA spec must be a string, got %s; %s" % (type(text).__name__, _EXAMPLE))
    text = resolve_spec(text)
    if not text.strip():
        from .negatives.registry import available_negatives

        raise ValueError("empty NDA spec; name at least one negative (%s), %s"
                         % (", ".join(available_negatives()), _EXAMPLE))
    parsed = []
    for entry in _split_top_level(text, "NDA spec"):
        if not entry.strip():
            raise ValueError("empty entry in NDA spec %r (stray comma?); %s" % (text, _EXAMPLE))
        match = _ENTRY.match(entry)
        if not match or not _NAME.match(match.group(1)):
            raise ValueError("cannot read NDA spec entry %r; write name, name(param=value) or name:weight, %s"
                             % (entry.strip(), _EXAMPLE))
        name, params_text, weight_text = match.groups()
        params = _parse_params(params_text or "", entry, name)
        weight = 1.0 if weight_text is None else _parse_weight(weight_text, entry)
        try:
            parsed.append(validate_entry(name, params, weight))
        except ValueError as exc:
            raise ValueError("%s (in NDA spec entry %r)" % (exc, entry.strip()))
    _check_weights(parsed)
    return parsed


def _check_weights(parsed):
    """The weights must give a probability distribution: a finite sum (``1e308`` twice overflows
    to inf, and every share becomes 0) and no share that rounds to 0."""
    total = sum(weight for _, _, weight in parsed)  # inf on overflow (math.fsum would raise)
    if not math.isfinite(total):
        raise ValueError("the NDA spec's weights add up to more than the largest float (%s); only their ratios "
                         "matter, so use small numbers such as 'jigsaw:3,stitch:1'" % ", ".join(
                             "%s:%g" % (name, weight) for name, _, weight in parsed))
    for name, _, weight in parsed:
        if weight / total == 0:
            raise ValueError("the weight %g of %s is too small next to the others (sum %g) to ever be drawn; "
                             "only the ratios matter, so use numbers such as 'jigsaw:3,stitch:1'" % (weight, name, total))


def normalize_spec(spec):
    """A spec given as text, a list of names, ``(name, params)`` or ``(name, params, weight)``."""
    if isinstance(spec, str):
        return parse_spec(spec)
    if not isinstance(spec, (list, tuple)) or not spec:
        raise ValueError("NDA spec must be a non-empty string or list of (name, params, weight); %s" % _EXAMPLE)
    out = []
    for item in spec:
        if isinstance(item, str):
            item = (item, {}, 1.0)
        if not isinstance(item, (list, tuple)) or len(item) not in (2, 3):
            raise ValueError("NDA spec list items must be (name, params) or (name, params, weight), got %r" % (item,))
        name, params = item[0], item[1]
        weight = item[2] if len(item) == 3 else 1.0
        out.append(validate_entry(name, params or {}, weight))
    _check_weights(out)
    return out


def check_spec_fits(spec, height, width=None, batch=None):
    """Raise a one-line ValueError unless every negative of ``spec`` can be made from a batch of
    ``batch`` images (per process) of ``height x width`` pixels, e.g. ``jigsaw(k=3)`` at 32 px.

    Call it where the image size is known and nothing has started yet (a trainer's config
    rewrite, ``nda-stylegan preview``), so a run never fails on its first NDA step.
    """
    from .negatives.registry import make_negative

    width = height if width is None else width
    for name, params, _ in normalize_spec(spec):
        negative = make_negative(name, **params)
        entry = format_entry(name, params)
        try:
            negative.check_size(height, width)
        except ValueError as exc:
            raise ValueError("%s (NDA spec entry %r)" % (exc, entry))
        if batch is not None and batch < negative.min_batch:
            raise ValueError("%s pairs each image with another one of its batch, so it needs at least %d images per "
                             "process, but the batch per process is %d; raise --batch or drop %s from the NDA spec"
                             % (entry, negative.min_batch, batch, name))


def check_spec_fits_config(spec, config):
    """:func:`check_spec_fits` for a StyleGAN2-ADA-style training config (ours, stylegan2-ada-pytorch's
    ``args`` or stylegan3's ``c``): square images of ``training_set_kwargs.resolution`` pixels and
    ``batch_gpu`` images per process. Does nothing for ``spec=None`` or an unknown resolution."""
    training_set = config.get("training_set_kwargs") or {}
    resolution = training_set.get("resolution")
    if spec is None or not resolution:
        return
    batch = config.get("batch_gpu")
    check_spec_fits(spec, int(resolution), int(resolution), batch=None if batch is None else int(batch))


def _format_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        plain = _WORD.match(value) and value.lower() not in ("true", "false")
        return value if plain and not _is_literal(value) else repr(value)
    if isinstance(value, (tuple, list)):
        inner = ",".join(_format_value(v) for v in value)
        return "(%s,)" % inner if len(value) == 1 else "(%s)" % inner
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _is_literal(text):
    try:
        ast.literal_eval(text)
        return True
    except (ValueError, SyntaxError):
        return False


def _format_weight(weight):
    weight = float(weight)
    return "%d" % weight if weight.is_integer() and abs(weight) < 1e15 else repr(weight)


def format_entry(name, params):
    if not params:
        return name
    return "%s(%s)" % (name, ",".join("%s=%s" % (k, _format_value(params[k])) for k in sorted(params)))


def format_spec(parsed):
    """Canonical text of a parsed spec (parameters sorted, weight 1 omitted); parses back equal."""
    parts = []
    for name, params, weight in normalize_spec(parsed):
        text = format_entry(name, params)
        parts.append(text if weight == 1 else "%s:%s" % (text, _format_weight(weight)))
    return ",".join(parts)


def spec_slug(spec):
    """A short, file-name-safe name for run folders: ``jigsaw-stitch``, ``jigsaw_k4-cutout``."""
    parts = []
    for name, params, _ in normalize_spec(spec):
        bits = [name]
        for key in sorted(params):
            value = params[key]
            value = "_".join(_format_value(v) for v in value) if isinstance(value, (tuple, list)) else _format_value(value)
            bits.append(re.sub(r"[^A-Za-z0-9._]", "", key.replace("_", "") + value))
        parts.append("_".join(bits))
    return "-".join(parts)

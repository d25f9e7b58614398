"""Discovery of negatives: entry points of group ``nda_stylegan.negatives`` plus the built-ins.

A third-party package adds a negative with one line in its setup.py::

    entry_points={"nda_stylegan.negatives": ["blur = mypkg.blur:Blur"]}

where ``Blur`` subclasses :class:`nda_stylegan.negatives.base.Negative`. The built-in
negatives are found even when the package metadata is absent (e.g. running from a checkout);
an entry point never replaces a built-in of the same name, and the names ``default``, ``none``
and ``off`` are words of the spec language, never negatives.
"""

import importlib

ENTRY_POINT_GROUP = "nda_stylegan.negatives"
BUILTIN_NEGATIVES = ("jigsaw", "stitch", "mixup", "cutout", "cutmix", "rotate", "mosaic")
RESERVED_NAMES = ("default", "none", "off")  # spec words (--nda=default, --nda=none): never a negative

_cache = {}


def _entry_points():
    """Entry points of our group on Python 3.8 .. 3.13 (the importlib.metadata API changed in 3.10/3.12)."""
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - Python < 3.8
        return []
    try:
        eps = metadata.entry_points()
    except Exception:  # broken metadata of some unrelated distribution: fall back to the built-ins
        return []
    if hasattr(eps, "select"):  # 3.10+: EntryPoints / SelectableGroups
        return list(eps.select(group=ENTRY_POINT_GROUP))
    return list(eps.get(ENTRY_POINT_GROUP, ()))  # 3.8 / 3.9: dict of group -> list


def _builtin_loader(name):
    def load():
        module = importlib.import_module("nda_stylegan.negatives." + name)
        return getattr(module, name.capitalize())
    return load


def _loaders(refresh=False):
    if refresh or "loaders" not in _cache:
        loaders = {}
        for ep in _entry_points():
            if ep.name.strip().lower() in RESERVED_NAMES:
                continue  # the spec language gives these words their own meaning (spec.resolve_spec)
            loaders.setdefault(ep.name, ep.load)
        for name in BUILTIN_NEGATIVES:
            loaders[name] = _builtin_loader(name)
        _cache["loaders"] = loaders
        _cache["classes"] = {}
    return _cache["loaders"]


def available_negatives(refresh=False):
    """Sorted names of every negative that can be made (built-ins and installed plugins)."""
    return sorted(_loaders(refresh))


def get_negative_class(name):
    """The class registered as ``name``; ValueError naming the available negatives otherwise."""
    loaders = _loaders()
    if not isinstance(name, str) or name not in loaders:
        raise ValueError("unknown negative %r; available: %s" % (name, ", ".join(sorted(loaders))))
    classes = _cache["classes"]
    if name not in classes:
        try:
            cls = loaders[name]()
        except Exception as exc:
            raise ValueError("negative %r could not be loaded from its entry point (%s: %s); reinstall the "
                             "package that provides it" % (name, type(exc).__name__, exc))
        for attr in ("sample", "apply", "apply_masked"):
            if not callable(getattr(cls, attr, None)):
                raise ValueError("negative %r (%r) has no %s(); subclass nda_stylegan.negatives.base.Negative"
                                 % (name, cls, attr))
        classes[name] = cls
    return classes[name]


def make_negative(name, **params):
    """A negative by registry name, e.g. ``make_negative("jigsaw", k=4)``.

    Unknown names raise ValueError listing the available negatives; unknown or bad parameters
    raise ValueError listing the allowed ones.
    """
    return get_negative_class(name)(**params)

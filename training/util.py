"""Small helpers the trainer shares: attribute dicts, building objects from dotted class names
and kimg/time formatting. (Atomic file writes: ``nda_stylegan.fileio``.)"""

import importlib


class EasyDict(dict):
    """A dict whose keys are also attributes (``c.batch_size`` == ``c['batch_size']``)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name)

    def __setattr__(self, name, value):
        self[name] = value

    def __delattr__(self, name):
        del self[name]


def get_obj_by_name(name):
    """Resolve a dotted path such as ``torch.optim.Adam`` to the object it names."""
    if not isinstance(name, str) or not name:
        raise ValueError("class_name must be a dotted path such as 'torch.optim.Adam', got %r" % (name,))
    parts = name.split(".")
    # Import the longest importable module prefix, then walk attributes (handles nested classes).
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and not module_name.startswith(exc.name):
                raise  # the module exists but one of its own imports is missing: show that
            continue
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            raise ValueError("cannot find %r: module %r has no attribute %r" % (name, module_name, attr))
        return obj
    raise ValueError("cannot import %r: no importable module in that dotted path" % (name,))


def construct_class_by_name(*args, class_name=None, **kwargs):
    """Build ``class_name(*args, **kwargs)``; configs name their classes this way so a behaviour
    (loss, network, augment pipe) is swapped without editing the loop."""
    if class_name is None:
        raise ValueError("missing 'class_name' in kwargs %s" % sorted(kwargs))
    cls = get_obj_by_name(class_name)
    if not callable(cls):
        raise ValueError("%r is not a class or function" % (class_name,))
    return cls(*args, **kwargs)


def to_plain(obj):
    """Recursively turn EasyDicts/tuples into plain dicts/lists (safe for json and weights_only)."""
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def to_easydict(obj):
    """Recursively turn plain dicts into EasyDicts (configs read back from json or .pt files)."""
    if isinstance(obj, dict):
        return EasyDict({k: to_easydict(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return [to_easydict(v) for v in obj]
    return obj


def format_time(seconds):
    """Compact duration: ``45s``, ``3m 05s``, ``2h 07m``, ``1d 03h``."""
    s = int(round(max(seconds, 0)))
    if s < 60:
        return "%ds" % s
    if s < 3600:
        return "%dm %02ds" % (s // 60, s % 60)
    if s < 86400:
        return "%dh %02dm" % (s // 3600, (s // 60) % 60)
    return "%dd %02dh" % (s // 86400, (s // 3600) % 24)


def parse_range(text, max_count=None):
    """Parse ``'0-3,7,10-11'`` into ``[0, 1, 2, 3, 7, 10, 11]``; ValueError on bad syntax, or when
    the list would hold more than ``max_count`` values (checked before it is built)."""
    spans = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            lo = int(lo)
            hi = int(hi) if sep else lo
            if hi < lo:
                raise ValueError
        except ValueError:
            raise ValueError("bad range %r: use comma-separated integers or ranges like '0-7,10'" % (part,))
        spans.append((lo, hi))
    if not spans:
        raise ValueError("empty range %r: give integers or ranges like '0-7,10'" % (text,))
    count = sum(hi - lo + 1 for lo, hi in spans)
    if max_count is not None and count > max_count:
        raise ValueError("%r names %d values, more than the %d allowed at once; split it into smaller ranges"
                         % (text, count, max_count))
    return [v for lo, hi in spans for v in range(lo, hi + 1)]

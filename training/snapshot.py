"""Network snapshots: ``network-snapshot-NNNNNN.pkl`` + ``network-snapshot-NNNNNN.pt``.

- ``.pkl``: the host format (stylegan2-ada's): a pickle of ``dict(G, D, G_ema, augment_pipe,
  training_set_kwargs)``. It may only reference ``training.*`` classes and torch/stdlib objects
  (checked before writing), so plain ``pickle.load`` works from a checkout of this repo without
  nda_stylegan installed.
- ``.pt``: the same networks as state dicts + class names + init kwargs, plus the state needed to
  resume exactly (optimisers, loss state, ADA statistics, counters, RNG), readable with
  ``torch.load(weights_only=True)``: loading it runs no pickled code.

Both are written atomically (temp file + os.replace), the .pkl first: a .pt on disk means its
.pkl is complete too, and a process killed at any moment leaves the previous files intact.
"""

import copy
import inspect
import io
import os
import pickle
import pickletools
import re

import torch

from nda_stylegan.fileio import atomic_write
from training.util import EasyDict, get_obj_by_name, to_easydict, to_plain

FORMAT = "nda-stylegan-snapshot"
FORMAT_VERSION = 1
NETWORK_NAMES = ("G", "D", "G_ema", "augment_pipe")
SNAPSHOT_RE = re.compile(r"^network-snapshot-(\d+)\.(pkl|pt)$")
# Top-level modules a .pkl may reference: our trainer, torch, numpy and the stdlib helpers
# pickle itself uses. Everything else (nda_stylegan, __main__, test modules) is refused.
PICKLE_ALLOWED_ROOTS = ("training", "torch", "numpy", "collections", "builtins", "copyreg", "_codecs", "functools")
# Packages a .pt may name network classes from (imported to rebuild the networks).
NETWORK_CLASS_ROOTS = ("training",)


def snapshot_stem(run_dir, cur_nimg):
    return os.path.join(run_dir, "network-snapshot-%06d" % (cur_nimg // 1000))


def list_snapshots(run_dir):
    """Sorted ``[(kimg, path_of_pt)]`` of the complete snapshots (a .pt exists) in ``run_dir``."""
    found = []
    for name in os.listdir(run_dir):
        m = SNAPSHOT_RE.match(name)
        if m and m.group(2) == "pt":
            found.append((int(m.group(1)), os.path.join(run_dir, name)))
    return sorted(found)


def latest_snapshot(run_dir):
    """Path of the newest complete snapshot's .pt in ``run_dir``, or None."""
    found = list_snapshots(run_dir)
    return found[-1][1] if found else None


# ---------------------------------------------------------------------------- writing
def _frozen_copy(module):
    return None if module is None else copy.deepcopy(module).eval().requires_grad_(False).cpu()


def _class_name(obj):
    return "%s.%s" % (type(obj).__module__, type(obj).__qualname__)


def _network_record(module, construct_kwargs=None):
    init_kwargs = getattr(module, "init_kwargs", None)
    if not isinstance(init_kwargs, dict):
        if construct_kwargs is None:
            raise ValueError("cannot snapshot %s: it has no init_kwargs and none were given" % _class_name(module))
        init_kwargs = {k: v for k, v in construct_kwargs.items() if k != "class_name"}
    state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    return dict(class_name=_class_name(module), init_kwargs=to_plain(dict(init_kwargs)), state_dict=state)


def pickle_globals(data):
    """The ``(module, name)`` pairs a pickle byte string would import when loaded."""
    found = set()
    recent = []  # values pushed by the last ops (strings or None), enough for STACK_GLOBAL
    memo = {}
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL" or op.name == "INST":
            module, name = arg.split(" ", 1)
            found.add((module, name))
            recent.append(None)
        elif op.name == "STACK_GLOBAL":
            found.add((recent[-2], recent[-1]))
            recent.append(None)
        elif op.name == "MEMOIZE":
            memo[len(memo)] = recent[-1] if recent else None
        elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = recent[-1] if recent else None
        elif op.name in ("GET", "BINGET", "LONG_BINGET"):
            recent.append(memo.get(arg))
        elif "UNICODE" in op.name or op.name in ("STRING", "BINSTRING", "SHORT_BINSTRING"):
            recent.append(arg)
        else:
            recent.append(None)
        del recent[:-4]
    return found


def check_pickle_globals(data, what="snapshot"):
    bad = sorted("%s.%s" % (m, n) for m, n in pickle_globals(data)
                 if not isinstance(m, str) or m.split(".")[0] not in PICKLE_ALLOWED_ROOTS)
    if bad:
        raise ValueError("refusing to write the %s: its pickle would import %s; networks and augment pipe must be "
                         "training.* classes (no nda_stylegan or other code)" % (what, ", ".join(bad[:5])))


def _all_finite(module):
    return all(torch.isfinite(t).all() for t in module.state_dict().values() if t.is_floating_point())


def save_snapshot(stem, networks, training_set_kwargs, resume_state=None, construct_kwargs=None):
    """Write ``<stem>.pkl`` and ``<stem>.pt``; ``networks`` maps G/D/G_ema/augment_pipe to modules
    (augment_pipe may be None). ``construct_kwargs`` maps a network name to the kwargs it was
    built with, used when the module carries no ``init_kwargs``. Returns the .pkl path."""
    nets = {name: _frozen_copy(networks.get(name)) for name in NETWORK_NAMES}
    for name in ("G", "D", "G_ema"):
        if nets[name] is None:
            raise ValueError("save_snapshot needs a %s network" % name)
        if not _all_finite(nets[name]):
            raise ValueError("refusing to write a snapshot: %s holds NaN/Inf weights" % name)
    ts_kwargs = to_plain(dict(training_set_kwargs or {}))

    buf = io.BytesIO()
    pickle.dump(dict(nets, training_set_kwargs=ts_kwargs), buf, protocol=pickle.HIGHEST_PROTOCOL)
    payload = buf.getvalue()
    check_pickle_globals(payload)

    construct_kwargs = construct_kwargs or {}
    records = {name: None if module is None else _network_record(module, construct_kwargs.get(name))
               for name, module in nets.items()}
    weights = dict(format=FORMAT, version=FORMAT_VERSION, networks=records, training_set_kwargs=ts_kwargs,
                   resume_state=resume_state)

    with atomic_write(stem + ".pkl") as f:
        f.write(payload)
    with atomic_write(stem + ".pt") as f:
        torch.save(weights, f)
    return stem + ".pkl"


# ---------------------------------------------------------------------------- reading
def _not_a_snapshot(path, why):
    return ValueError("%s is not a network snapshot (%s); give a network-snapshot-*.pkl or .pt written by train.py"
                      % (path, why))


def _build_network(record, path, name):
    class_name = record.get("class_name", "")
    if class_name.split(".")[0] not in NETWORK_CLASS_ROOTS:
        raise _not_a_snapshot(path, "%s has class %r outside %s" % (name, class_name, "/".join(NETWORK_CLASS_ROOTS)))
    cls = get_obj_by_name(class_name)
    module = cls(**to_easydict(record["init_kwargs"]))
    module.load_state_dict(record["state_dict"])
    return module.eval().requires_grad_(False)


def _torch_loads_weights_only():
    # torch.load(weights_only=True) exists from torch 1.13; older torch would hand the keyword to
    # pickle and fail in a way that looks like a bad file.
    return "weights_only" in inspect.signature(torch.load).parameters


def read_weights_file(path):
    """The raw content of a .pt snapshot (plain data and tensors; no code runs)."""
    if not _torch_loads_weights_only():
        raise ValueError("reading %s safely needs torch >= 1.13 (torch.load(weights_only=True)); load the "
                         ".pkl snapshot beside it instead, or update torch" % path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip/pickle/format errors of any kind mean: not our file
        raise _not_a_snapshot(path, "%s: %s" % (type(exc).__name__, str(exc).splitlines()[0] if str(exc) else ""))
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _not_a_snapshot(path, "no '%s' header" % FORMAT)
    if data.get("version", 0) > FORMAT_VERSION:
        raise ValueError("%s was written by a newer version (format %s > %d); update this checkout"
                         % (path, data.get("version"), FORMAT_VERSION))
    return data


def _pair_paths(path):
    path = os.fspath(path)
    for ext in (".pkl", ".pt"):
        if path.endswith(ext):
            stem = path[: -len(ext)]
            return stem + ".pkl", stem + ".pt"
    return None, None


def load_network_file(path):
    """Load a snapshot: ``dict(G, D, G_ema, augment_pipe, training_set_kwargs, resume_state)``.

    Prefers the .pt next to a given .pkl (no pickled code runs); falls back to the pickle when
    only it exists. Networks come back on the CPU in eval mode. ValueError (one line) when the
    file is missing or is not a network snapshot."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError("network file %s does not exist; give a network-snapshot-*.pkl or .pt" % path)
    pkl_path, pt_path = _pair_paths(path)
    if pt_path is not None and os.path.isfile(pt_path):
        data = read_weights_file(pt_path)
        out = EasyDict(training_set_kwargs=to_easydict(data.get("training_set_kwargs") or {}),
                       resume_state=data.get("resume_state"), path=pt_path)
        for name in NETWORK_NAMES:
            record = data["networks"].get(name)
            try:
                out[name] = None if record is None else _build_network(record, pt_path, name)
            except ValueError:
                raise
            except Exception as exc:
                raise ValueError("%s: cannot rebuild %s (%s: %s); was it written by another version of the networks?"
                                 % (pt_path, name, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else ""))
        return out
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
    except Exception as exc:
        raise _not_a_snapshot(path, "%s: %s" % (type(exc).__name__, str(exc).splitlines()[0] if str(exc) else ""))
    if not isinstance(data, dict) or not any(isinstance(data.get(k), torch.nn.Module) for k in ("G", "G_ema")):
        raise _not_a_snapshot(path, "no G or G_ema network in it")
    out = EasyDict(data)
    for name in NETWORK_NAMES:
        out.setdefault(name, None)
    out.setdefault("training_set_kwargs", EasyDict())
    out["resume_state"] = None
    out["path"] = path
    return out

"""Network snapshots: ``network-snapshot-NNNNNN.pkl`` + ``network-snapshot-NNNNNN.pt``.

``NNNNNN`` is the whole kimg, as in stylegan2-ada-pytorch; a later snapshot of the same run
within the same kimg (short runs with fractional ``--kimg`` or ticks) adds the images past it:
``network-snapshot-000000_064`` is 64 images, ``network-snapshot-000004_500`` 4.5 kimg. Names
sort in training order and never collide within a run.

- ``.pkl``: stylegan2-ada-pytorch's format, a pickle of ``dict(G, D, G_ema, augment_pipe,
  training_set_kwargs)`` in which each network is a recipe naming only the host's public classes
  (``training.networks.Generator``, ...; see training.network_pickle). NVIDIA's
  ``legacy.load_network_pkl`` loads it from their own checkout, plain ``pickle.load`` from ours;
  nda_stylegan is never needed.
- ``.pt``: the same networks as state dicts + class names + init kwargs, plus the state needed to
  resume exactly (optimisers, loss state, ADA statistics, counters, RNG), readable with
  ``torch.load(weights_only=True)``.

Loading runs no code from either file: .pt files through ``weights_only``, pickles (ours, older
ones of ours, NVIDIA's) through a restricted unpickler that rebuilds our classes. The file the
user names is the one loaded; its twin (same stem) only adds the resume state, and only when it
holds exactly the same weights.

Both are written atomically (temp file + os.replace), the .pkl first: a .pt on disk means its
.pkl is complete too, and a process killed at any moment leaves the previous files intact.
"""

import copy
import inspect
import os
import pickletools
import re

import torch

from nda_stylegan.fileio import atomic_write
from training.network_pickle import HOST_NAMES, NotANetworkPickle, dumps_networks, read_network_pickle
from training.util import EasyDict, get_obj_by_name, to_easydict, to_plain

FORMAT = "nda-stylegan-snapshot"
FORMAT_VERSION = 1
NETWORK_NAMES = ("G", "D", "G_ema", "augment_pipe")
SNAPSHOT_RE = re.compile(r"^network-snapshot-(\d+)(?:_(\d{3}))?\.(pkl|pt)$")
# What a .pkl may reference: the host's public network classes, and torch / functools /
# collections for tensors and the recipes. Names of ours that NVIDIA's checkout lacks
# (training.networks_generator, nda_stylegan, test modules) are refused.
PICKLE_ALLOWED_NAMES = frozenset(HOST_NAMES.values())
PICKLE_ALLOWED_ROOTS = ("torch", "functools", "collections")
# Packages a .pt may name network classes from (imported to rebuild the networks).
NETWORK_CLASS_ROOTS = ("training",)


def kimg_stem(run_dir, prefix, cur_nimg, extensions):
    """Path without extension of a file written at ``cur_nimg`` images: ``<prefix>NNNNNN`` (whole
    kimg, the host's names), unless an earlier file of this run already holds that name with one
    of ``extensions`` (then the images past the kimg are added: ``<prefix>000000_064``)."""
    kimg, extra = divmod(int(cur_nimg), 1000)
    stem = os.path.join(run_dir, "%s%06d" % (prefix, kimg))
    if any(os.path.exists(stem + ext) for ext in extensions):
        stem += "_%03d" % extra
    return stem


def snapshot_stem(run_dir, cur_nimg):
    """Path without extension of the snapshot at ``cur_nimg`` images (see ``kimg_stem``)."""
    return kimg_stem(run_dir, "network-snapshot-", cur_nimg, (".pkl", ".pt"))


def list_snapshots(run_dir):
    """``[(kimg, path_of_pt)]`` of the complete snapshots (a .pt exists) in ``run_dir``, in training
    order (``kimg`` is the whole kimg of the name)."""
    found = []
    for name in os.listdir(run_dir):
        m = SNAPSHOT_RE.match(name)
        if m and m.group(3) == "pt":
            # The plain name is the first snapshot of its kimg: it sorts before the suffixed ones.
            order = (int(m.group(1)), -1 if m.group(2) is None else int(m.group(2)))
            found.append((order, os.path.join(run_dir, name)))
    return [(order[0], path) for order, path in sorted(found)]


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
                 if (m, n) not in PICKLE_ALLOWED_NAMES and not (isinstance(m, str) and m.split(".")[0] in PICKLE_ALLOWED_ROOTS))
    if bad:
        raise ValueError("refusing to write the %s: its pickle would import %s, which stylegan2-ada-pytorch's "
                         "checkout does not have" % (what, ", ".join(bad[:5])))


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

    payload = dumps_networks(nets, ts_kwargs)
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
    return ValueError("%s is not a network snapshot (%s); give a network-snapshot-*.pkl or .pt written by train.py, "
                      "or a stylegan2-ada-pytorch network pickle" % (path, why))


def _first_line(exc):
    return "%s: %s" % (type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")


def _build_network(record, path, name):
    class_name = record.get("class_name", "")
    if class_name.split(".")[0] not in NETWORK_CLASS_ROOTS:
        raise _not_a_snapshot(path, "%s has class %r outside %s" % (name, class_name, "/".join(NETWORK_CLASS_ROOTS)))
    try:
        cls = get_obj_by_name(class_name)
    except Exception as exc:
        raise _not_a_snapshot(path, "%s has class %r, which cannot be found (%s)" % (name, class_name, _first_line(exc)))
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        # Only network classes are built: a record must not call just any function of ours.
        raise _not_a_snapshot(path, "%s names %r, which is not a network class" % (name, class_name))
    _check_size(cls, record, path, name)
    try:
        module = cls(**to_easydict(record["init_kwargs"]))
        module.load_state_dict(record["state_dict"])
    except Exception as exc:
        raise _cannot_rebuild(path, name, class_name, exc)
    return module.eval().requires_grad_(False)


def _cannot_rebuild(path, name, class_name, exc):
    return ValueError("%s: cannot rebuild %s as %s (%s); was it written by another version of the networks?"
                      % (path, name, class_name, _first_line(exc)))


def _check_size(cls, record, path, name):
    """Build the network on the meta device (no memory) and refuse a record whose constructor
    arguments ask for more weights than the file holds: a crafted file could otherwise make us
    allocate without bound before load_state_dict, which would fail on it anyway."""
    held = sum(v.numel() for v in record["state_dict"].values() if isinstance(v, torch.Tensor))
    try:
        with torch.device("meta"):
            probe = cls(**to_easydict(record["init_kwargs"]))
    except Exception as exc:
        raise _cannot_rebuild(path, name, record.get("class_name"), exc)
    needed = sum(v.numel() for v in probe.state_dict().values())
    if needed > held:
        raise ValueError("%s: %s's constructor arguments describe %d weights but the file holds %d; the file is "
                         "damaged or was not written by a network's own code" % (path, name, needed, held))


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
        raise _not_a_snapshot(path, _first_line(exc))
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _not_a_snapshot(path, "no '%s' header" % FORMAT)
    if data.get("version", 0) > FORMAT_VERSION:
        raise ValueError("%s was written by a newer version (format %s > %d); update this checkout"
                         % (path, data.get("version"), FORMAT_VERSION))
    return data


def read_pickle_file(path):
    """The records of a network pickle (see training.network_pickle), read without running code."""
    with open(path, "rb") as f:
        try:
            return read_network_pickle(f)
        except NotANetworkPickle as exc:
            raise _not_a_snapshot(path, str(exc))


def _twin(path, ext):
    """``path`` with its .pkl/.pt extension swapped for ``ext``, or None."""
    stem, old = os.path.splitext(path)
    return stem + ext if old in (".pkl", ".pt") and old != ext else None


def _same_weights(records_a, records_b):
    """True when both snapshots hold the same networks, tensor for tensor."""
    for name in NETWORK_NAMES:
        a, b = records_a.get(name), records_b.get(name)
        if (a is None) != (b is None):
            return False
        if a is None:
            continue
        sa, sb = a["state_dict"], b["state_dict"]
        if set(sa) != set(sb) or not all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa):
            return False
    return True


def _folder_message(path):
    newest = sorted(n for n in os.listdir(path) if SNAPSHOT_RE.match(n) and n.endswith(".pkl"))
    if newest:
        return ("%s is a folder (a run folder?), not a network snapshot; give one of its snapshot files, e.g. %s"
                % (path, os.path.join(path, newest[-1])))
    return "%s is a folder, not a network snapshot, and holds no network-snapshot-*.pkl; give a snapshot file" % path


def _is_weights_file(path):
    if path.endswith(".pt"):
        return True
    if path.endswith(".pkl"):
        return False
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"  # torch.save writes zip archives; pickles never start so


def _read_named_file(path):
    """``(content, is_weights_file)`` of the file the user named; when it cannot be read, the
    error names its twin (the .pkl of a .pt, or the other way round) if there is one."""
    is_weights = _is_weights_file(path)
    reader, twin_ext, holds = ((read_weights_file, ".pkl", "holds the networks too") if is_weights
                               else (read_pickle_file, ".pt", "may hold the networks"))
    try:
        return reader(path), is_weights
    except ValueError as exc:
        twin = _twin(path, twin_ext)
        if twin and os.path.isfile(twin):
            raise ValueError("%s; the %s beside it %s: give %s" % (exc, twin_ext, holds, twin))
        raise


def load_network_file(path):
    """Load a snapshot: ``dict(G, D, G_ema, augment_pipe, training_set_kwargs, resume_state, path,
    notes)``.

    The named file is loaded (.pt, or any network pickle: ours or stylegan2-ada-pytorch's), with
    no code from it run. A named .pkl gets the resume state of the .pt beside it only when that
    .pt holds the same weights; ``notes`` says when a twin was passed over and why. Networks come
    back on the CPU in eval mode. ValueError (one line) when the file is missing or is not a
    network snapshot."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(_folder_message(path))
    if not os.path.isfile(path):
        raise ValueError("network file %s does not exist; give a network-snapshot-*.pkl or .pt" % path)
    notes = []
    data, is_weights = _read_named_file(path)
    if is_weights:
        records, extra, resume_state = data["networks"], {}, data.get("resume_state")
    else:
        records, extra, resume_state = data["networks"], data["extra"], None
        twin = _twin(path, ".pt")
        if twin and os.path.isfile(twin):
            try:
                twin_data = read_weights_file(twin)
            except ValueError as exc:
                notes.append("ignored %s beside it: %s" % (twin, str(exc).split("; give")[0]))
            else:
                if _same_weights(records, twin_data["networks"]):
                    resume_state = twin_data.get("resume_state")
                else:
                    notes.append("ignored %s beside it: it holds other networks (another run's snapshot?)" % twin)
    out = EasyDict(extra)
    out.update(training_set_kwargs=to_easydict(data.get("training_set_kwargs") or {}), resume_state=resume_state,
               path=path, notes=notes)
    for name in NETWORK_NAMES:
        record = records.get(name)
        out[name] = None if record is None else _build_network(record, path, name)
    return out

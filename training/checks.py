"""Checks of train.py's inputs that need to open something: the dataset, the networks, a
``--resume`` snapshot, the output folder, the metric names. Each failure is a one-line
``click.UsageError`` naming the problem and the fix."""

import collections
import os

import click

DatasetInfo = collections.namedtuple("DatasetInfo", "name size resolution num_channels has_labels label_dim")


def fail(message):
    raise click.UsageError(message)


def _construct(kwargs, **extra):
    from training.util import construct_class_by_name

    return construct_class_by_name(**kwargs, **extra)


def open_dataset(kwargs, option="--data"):
    """Open the dataset once to learn its shape; every way it can be unusable becomes a UsageError."""
    from training.dataset import DatasetError

    try:
        ds = _construct(kwargs)
    except DatasetError as exc:
        fail("%s: %s" % (option, exc))
    except (OSError, ValueError) as exc:
        fail("%s: cannot read %s (%s)" % (option, kwargs.get("path", "the dataset"), exc))
    if len(ds) == 0:
        fail("%s: the dataset has no images; point --data at a folder or zip of images" % option)
    channels, height, width = ds.image_shape
    if height != width:
        fail("%s: images are %dx%d; they must be square (crop them, e.g. with dataset_tool.py)" % (option, width, height))
    if height < 4 or height & (height - 1):
        fail("%s: image size %d is not a power of two >= 4; resize to e.g. %d (dataset_tool.py)"
             % (option, height, 1 << max(2, height.bit_length() - 1)))
    if channels not in (1, 3):
        fail("%s: images have %d channels; use greyscale (1) or RGB (3)" % (option, channels))
    name = getattr(ds, "name", None) or "builtin"
    info = DatasetInfo(name=name, size=len(ds), resolution=height, num_channels=channels,
                       has_labels=bool(getattr(ds, "has_labels", False)), label_dim=int(getattr(ds, "label_dim", 0)))
    close = getattr(ds, "close", None)
    if close is not None:
        close()
    return info


def augment_presets(augment_module):
    """The --augpipe choices, from training.augment."""
    pipes = getattr(augment_module, "AUGPIPE_PRESETS", None) or getattr(augment_module, "PRESETS", None)
    if not pipes:
        raise RuntimeError("training.augment has no AUGPIPE_PRESETS dict of --augpipe choices")
    return pipes


def resolve_metrics(names, device, download=True):
    """``None``/``["auto"]`` -> default_metrics(device). Other names must be known metrics whose
    detectors are there (checked now, before any run folder exists or training starts).
    ``download=False`` (a dry run): a detector file that a real run would download is only
    announced, on stderr, instead of being fetched."""
    from metrics import detectors, registry

    if is_auto(names):
        return default_metrics(device)
    unknown = [n for n in names if not registry.is_valid_metric(n)]
    if unknown:
        fail("--metrics: unknown metric(s) %s; choose from %s, or none" % (", ".join(unknown), ", ".join(registry.list_metrics())))
    for name in names:
        try:
            registry.check_metric_needs([name], download=download)
        except detectors.DetectorNotDownloadedError as exc:
            click.echo("note: --metrics %s will download %s from %s when the run starts"
                       % (name, exc.filename, exc.url), err=True)
        except detectors.DetectorUnavailableError as exc:
            fail("--metrics: %s" % exc)
    return list(names)


def is_auto(names):
    return names is None or names == ["auto"]


def default_metrics(device):
    """Training must never start a download: on a GPU, fid50k_full when the Inception file is
    already on disk; otherwise fdl0_10k_full (packaged weights, offline) when its weights are
    installed; else the network-free swd on a GPU and nothing on a CPU."""
    from metrics import detectors, fdl0

    if device == "cuda":
        try:
            detectors.find_detector_file("inception", download=False)
            return ["fid50k_full"]
        except (ValueError, OSError):
            pass
    try:
        fdl0.check_available()
    except detectors.DetectorUnavailableError:
        return ["swd"] if device == "cuda" else []
    return ["fdl0_10k_full"]


_loaded_snapshots = {}  # (path, mtime, size) -> loaded snapshot: the checks read a --resume file once


def _load_snapshot(path):
    from training.snapshot import load_network_file

    st = os.stat(path)
    key = (os.path.abspath(path), st.st_mtime, st.st_size)
    if key not in _loaded_snapshots:
        _loaded_snapshots.clear()  # one snapshot at a time: networks can be large
        _loaded_snapshots[key] = load_network_file(path)
    return _loaded_snapshots[key]


def has_resume_state(path):
    """Whether the snapshot at ``path`` carries its run's full training state (a snapshot written
    by train.py) rather than bare networks; False when it cannot be read (the architecture check
    reports that)."""
    try:
        return _load_snapshot(path).get("resume_state") is not None
    except Exception:  # noqa: BLE001 - any unreadable file: reported by _check_resume_architecture
        return False


def metrics_final_only(names, device):
    """Whether the metrics run at the final snapshot only: for the automatic choice on a CPU, where
    one fdl0_10k_full evaluation costs about as much as the training between two snapshots."""
    return is_auto(names) and device != "cuda"


def check_resume_file(path):
    """--resume: a snapshot file, or a URL / stylegan2-ada-pytorch name (ffhq256, ...) from the
    download cache or downloaded now. Returns the local file's absolute path."""
    from training import pretrained

    try:
        local = pretrained.resolve_network(path)
    except pretrained.NetworkUnavailableError as exc:
        fail("--resume: %s" % exc)
    if os.path.isdir(local):
        fail("--resume: %s is a folder; give a network snapshot file in it (network-snapshot-*.pkl)" % path)
    if not os.path.isfile(local):
        fail("--resume: %s is not a file; give the path of a network snapshot (network-snapshot-*.pkl), a URL, or one "
             "of %s" % (path, ", ".join(pretrained.PUBLISHED)))
    return os.path.abspath(local)


def _shapes(module):
    out = {k: tuple(v.shape) for k, v in module.named_parameters()}
    out.update({k: tuple(v.shape) for k, v in module.named_buffers()})
    return out


def check_networks(c, info):
    """Build G and D once with the run's settings: catches settings the networks do not accept
    (e.g. --freezed on networks without layer freezing) and a --resume snapshot of another
    architecture, before any run folder or process exists."""
    common = dict(c_dim=info.label_dim if c["training_set_kwargs"].get("use_labels") else 0,
                  img_resolution=info.resolution, img_channels=info.num_channels)
    try:
        G = _construct(c["G_kwargs"], **common)
    except (TypeError, ValueError) as exc:
        fail("the generator cannot be built with these options: %s" % exc)
    try:
        D = _construct(c["D_kwargs"], **common)
    except (TypeError, ValueError) as exc:
        if "freeze_layers" in str(exc):
            fail("--freezed: this discriminator does not support freezing layers (%s); drop --freezed" % exc)
        fail("the discriminator cannot be built with these options: %s" % exc)
    freeze = c["D_kwargs"].get("block_kwargs", {}).get("freeze_layers", 0)
    if freeze:
        unfrozen_kwargs = dict(c["D_kwargs"], block_kwargs=dict(c["D_kwargs"]["block_kwargs"], freeze_layers=0))
        trainable = sum(p.numel() for p in D.parameters())
        if trainable == sum(p.numel() for p in _construct(unfrozen_kwargs, **common).parameters()):
            fail("--freezed=%d: the discriminator (%s) froze nothing; it does not support layer freezing, drop --freezed"
                 % (freeze, c["D_kwargs"]["class_name"]))
    if c.get("resume"):
        data = _check_resume_architecture(c["resume"], {"G": G, "D": D})
        _check_resume_progress(c["resume"], data, c["total_kimg"])


def _check_resume_progress(path, data, total_kimg):
    """A snapshot that carries its run's progress must leave something to train: --kimg counts
    from the run's start, so resuming at or past it would end at once with nothing written."""
    state = data.get("resume_state") or {}
    if state.get("cur_nimg") is None:
        return
    done_kimg = int(state["cur_nimg"]) / 1000
    if done_kimg >= total_kimg:
        fail("--resume: %s was saved at kimg %g, and this run's length is %g kimg (--kimg counts from the run's start), "
             "so there is nothing left to train; give a --kimg above %g" % (path, done_kimg, total_kimg, done_kimg))


def _check_resume_architecture(path, nets):
    try:
        data = _load_snapshot(path)
    except ValueError as exc:  # the snapshot module's one-line "not a snapshot" messages
        fail("--resume: %s" % exc)
    except Exception as exc:  # unpickling / format errors of any kind: the file is the problem
        fail("--resume: cannot load %s (%s: %s); give a snapshot written by this trainer" % (path, type(exc).__name__, exc))
    for name, net in nets.items():
        if name not in data or data[name] is None:
            fail("--resume: %s has no %s network" % (path, name))
        want, have = _shapes(net), _shapes(data[name])
        for key in sorted(set(want) | set(have)):
            if want.get(key) != have.get(key):
                fail("--resume: %s holds a %s of another architecture (%s: snapshot %s, this run %s); "
                     "use the --cfg, --cond and data resolution it was trained with"
                     % (path, name, key, have.get(key, "missing"), want.get(key, "missing")))
    return data


def check_outdir(outdir):
    """--outdir must be a folder we can create or write into."""
    path = os.path.abspath(outdir)
    if os.path.exists(path) and not os.path.isdir(path):
        fail("--outdir: %s exists and is not a folder; choose another --outdir" % outdir)
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        fail("--outdir: %s cannot be created because %s is not a folder" % (outdir, probe))
    if not os.access(probe, os.W_OK | os.X_OK):
        fail("--outdir: %s is not writable; choose a folder you can write to" % probe)
    return path


def check_held_out_data(c):
    """``nda_auroc`` at snapshot time scores real images the run never trains on: refuse, before
    any work, a run that trains on all of its data (the metric would fail after training)."""
    if "nda_auroc" not in (c.get("metrics") or []):
        return
    from metrics import held_out

    try:
        held_out.held_out_reals(c["training_set_kwargs"], None, num_images=2)
    except held_out.NoHeldOutData as exc:
        fail("--metrics=nda_auroc: %s; or train with --subset N and the metric scores the rest, or compute it "
             "later with calc_metrics.py --data" % exc)


"""Readers of the dataset downloads that stylegan2-ada-pytorch's dataset_tool.py takes as they are:

- CIFAR-10's python tarball (``cifar-10-python.tar.gz``): the 50,000 training images of
  ``data_batch_1`` ... ``data_batch_5`` with their labels, class names from ``batches.meta``;
- MNIST's idx files (``train-images-idx3-ubyte.gz`` with ``train-labels-idx1-ubyte.gz`` beside
  it): greyscale digits, zero-padded to the next power of two (28 -> 32) as the host does;
- LSUN's LMDB folders (``bedroom_train_lmdb/``): one encoded image per record, in key order;
  needs the ``lmdb`` package, imported only when such a folder is read.

CIFAR-10's batches are pickles. They are read with an unpickler that only rebuilds numpy arrays,
so a tarball cannot run code. Every unusable input is a ``click.UsageError`` naming the file and the fix.
"""

import gzip
import importlib
import os
import pickle
import re
import tarfile

import click
import numpy as np

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_BATCHES = ["%s/data_batch_%d" % (CIFAR10_DIR, i) for i in range(1, 6)]
MNIST_IMAGES_RE = re.compile(r"^(.*)-images-idx3-ubyte(\.gz)?$")
IDX_UBYTE = 0x08  # the idx format's type code of unsigned bytes


def fail(message):
    raise click.UsageError(message)


# ---------------------------------------------------------------------------------------------- CIFAR-10

def is_cifar10_tarball(path):
    """True when ``path`` is a tar archive holding CIFAR-10's python batches."""
    try:
        with tarfile.open(path) as tar:
            return CIFAR10_BATCHES[0] in tar.getnames()
    except (tarfile.TarError, OSError, EOFError):
        return False


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Rebuilds the dicts, lists, strings and numpy arrays of CIFAR's batches and refuses any
    other global (which is how a pickle would run code)."""

    _NUMPY = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}

    def find_class(self, module, name):
        if (module, name) in self._NUMPY:
            return self._NUMPY[(module, name)]
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            return _numpy_multiarray()._reconstruct
        raise pickle.UnpicklingError("it asks for %s.%s, which a CIFAR-10 batch never does" % (module, name))


def _numpy_multiarray():
    try:  # numpy >= 2 moved it; the old name still works there but warns
        return importlib.import_module("numpy._core.multiarray")
    except ImportError:
        return importlib.import_module("numpy.core.multiarray")


def _load_batch(tar, name, path):
    try:
        with tar.extractfile(name) as f:
            batch = _ArraysOnlyUnpickler(f, encoding="latin1").load()  # written by Python 2
    except (KeyError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, OSError) as exc:
        fail("--source %s: cannot read %s (%s); use the tarball from https://www.cs.toronto.edu/~kriz/cifar.html"
             % (path, name, exc))
    if not isinstance(batch, dict):
        fail("--source %s: %s is not a CIFAR-10 batch (no dict in it)" % (path, name))
    return batch


def read_cifar10(path):
    """``(images uint8 [N, 32, 32, 3], labels int64 [N], class names or None)``."""
    try:
        tar = tarfile.open(path)
    except (tarfile.TarError, OSError, EOFError) as exc:
        fail("--source %s: not a readable tarball (%s)" % (path, exc))
    with tar:
        names = set(tar.getnames())
        missing = [n for n in CIFAR10_BATCHES if n not in names]
        if missing:
            fail("--source %s: %s missing; give CIFAR-10's python tarball (cifar-10-python.tar.gz) unchanged"
                 % (path, ", ".join(missing)))
        images, labels = [], []
        for name in CIFAR10_BATCHES:
            batch = _load_batch(tar, name, path)
            data, batch_labels = np.asarray(batch.get("data")), np.asarray(batch.get("labels"))
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 \
                    or batch_labels.shape != (data.shape[0],) or batch_labels.dtype.kind not in "iu":
                fail("--source %s: %s does not hold uint8 'data' [N, 3072] and N integer 'labels'" % (path, name))
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(batch_labels.astype(np.int64))
        class_names = None
        meta_name = CIFAR10_DIR + "/batches.meta"
        if meta_name in names:
            class_names = _load_batch(tar, meta_name, path).get("label_names")
    labels = np.concatenate(labels)
    if labels.min() < 0:
        fail("--source %s: negative labels in the batches" % path)
    if not (isinstance(class_names, list) and len(class_names) > labels.max()):
        class_names = None
    return np.ascontiguousarray(np.concatenate(images)), labels, class_names


# ---------------------------------------------------------------------------------------------- MNIST

def mnist_labels_path(images_path):
    """``train-images-idx3-ubyte.gz`` -> ``train-labels-idx1-ubyte.gz``, or None for another name."""
    folder, base = os.path.split(images_path)
    m = MNIST_IMAGES_RE.match(base)
    if m is None:
        return None
    return os.path.join(folder, "%s-labels-idx1-ubyte%s" % (m.group(1), m.group(2) or ""))


def _read_idx(path, ndim):
    """An idx file (gzipped or not) of unsigned bytes with ``ndim`` dimensions, as a numpy array."""
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        fail("--source: cannot read %s (%s)" % (path, exc))
    header = 4 + 4 * ndim
    if len(raw) < header or raw[:2] != b"\0\0" or raw[2] != IDX_UBYTE or raw[3] != ndim:
        fail("--source: %s is not an idx file of %d-dimensional unsigned bytes (MNIST's format)" % (path, ndim))
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    if len(raw) != header + int(np.prod(shape)):
        fail("--source: %s is truncated or has trailing bytes (%d bytes for shape %s); download it again"
             % (path, len(raw) - header, shape))
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_mnist(images_path):
    """``(images uint8 [N, S, S], labels int64 [N])``: the digits zero-padded to a power-of-two side."""
    labels_path = mnist_labels_path(images_path)
    if not os.path.isfile(labels_path):
        fail("--source %s: the labels file %s must lie beside it; download both"
             % (images_path, os.path.basename(labels_path)))
    images, labels = _read_idx(images_path, 3), _read_idx(labels_path, 1)
    if len(images) != len(labels):
        fail("--source %s: %d images but %d labels in %s" % (images_path, len(images), len(labels), labels_path))
    h, w = images.shape[1:]
    side = 1 << (max(h, w, 4) - 1).bit_length()
    top, left = (side - h) // 2, (side - w) // 2
    padded = np.zeros((len(images), side, side), dtype=np.uint8)
    padded[:, top:top + h, left:left + w] = images
    return padded, labels.astype(np.int64)


# ---------------------------------------------------------------------------------------------- LSUN

def is_lmdb_folder(path):
    return os.path.basename(os.path.normpath(path)).endswith("_lmdb") or os.path.isfile(os.path.join(path, "data.mdb"))


def open_lmdb(path):
    """``(number of records, iterator of (key, value bytes))`` of an LMDB folder, in key order."""
    try:
        import lmdb
    except ImportError:
        fail("--source %s is an LMDB folder (LSUN); reading it needs the lmdb package: pip install lmdb" % path)
    try:
        env = lmdb.open(path, readonly=True, lock=False, readahead=False, subdir=True)
        with env.begin(write=False) as txn:
            count = txn.stat()["entries"]
    except lmdb.Error as exc:
        fail("--source %s: not a readable LMDB folder (%s)" % (path, exc))

    def records():
        try:
            with env.begin(write=False) as txn:
                for key, value in txn.cursor():
                    yield bytes(key), bytes(value)
        finally:
            env.close()

    return count, records()

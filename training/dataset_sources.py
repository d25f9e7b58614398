"""What dataset_tool.py reads: every source kind of stylegan2-ada-pytorch's dataset_tool.py, plus
our built-in faces. The kind is found from ``--source``:

| ``--source`` | kind |
|---|---|
| ``builtin`` | the procedural cartoon faces (labels: expressions) |
| a folder ending in ``_lmdb`` (or holding ``data.mdb``) | LSUN's LMDB (no labels) |
| ``cifar-10-python.tar.gz`` (any tarball of ``cifar-10-batches-py/``) | CIFAR-10's training set (labels) |
| ``*-images-idx3-ubyte[.gz]`` | MNIST's idx files (labels from the ``-labels-idx1-ubyte`` file beside it) |
| a folder, or a ``.zip`` | images, searched recursively (labels: ``dataset.json``, else first-level subfolders) |

``open_source`` returns a ``Source``: ``count`` images, ``class_names`` (or None), ``greyscale``
(keep one channel), ``notes`` (lines to print after converting) and ``items()``, an iterator of
``(PIL image, label or None)``. Unusable input is a ``click.UsageError``.
"""

import io
import json
import os
import zipfile

import click
import numpy as np
import PIL.Image

from training import dataset_archives

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
LABELS_FILE = "dataset.json"
BUILTIN = "builtin"
BUILTIN_DEFAULT_COUNT = 50000
BUILTIN_DEFAULT_RESOLUTION = 32


def fail(message):
    raise click.UsageError(message)


class Source:
    def __init__(self, count, items, class_names=None, greyscale=False):
        self.count, self._items, self.class_names, self.greyscale = count, items, class_names, greyscale
        self.notes = []

    def items(self):
        return self._items


def open_source(path, max_images=None, builtin_resolution=None):
    """The ``Source`` for ``--source path``, cut to its first ``max_images`` images."""
    if path == BUILTIN:
        return _builtin(max_images, builtin_resolution)
    if os.path.isdir(path):
        if dataset_archives.is_lmdb_folder(path):
            return _lmdb(path, max_images)
        return _folder_or_zip(path, max_images)
    if os.path.isfile(path):
        if dataset_archives.mnist_labels_path(path) is not None:
            images, labels = dataset_archives.read_mnist(path)
            return _arrays(images, labels, None, max_images)
        if path.lower().endswith(".zip"):
            return _folder_or_zip(path, max_images)
        if dataset_archives.is_cifar10_tarball(path):
            return _arrays(*dataset_archives.read_cifar10(path), max_images=max_images)
        fail("--source %s is not a source kind dataset_tool.py reads: give a folder or .zip of images, "
             "CIFAR-10's cifar-10-python.tar.gz, MNIST's train-images-idx3-ubyte.gz, an LSUN *_lmdb folder "
             "or 'builtin'" % path)
    fail("--source %s does not exist; give a folder, a .zip, a dataset download or 'builtin'" % path)


def _limit(count, max_images):
    return count if max_images is None else min(count, max_images)


def _arrays(images, labels, class_names, max_images):
    """Images held in memory as uint8 [N, H, W(, C)] with int labels (CIFAR-10, MNIST)."""
    count = _limit(len(images), max_images)
    items = ((PIL.Image.fromarray(images[i]), int(labels[i])) for i in range(count))
    return Source(count, items, class_names, greyscale=images.ndim == 3)


def _lmdb(path, max_images):
    total, records = dataset_archives.open_lmdb(path)
    source = Source(_limit(total, max_images), None)

    def items():
        # LSUN holds a few records that do not decode; like the host's tool, skip them (and say so).
        written, skipped = 0, []
        try:
            for key, value in records:
                if written == source.count:
                    break
                try:
                    with PIL.Image.open(io.BytesIO(value)) as img:
                        image = img.convert("RGB")
                except (OSError, ValueError, PIL.Image.DecompressionBombError) as exc:
                    skipped.append((key, exc))
                    continue
                written += 1
                yield image, None
        finally:
            records.close()
        if skipped:
            source.notes.append("Skipped %d LMDB record(s) that are not decodable images (first: key %r, %s)"
                                % (len(skipped), skipped[0][0], skipped[0][1]))

    source._items = items()
    return source


def _builtin(max_images, resolution):
    from nda_stylegan.sample_data import EXPRESSIONS, _check_resolution, render_faces

    size = BUILTIN_DEFAULT_RESOLUTION if resolution is None else resolution
    try:
        _check_resolution(size)
    except ValueError as exc:
        fail("--resolution: %s" % exc)
    count = BUILTIN_DEFAULT_COUNT if max_images is None else max_images

    def items():
        chunk = 1024
        for start in range(0, count, chunk):
            images, labels = render_faces(np.arange(start, min(count, start + chunk)), size)
            for img, label in zip(images, labels):
                yield PIL.Image.fromarray(img), int(label)

    return Source(count, items(), list(EXPRESSIONS))


# ---------------------------------------------------------------------------------------------- folders and zips

def _folder_or_zip(path, max_images):
    files = ImageFiles(path)
    labels, class_names = files.labels()
    names = files.names[:max_images] if max_images is not None else files.names
    greyscale = all(files.read(name, header_only=True) in ("L", "1") for name in names)

    def items():
        try:
            for i, name in enumerate(names):  # names is a prefix of files.names: labels align
                yield files.read(name), (labels[i] if labels is not None else None)
        finally:
            files.close()

    return Source(len(names), items(), class_names, greyscale)


class ImageFiles:
    """The image files (names + readers) and optional labels of a folder or zip."""

    def __init__(self, path):
        self.path = path
        self._zip = None
        if os.path.isdir(path):
            names = []
            for root, _dirs, files in os.walk(path):
                for f in files:
                    names.append(os.path.relpath(os.path.join(root, f), path).replace(os.sep, "/"))
        else:
            try:
                self._zip = zipfile.ZipFile(path)
                names = self._zip.namelist()
            except (zipfile.BadZipFile, OSError) as exc:
                fail("--source %s is not a readable zip (%s)" % (path, exc))
        self.all_names = set(names)
        self.names = sorted(n for n in names if _is_image_name(n))
        if not self.names:
            fail("--source %s contains no images (png, jpg, ...)" % path)

    def read(self, name, header_only=False):
        """The decoded image (or, with ``header_only``, its PIL mode string)."""
        try:
            if self._zip is not None:
                data = self._zip.read(name)
            else:
                with open(os.path.join(self.path, name), "rb") as f:
                    data = f.read()
            with PIL.Image.open(io.BytesIO(data)) as img:
                if header_only:
                    return img.mode
                img.load()
                return img.copy()
        except (OSError, ValueError, zipfile.BadZipFile, PIL.Image.DecompressionBombError) as exc:
            fail("--source: cannot read image %s (%s); remove or re-save it" % (name, exc))

    def labels(self):
        """``(labels list aligned with self.names, class_names or None)`` or ``(None, None)``."""
        if LABELS_FILE in self.all_names:
            return self._labels_from_json(), None
        tops = [n.split("/", 1)[0] if "/" in n else None for n in self.names]
        classes = sorted({t for t in tops if t is not None})
        if None in tops or len(classes) < 2:
            return None, None
        index = {c: i for i, c in enumerate(classes)}
        return [index[t] for t in tops], classes

    def _labels_from_json(self):
        try:
            raw = self._zip.read(LABELS_FILE) if self._zip is not None else open(
                os.path.join(self.path, LABELS_FILE), "rb").read()
            meta = json.loads(raw.decode("utf-8"))
            entries = meta["labels"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            fail("--source: cannot parse %s (%s); it must be {\"labels\": [[\"path\", label], ...]}"
                 % (LABELS_FILE, exc))
        if entries is None:
            return None
        try:
            by_name = {str(k).replace("\\", "/"): v for k, v in entries}
        except (TypeError, ValueError):
            fail("--source: %s must hold [[\"path\", label], ...] pairs" % LABELS_FILE)
        missing = [n for n in self.names if n not in by_name]
        if missing:
            fail("--source: %s has no label for %d image(s), e.g. %s; label every image"
                 % (LABELS_FILE, len(missing), missing[0]))
        return [by_name[n] for n in self.names]

    def close(self):
        if self._zip is not None:
            self._zip.close()


def _is_image_name(name):
    base = name.rsplit("/", 1)[-1]
    if base.startswith(".") or name.startswith("__MACOSX/"):
        return False
    return os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS

"""Training datasets with stylegan2-ada-pytorch's interface.

``Dataset`` is the base: ``ds[i] -> (uint8 image [C, H, W], float32 label)`` (one-hot for integer
labels, an empty vector without labels), ``max_size`` (a seeded random subset; ``held_out=True``
gives the images outside it instead, those a ``--subset`` run never saw) and ``xflip`` (the
mirrored copies appended after the originals). Two sources:

- ``ImageFolderDataset(path)``: a folder or ``.zip`` of PNG/JPEG images with optional
  ``dataset.json`` labels ``{"labels": [["00000/img00000000.png", 3], ...]}`` (dataset_tool.py's
  output format);
- ``BuiltinDataset(size)``: the procedural cartoon faces of ``nda_stylegan.sample_data``, labelled
  by expression, rendered on demand and cached.

Every way the data can be unusable (missing path, corrupt file, no images, non-square or
non-power-of-two images, mixed sizes or channel counts, bad labels, a ``resolution`` that does not
match) raises ``DatasetError`` at construction, with one line saying what is wrong and how to fix
it, so it surfaces before training starts.

``use_labels=True`` means "use the labels the data has" (as in the host: a dataset without labels
then has ``label_dim == 0``; train.py relies on that to probe a dataset); pass
``require_labels=True`` as well to make missing labels an error.
"""

import json
import os
import zipfile

import numpy as np
import PIL.Image
import torch

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
LABELS_FILE = "dataset.json"
# PIL modes we read, and the channel count each becomes (palette images become RGB).
MODE_CHANNELS = {"1": 1, "L": 1, "P": 3, "RGB": 3, "RGBA": 4, "CMYK": 3, "YCbCr": 3}
MODE_CONVERSIONS = {"1": "L", "P": "RGB", "CMYK": "RGB", "YCbCr": "RGB"}
FIX_HINT = "convert it with dataset_tool.py"


class DatasetError(ValueError):
    """The training data cannot be used; the message names the problem and the fix."""


def is_power_of_two(n):
    return n >= 1 and (n & (n - 1)) == 0


class Dataset(torch.utils.data.Dataset):
    """Base class: subclasses provide ``_load_raw_image(raw_idx)`` and ``_load_raw_labels()``."""

    def __init__(self, name, raw_shape, max_size=None, use_labels=False, xflip=False, random_seed=0,
                 require_labels=False, held_out=False):
        self._name = name
        self._raw_shape = [int(x) for x in raw_shape]
        self._use_labels = bool(use_labels) or bool(require_labels)
        self._raw_labels = None
        self._label_shape = None
        if len(self._raw_shape) != 4:
            raise DatasetError("raw_shape must be [N, C, H, W], got %r" % (raw_shape,))
        if self._raw_shape[0] == 0:
            raise DatasetError("dataset %r has no images; add images or point at another folder/zip" % name)
        if max_size is not None and int(max_size) < 1:
            raise DatasetError("max_size must be >= 1 (or None for all images), got %r" % (max_size,))

        # A seeded subset keeps its images in their original order.
        raw_idx = np.arange(self._raw_shape[0], dtype=np.int64)
        if max_size is not None and raw_idx.size > max_size:
            np.random.RandomState(random_seed).shuffle(raw_idx)
            raw_idx = np.sort(raw_idx[int(max_size):] if held_out else raw_idx[:int(max_size)])
        elif held_out:
            raise DatasetError("dataset %r: held_out needs a max_size below its %d images (the images outside "
                               "the subset are the held-out ones)" % (name, self._raw_shape[0]))
        flips = np.zeros(raw_idx.size, dtype=np.uint8)
        if xflip:
            raw_idx = np.concatenate([raw_idx, raw_idx])
            flips = np.concatenate([flips, np.ones_like(flips)])
        self._raw_idx, self._xflip = raw_idx, flips

        if self._use_labels:  # read labels now: their errors must come before training
            self._get_raw_labels()
            if require_labels and not self.has_labels:
                raise DatasetError("dataset %r has no labels but labels were required (--cond): add a %s "
                                   "with labels (dataset_tool.py writes one from subfolder names) or train "
                                   "unconditionally" % (name, LABELS_FILE))

    # -- to override ----------------------------------------------------------------------------
    def _load_raw_image(self, raw_idx):
        raise NotImplementedError

    def _load_raw_labels(self):
        """int64 [N] or float32 [N, D], or None when the data has no labels."""
        raise NotImplementedError

    def close(self):
        pass

    # -- labels ----------------------------------------------------------------------------------
    def _get_raw_labels(self):
        if self._raw_labels is None:
            labels = self._load_raw_labels() if self._use_labels else None
            if labels is None:
                labels = np.zeros([self._raw_shape[0], 0], dtype=np.float32)
            self._raw_labels = _check_labels(labels, self._raw_shape[0], self._name)
        return self._raw_labels

    def __getstate__(self):
        return dict(self.__dict__, _raw_labels=None)

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing useful to do
            pass

    # -- items ------------------------------------------------------------------------------------
    def __len__(self):
        return int(self._raw_idx.size)

    def __getitem__(self, idx):
        image = self._load_raw_image(int(self._raw_idx[idx]))
        return self._finish_image(image, idx), self.get_label(idx)

    def _finish_image(self, image, idx):
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or list(image.shape) != self.image_shape:
            raise DatasetError("dataset %r: image %d has shape %s, expected uint8 %s; %s"
                               % (self._name, idx, getattr(image, "shape", None), self.image_shape, FIX_HINT))
        if self._xflip[idx]:
            image = image[:, :, ::-1]
        return np.ascontiguousarray(image)

    def get_label(self, idx):
        label = self._get_raw_labels()[self._raw_idx[idx]]
        if label.dtype == np.int64:
            onehot = np.zeros(self.label_shape, dtype=np.float32)
            onehot[label] = 1
            return onehot
        return label.copy()

    def get_details(self, idx):
        raw = int(self._raw_idx[idx])
        return dict(raw_idx=raw, xflip=bool(self._xflip[idx]), raw_label=self._get_raw_labels()[raw].copy())

    # -- properties ---------------------------------------------------------------------------
    @property
    def name(self):
        return self._name

    @property
    def image_shape(self):
        return list(self._raw_shape[1:])

    @property
    def num_channels(self):
        return self.image_shape[0]

    @property
    def resolution(self):
        return self.image_shape[1]

    @property
    def label_shape(self):
        if self._label_shape is None:
            labels = self._get_raw_labels()
            if labels.dtype == np.int64:
                self._label_shape = [int(labels.max()) + 1]
            else:
                self._label_shape = list(labels.shape[1:])
        return list(self._label_shape)

    @property
    def label_dim(self):
        return self.label_shape[0]

    @property
    def has_labels(self):
        return any(x != 0 for x in self.label_shape)

    @property
    def has_onehot_labels(self):
        return self._get_raw_labels().dtype == np.int64


def _check_labels(labels, count, name):
    labels = np.asarray(labels)
    if labels.shape[:1] != (count,):
        raise DatasetError("dataset %r: %d labels for %d images; give one label per image in %s"
                           % (name, labels.shape[0] if labels.ndim else 0, count, LABELS_FILE))
    if labels.dtype == np.int64:
        if labels.ndim != 1 or labels.min() < 0:
            raise DatasetError("dataset %r: integer labels must be class indices >= 0; fix %s" % (name, LABELS_FILE))
    elif labels.dtype == np.float32:
        if labels.ndim != 2:
            raise DatasetError("dataset %r: vector labels must all have the same length; fix %s" % (name, LABELS_FILE))
        if not np.all(np.isfinite(labels)):
            raise DatasetError("dataset %r: labels contain NaN or infinity; fix %s" % (name, LABELS_FILE))
    else:
        raise DatasetError("dataset %r: labels must be int64 class indices or float32 vectors, got %s"
                           % (name, labels.dtype))
    return labels


def check_image_shape(shape, name, resolution=None):
    """Raise DatasetError unless ``shape`` [C, H, W] is square, power-of-two, 1/3/4 channels."""
    c, h, w = shape
    if h != w:
        raise DatasetError("dataset %r: images are %dx%d (WxH) but must be square; crop them, e.g. "
                           "dataset_tool.py --resolution=%dx%d" % (name, w, h, min(w, h), min(w, h)))
    if h < 4 or not is_power_of_two(h):
        near = 1 << max(2, h.bit_length() - 1)
        raise DatasetError("dataset %r: image size %d is not a power of two >= 4; resize, e.g. "
                           "dataset_tool.py --resolution=%dx%d" % (name, h, near, near))
    if resolution is not None and int(resolution) != h:
        raise DatasetError("dataset %r: images are %dx%d but resolution=%s was asked for; resize with "
                           "dataset_tool.py or drop the resolution argument" % (name, h, h, resolution))


# ----------------------------------------------------------------------------------------------

class ImageFolderDataset(Dataset):
    """Images from a folder (searched recursively) or a zip; ``dataset.json`` labels if present."""

    def __init__(self, path, resolution=None, **super_kwargs):
        self._path = str(path)
        self._zipfile = None
        name = os.path.splitext(os.path.basename(os.path.normpath(self._path)))[0]
        if os.path.isdir(self._path):
            self._type = "dir"
            all_names = set()
            for root, _dirs, files in os.walk(self._path):
                for fname in files:
                    all_names.add(os.path.relpath(os.path.join(root, fname), self._path).replace(os.sep, "/"))
        elif os.path.isfile(self._path):
            if not self._path.lower().endswith(".zip"):
                raise DatasetError("%s is neither a folder nor a .zip; point at a folder or zip of images "
                                   "(dataset_tool.py makes one)" % self._path)
            self._type = "zip"
            try:
                all_names = set(self._get_zipfile().namelist())
            except (zipfile.BadZipFile, OSError) as exc:
                raise DatasetError("%s is not a readable zip (%s); re-create it, e.g. with dataset_tool.py"
                                   % (self._path, exc))
        else:
            raise DatasetError("dataset path %s does not exist; pass a folder or .zip of images" % self._path)
        self._all_names = all_names
        self._image_names = sorted(n for n in all_names if _is_image_name(n))
        if not self._image_names:
            raise DatasetError("no images (%s) found in %s; point at a folder or zip of images"
                               % ("/".join(e[1:] for e in IMAGE_EXTENSIONS[:3]), self._path))
        shape = self._scan_shapes(name)
        check_image_shape(shape, name, resolution)
        super().__init__(name=name, raw_shape=[len(self._image_names)] + list(shape), **super_kwargs)
        self._load_raw_image(0)  # the first image decodes fully, not only its header

    def _get_zipfile(self):
        if self._zipfile is None:
            self._zipfile = zipfile.ZipFile(self._path)
        return self._zipfile

    def _open_file(self, fname):
        if self._type == "dir":
            return open(os.path.join(self._path, fname), "rb")
        return self._get_zipfile().open(fname, "r")

    def close(self):
        try:
            if self._zipfile is not None:
                self._zipfile.close()
        finally:
            self._zipfile = None

    def __getstate__(self):
        return dict(super().__getstate__(), _zipfile=None)

    def _scan_shapes(self, name):
        """Read every image header (cheap): all images must share one size and channel count."""
        seen = {}  # (C, H, W) -> (count, first file name)
        for fname in self._image_names:
            try:
                with self._open_file(fname) as f, PIL.Image.open(f) as img:
                    mode, (w, h) = img.mode, img.size
            except (OSError, ValueError, zipfile.BadZipFile, PIL.Image.DecompressionBombError) as exc:
                raise DatasetError("cannot read image %s in %s (%s); remove or re-save it"
                                   % (fname, self._path, exc))
            if mode not in MODE_CHANNELS:
                raise DatasetError("image %s has pixel format %s; use 8-bit greyscale or RGB (%s)"
                                   % (fname, mode, FIX_HINT))
            key = (MODE_CHANNELS[mode], h, w)
            count, first = seen.get(key, (0, fname))
            seen[key] = (count + 1, first)
        if len(seen) > 1:
            sizes = {(h, w) for _c, h, w in seen}
            what = "resolutions" if len(sizes) > 1 else "channel counts"
            listing = ", ".join("%d with %dx%dx%d (e.g. %s)" % (n, w, h, c, first)
                                for (c, h, w), (n, first) in sorted(seen.items(), key=lambda kv: -kv[1][0])[:3])
            fix = ("resize them to one size, e.g. dataset_tool.py --resolution=WxH" if what == "resolutions"
                   else "convert them all to RGB (dataset_tool.py does)")
            raise DatasetError("images in %s have mixed %s: %s; %s" % (self._path, what, listing, fix))
        return next(iter(seen))

    def _load_raw_image(self, raw_idx):
        fname = self._image_names[raw_idx]
        try:
            with self._open_file(fname) as f, PIL.Image.open(f) as img:
                img = img.convert(MODE_CONVERSIONS[img.mode]) if img.mode in MODE_CONVERSIONS else img
                image = np.array(img, dtype=np.uint8)
        except (OSError, ValueError, zipfile.BadZipFile, KeyError) as exc:
            # The cause is in the message: no chained traceback on top of it.
            raise DatasetError("cannot decode image %s in %s (%s); remove or re-save it"
                               % (fname, self._path, exc)) from None
        if image.ndim == 2:
            image = image[:, :, None]
        image = image.transpose(2, 0, 1)
        if hasattr(self, "_raw_shape") and list(image.shape) != self._raw_shape[1:]:
            raise DatasetError("image %s decodes to shape %s, not %s like the others; %s"
                               % (fname, list(image.shape), self._raw_shape[1:], FIX_HINT))
        return image

    def _load_raw_labels(self):
        if LABELS_FILE not in self._all_names:
            return None
        try:
            with self._open_file(LABELS_FILE) as f:
                meta = json.load(f)
        except (OSError, ValueError) as exc:
            raise DatasetError("cannot parse %s in %s (%s); it must be {\"labels\": [[\"path\", label], ...]}"
                               % (LABELS_FILE, self._path, exc))
        labels = meta.get("labels") if isinstance(meta, dict) else "bad"
        if labels is None:
            return None
        if not isinstance(labels, list) or not all(isinstance(e, (list, tuple)) and len(e) == 2 for e in labels):
            raise DatasetError("%s in %s must be {\"labels\": [[\"path\", label], ...]}" % (LABELS_FILE, self._path))
        by_name = {str(k).replace("\\", "/"): v for k, v in labels}
        missing = [n for n in self._image_names if n not in by_name]
        if missing:
            raise DatasetError("%s in %s has no label for %d image(s), e.g. %s; label every image or remove "
                               "the file" % (LABELS_FILE, self._path, len(missing), missing[0]))
        values = [by_name[n] for n in self._image_names]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return np.asarray(values, dtype=np.int64)
        try:
            return np.asarray(values, dtype=np.float32).reshape(len(values), -1)
        except (TypeError, ValueError):
            raise DatasetError("labels in %s of %s must be all class indices or all equal-length number lists"
                               % (LABELS_FILE, self._path))


def _is_image_name(name):
    base = name.rsplit("/", 1)[-1]
    if base.startswith(".") or name.startswith("__MACOSX/"):
        return False
    return os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS


# ----------------------------------------------------------------------------------------------

class BuiltinDataset(Dataset):
    """The procedural cartoon faces (``nda_stylegan.sample_data``), labelled by expression: image
    ``i`` is face ``first_index + i``, so faces past a training set's ``size`` are held-out data.

    Images are rendered when first asked for and then cached (when the cache fits in
    ``cache_limit_bytes``): a batch fetch (``__getitems__``) renders its missing images in one
    vectorised call, so the DataLoader never waits for a full pre-render.
    """

    DEFAULT_SIZE = 50000

    def __init__(self, size=DEFAULT_SIZE, resolution=32, seed=0, cache_limit_bytes=1 << 30, first_index=0,
                 **super_kwargs):
        from nda_stylegan import sample_data

        try:
            size, first_index = int(size), int(first_index)
            resolution = sample_data._check_resolution(resolution)
        except (TypeError, ValueError) as exc:
            raise DatasetError("built-in dataset: %s" % exc)
        if size < 1:
            raise DatasetError("built-in dataset: size must be >= 1, got %d" % size)
        if first_index < 0:
            raise DatasetError("built-in dataset: first_index must be >= 0, got %d" % first_index)
        self._first = first_index
        self._seed = int(seed)
        self._resolution = resolution
        nbytes = size * resolution * resolution * 3
        self._cache_ok = nbytes <= cache_limit_bytes
        self._cache = None
        self._cached = None
        name = "faces%d" % resolution + ("-from%d" % first_index if first_index else "")
        super().__init__(name=name, raw_shape=[size, 3, resolution, resolution], **super_kwargs)

    def __getstate__(self):
        return dict(super().__getstate__(), _cache=None, _cached=None)  # workers render their own

    def _render(self, raw_indices):
        from nda_stylegan.sample_data import render_faces

        raw_indices = np.asarray(raw_indices, dtype=np.int64)
        if not self._cache_ok:
            return render_faces(raw_indices + self._first, self._resolution, self._seed)[0].transpose(0, 3, 1, 2)
        if self._cache is None:
            # np.zeros is lazily committed by the OS: untouched images cost no memory.
            self._cache = np.zeros([self._raw_shape[0], self._resolution, self._resolution, 3], np.uint8)
            self._cached = np.zeros(self._raw_shape[0], dtype=bool)
        todo = np.unique(raw_indices[~self._cached[raw_indices]])
        if todo.size:
            self._cache[todo] = render_faces(todo + self._first, self._resolution, self._seed)[0]
            self._cached[todo] = True
        return self._cache[raw_indices].transpose(0, 3, 1, 2)

    def _load_raw_image(self, raw_idx):
        return self._render([raw_idx])[0]

    def __getitems__(self, indices):
        raws = self._raw_idx[np.asarray(indices, dtype=np.int64)]
        images = self._render(raws)
        return [(self._finish_image(images[k], idx), self.get_label(idx)) for k, idx in enumerate(indices)]

    def _load_raw_labels(self):
        from nda_stylegan.sample_data import face_labels

        return face_labels(np.arange(self._raw_shape[0]) + self._first, self._seed)

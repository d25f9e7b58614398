"""Convert images into the trainer's dataset format: a zip (or folder) of PNGs named
``00000/img00000000.png`` plus ``dataset.json`` labels when there are any.

Sources: a folder of images (searched recursively), a zip of images, or ``builtin`` (the
procedural cartoon faces). Labels come from the source's ``dataset.json``, or else from the
first-level subfolder names (``cats/x.png``, ``dogs/y.png`` -> classes 0 and 1).

Examples:

    python dataset_tool.py --source ~/photos --dest photos64.zip --resolution 64x64
    python dataset_tool.py --source builtin --dest faces32.zip --resolution 32x32 --max-images 10000

Output is written to a temporary file next to ``--dest`` and moved into place at the end, so an
interrupted run never leaves a half-written dataset. Bad input is a one-line error (exit code 2).
"""

import io
import json
import os
import shutil
import tempfile
import zipfile

import click
import numpy as np
import PIL.Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
LABELS_FILE = "dataset.json"
BUILTIN = "builtin"
BUILTIN_DEFAULT_COUNT = 50000
BUILTIN_DEFAULT_RESOLUTION = 32


def archive_name(idx):
    return "%05d/img%08d.png" % (idx // 1000, idx)


def parse_resolution(text):
    """'64x64' -> (64, 64); a single number means a square."""
    if text is None:
        return None
    parts = text.lower().split("x")
    try:
        if len(parts) == 1:
            parts = parts * 2
        w, h = (int(p) for p in parts)
    except ValueError:
        w = h = 0
    if len(parts) != 2 or w < 1 or h < 1:
        raise click.BadParameter("must look like WxH with positive integers, e.g. 64x64; got %r" % text,
                                 param_hint="--resolution")
    return w, h


# ---------------------------------------------------------------------------------------------- sources

class ImageSource:
    """A list of images (names + byte readers) and optional labels from a folder or zip."""

    def __init__(self, path):
        self.path = path
        self._zip = None
        if os.path.isdir(path):
            names = []
            for root, _dirs, files in os.walk(path):
                for f in files:
                    names.append(os.path.relpath(os.path.join(root, f), path).replace(os.sep, "/"))
        elif os.path.isfile(path) and path.lower().endswith(".zip"):
            try:
                self._zip = zipfile.ZipFile(path)
                names = self._zip.namelist()
            except (zipfile.BadZipFile, OSError) as exc:
                raise click.UsageError("--source %s is not a readable zip (%s)" % (path, exc))
        elif os.path.exists(path):
            raise click.UsageError("--source %s is neither a folder nor a .zip of images (or 'builtin')" % path)
        else:
            raise click.UsageError("--source %s does not exist; give a folder, a .zip, or 'builtin'" % path)
        self.all_names = set(names)
        self.names = sorted(n for n in names if _is_image_name(n))
        if not self.names:
            raise click.UsageError("--source %s contains no images (png, jpg, ...)" % path)

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
            raise click.UsageError("--source: cannot read image %s (%s); remove or re-save it" % (name, exc))

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
            raise click.UsageError("--source: cannot parse %s (%s); it must be {\"labels\": [[\"path\", label], ...]}"
                                   % (LABELS_FILE, exc))
        if entries is None:
            return None
        try:
            by_name = {str(k).replace("\\", "/"): v for k, v in entries}
        except (TypeError, ValueError):
            raise click.UsageError("--source: %s must hold [[\"path\", label], ...] pairs" % LABELS_FILE)
        missing = [n for n in self.names if n not in by_name]
        if missing:
            raise click.UsageError("--source: %s has no label for %d image(s), e.g. %s; label every image"
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


def iterate_folder_or_zip(path, max_images):
    """Yield ``(PIL image, label or None)``; also returns the count and class names."""
    source = ImageSource(path)
    labels, class_names = source.labels()
    names = source.names[:max_images] if max_images is not None else source.names

    def items():
        try:
            for i, name in enumerate(names):  # names is a prefix of source.names: labels align
                yield source.read(name), (labels[i] if labels is not None else None)
        finally:
            source.close()

    return len(names), items(), class_names


def iterate_builtin(max_images, resolution):
    from nda_stylegan.sample_data import EXPRESSIONS, _check_resolution, render_faces

    if resolution is None:
        size = BUILTIN_DEFAULT_RESOLUTION
    elif resolution[0] != resolution[1]:
        raise click.UsageError("--resolution for --source builtin must be square (e.g. 32x32), got %dx%d" % resolution)
    else:
        size = resolution[0]
    try:
        _check_resolution(size)
    except ValueError as exc:
        raise click.UsageError("--resolution: %s" % exc)
    count = BUILTIN_DEFAULT_COUNT if max_images is None else max_images

    def items():
        chunk = 1024
        for start in range(0, count, chunk):
            images, labels = render_faces(np.arange(start, min(count, start + chunk)), size)
            for img, label in zip(images, labels):
                yield PIL.Image.fromarray(img), int(label)

    return count, items(), list(EXPRESSIONS)


# ---------------------------------------------------------------------------------------------- transform

def to_array(img, resolution, greyscale):
    """Centre-crop to the target aspect, resize (Lanczos), convert to RGB or L; -> uint8 array."""
    img = img.convert("L" if greyscale else "RGB")
    if resolution is not None:
        w, h = resolution
        iw, ih = img.size
        if iw * h != ih * w:  # crop the longer side so the aspect matches before resizing
            if iw * h > ih * w:
                cw = ih * w // h
                img = img.crop(((iw - cw) // 2, 0, (iw - cw) // 2 + cw, ih))
            else:
                ch = iw * h // w
                img = img.crop((0, (ih - ch) // 2, iw, (ih - ch) // 2 + ch))
        if img.size != (w, h):
            img = img.resize((w, h), PIL.Image.LANCZOS)
    return np.asarray(img)


def _is_greyscale_source(path):
    """True when every image in the folder/zip is single-channel (then the output stays greyscale)."""
    source = ImageSource(path)
    try:
        return all(source.read(name, header_only=True) in ("L", "1") for name in source.names)
    finally:
        source.close()


# ---------------------------------------------------------------------------------------------- writing

class AtomicDatasetWriter:
    """Writes a zip or a folder under a temporary name; ``commit()`` moves it to ``dest``."""

    def __init__(self, dest):
        self.dest = os.path.abspath(dest)
        self.is_zip = dest.lower().endswith(".zip")
        parent = os.path.dirname(self.dest)
        if not os.path.isdir(parent):
            raise click.UsageError("--dest: folder %s does not exist; create it first" % parent)
        if os.path.isdir(self.dest) and (self.is_zip or os.listdir(self.dest)):
            raise click.UsageError("--dest %s is an existing non-empty folder; pick a new path" % dest)
        if not self.is_zip and os.path.isfile(self.dest):
            raise click.UsageError("--dest %s is an existing file; give a new folder or a .zip path" % dest)
        try:
            if self.is_zip:
                fd, self.tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(self.dest), suffix=".tmp", dir=parent)
                os.close(fd)
                self._zip = zipfile.ZipFile(self.tmp, "w", compression=zipfile.ZIP_STORED)
            else:
                self.tmp = tempfile.mkdtemp(prefix=".%s." % os.path.basename(self.dest), suffix=".tmp", dir=parent)
        except OSError as exc:
            raise click.UsageError("--dest: cannot write in %s (%s)" % (parent, exc))

    def add(self, name, data):
        if self.is_zip:
            self._zip.writestr(name, data)
        else:
            path = os.path.join(self.tmp, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)

    def commit(self):
        if self.is_zip:
            self._zip.close()
        elif os.path.isdir(self.dest):
            os.rmdir(self.dest)  # empty (checked above): replace it
        os.replace(self.tmp, self.dest)

    def abort(self):
        if self.is_zip:
            try:
                self._zip.close()
            except Exception:  # the temp file is removed anyway
                pass
            if os.path.exists(self.tmp):
                os.remove(self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _png_bytes(array):
    buf = io.BytesIO()
    PIL.Image.fromarray(array).save(buf, format="png", compress_level=0, optimize=False)
    return buf.getvalue()


def convert(source, dest, resolution=None, max_images=None, echo=click.echo):
    """Convert ``source`` into ``dest``; returns ``(count, shape, has_labels)``."""
    if max_images is not None and max_images < 1:
        raise click.BadParameter("must be >= 1, got %d" % max_images, param_hint="--max-images")
    if source == BUILTIN:
        count, items, class_names = iterate_builtin(max_images, resolution)
        greyscale = False
    else:
        count, items, class_names = iterate_folder_or_zip(source, max_images)
        greyscale = _is_greyscale_source(source)
    writer = AtomicDatasetWriter(dest)
    labels, shape = [], None
    try:
        for idx, (img, label) in enumerate(items):
            array = to_array(img, resolution, greyscale)
            if shape is None:
                shape = array.shape
            elif array.shape != shape:
                raise click.UsageError("--source: image %d is %dx%d but the first was %dx%d; pass --resolution "
                                       "WxH to resize all images to one size"
                                       % (idx, array.shape[1], array.shape[0], shape[1], shape[0]))
            name = archive_name(idx)
            writer.add(name, _png_bytes(array))
            if label is not None:
                labels.append([name, label])
            if echo is not None and (idx + 1) % 10000 == 0:
                echo("%d / %d images" % (idx + 1, count))
        meta = {"labels": labels if labels else None}
        if labels and class_names:
            meta["class_names"] = class_names
        writer.add(LABELS_FILE, json.dumps(meta).encode("utf-8"))
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return count, shape, bool(labels)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--source", required=True, metavar="PATH", help="Folder or zip of images, or 'builtin' (cartoon faces)")
@click.option("--dest", required=True, metavar="PATH", help="Output .zip or folder")
@click.option("--resolution", metavar="WxH", help="Centre-crop and resize every image to WxH (e.g. 64x64)")
@click.option("--max-images", type=int, metavar="N", help="Convert at most N images [builtin default: %d]"
              % BUILTIN_DEFAULT_COUNT)
def main(source, dest, resolution, max_images):
    """Convert images into the trainer's dataset format (PNG zip/folder + dataset.json)."""
    count, shape, has_labels = convert(source, dest, parse_resolution(resolution), max_images)
    h, w = shape[:2]
    click.echo("Wrote %d images of %dx%dx%d%s to %s" % (count, w, h, 1 if len(shape) == 2 else shape[2],
                                                      " with labels" if has_labels else "", dest))


if __name__ == "__main__":
    main()

"""Convert images into the trainer's dataset format: a zip (or folder) of PNGs named
``00000/img00000000.png`` plus ``dataset.json`` labels when there are any.

The sources and options are stylegan2-ada-pytorch's (``--source``, ``--dest``, ``--max-images``,
``--transform``, ``--width``, ``--height``, ``--resize-filter``), plus the built-in faces and the
``--resolution WxH`` shorthand. Sources (training/dataset_sources.py): a folder or zip of images,
CIFAR-10's python tarball, MNIST's idx files, an LSUN LMDB folder, or ``builtin``.

Examples:

    python dataset_tool.py --source ~/photos --dest photos64.zip --resolution 64x64
    python dataset_tool.py --source ~/downloads/cifar-10-python.tar.gz --dest cifar10.zip
    python dataset_tool.py --source ~/downloads/train-images-idx3-ubyte.gz --dest mnist.zip
    python dataset_tool.py --source ~/lsun/cat_lmdb --dest lsuncat256.zip --transform center-crop --width 256 --height 256
    python dataset_tool.py --source builtin --dest faces32.zip --resolution 32x32 --max-images 10000

Every option is checked before anything is read or written; the output is written under a
temporary name next to ``--dest`` and moved into place at the end (with the usual permissions), so
an interrupted run never leaves a half-written dataset. Bad input is a one-line error (exit code 2).
"""

import contextlib
import functools
import io
import json
import os
import shutil
import zipfile

import click
import PIL.Image

from nda_stylegan.fileio import atomic_write, temp_path_beside
from training import dataset_sources, image_transform
from training.dataset_sources import BUILTIN, BUILTIN_DEFAULT_COUNT, LABELS_FILE

# Archive kinds people may expect a --dest of: we write only zips and folders.
OTHER_ARCHIVE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".zst", ".7z", ".rar")


def archive_name(idx):
    return "%05d/img%08d.png" % (idx // 1000, idx)


# ---------------------------------------------------------------------------------------------- options

def parse_resolution(text):
    """'64x64' -> (64, 64); a single number means a square. The trainer's needs are checked too."""
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
    problem = image_transform.size_problem(w, h)
    if problem:
        side = image_transform.nearest_valid_side(min(w, h))
        raise click.BadParameter("%s: %s; use e.g. %dx%d" % (text, problem, side, side), param_hint="--resolution")
    return w, h


def resolve_geometry(resolution, transform, width, height):
    """Check the size options together; returns ``(transform, width, height)``."""
    if resolution is not None:
        if transform is not None or width is not None or height is not None:
            raise click.UsageError("give either --resolution or --transform/--width/--height, not both")
        w, h = parse_resolution(resolution)
        return "center-crop", w, h
    for name, value in (("--width", width), ("--height", height)):
        if value is not None and value < 1:
            raise click.BadParameter("must be a positive number of pixels, got %d" % value, param_hint=name)
    if transform is not None and (width is None or height is None):
        raise click.UsageError("--transform=%s needs both --width and --height" % transform)
    if transform == "center-crop-wide" and height > width:
        raise click.UsageError("--transform=center-crop-wide letterboxes a wide image into a --width square: "
                               "--height (%d) must not exceed --width (%d)" % (height, width))
    size = image_transform.output_size(transform, width, height)
    if size is not None and image_transform.size_problem(*size):
        side = image_transform.nearest_valid_side(min(size))
        raise click.UsageError("--width/--height give %dx%d images but %s; use e.g. --width %d --height %d"
                               % (size + (image_transform.size_problem(*size), side, side)))
    return transform, width, height


def check_dest(dest):
    """Refuse a --dest we would not write as asked, before any work: ``(absolute path, is_zip)``."""
    lower = dest.lower()
    for suffix in OTHER_ARCHIVE_SUFFIXES:
        if lower.endswith(suffix):
            raise click.UsageError("--dest %s: dataset_tool.py writes a .zip or a folder, not a %s file; use %s.zip"
                                   % (dest, suffix, dest[:-len(suffix)]))
    path, is_zip = os.path.abspath(dest), lower.endswith(".zip")
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise click.UsageError("--dest: folder %s does not exist; create it first" % parent)
    if is_zip and os.path.lexists(path):
        raise click.UsageError("--dest %s already exists; remove it first or pick a new name" % dest)
    if not is_zip and os.path.isdir(path) and os.listdir(path):
        raise click.UsageError("--dest %s is an existing non-empty folder; pick a new path" % dest)
    if not is_zip and os.path.lexists(path) and not os.path.isdir(path):
        raise click.UsageError("--dest %s is an existing file; give a new folder or a .zip path" % dest)
    return path, is_zip


# ---------------------------------------------------------------------------------------------- writing

@contextlib.contextmanager
def dataset_writer(path, is_zip):
    """Yields ``add(name, bytes)``; the zip or folder appears at ``path`` only when the block
    succeeds, readable like any other file of the user (not a temp file's owner-only mode)."""
    parent = os.path.dirname(path)
    with contextlib.ExitStack() as stack:
        try:
            if is_zip:
                f = stack.enter_context(atomic_write(path, "wb"))
            else:
                tmp = temp_path_beside(path, folder=True)
        except OSError as exc:
            raise click.UsageError("--dest: cannot write in %s (%s)" % (parent, exc.strerror or exc))
        if is_zip:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as z:
                yield z.writestr
            return
        try:
            yield functools.partial(_write_file, tmp)
            if os.path.isdir(path):
                os.rmdir(path)  # empty (checked before): replace it
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _write_file(folder, name, data):
    path = os.path.join(folder, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _png_bytes(img):
    buf = io.BytesIO()
    img.save(buf, format="png", compress_level=0, optimize=False)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- converting

def convert(source, dest, resolution=None, max_images=None, transform=None, width=None, height=None,
            resize_filter="lanczos", echo=click.echo):
    """Convert ``source`` into ``dest``; returns ``(count, (H, W, C), has_labels)``."""
    if max_images is not None and max_images < 1:
        raise click.BadParameter("must be >= 1, got %d" % max_images, param_hint="--max-images")
    transform, width, height = resolve_geometry(resolution, transform, width, height)
    path, is_zip = check_dest(dest)
    size = image_transform.output_size(transform, width, height)
    src = dataset_sources.open_source(source, max_images, builtin_resolution=size[0] if size else None)
    apply = image_transform.make_transform(transform, width, height, resize_filter)
    mode = "L" if src.greyscale else "RGB"
    labels, first, dropped, count = [], None, 0, 0
    with dataset_writer(path, is_zip) as add:
        for idx, (img, label) in enumerate(src.items()):
            img = apply(img.convert(mode))
            if img is None:
                dropped += 1
                continue
            if first is None:
                first = img.size
                problem = image_transform.size_problem(*first)
                if problem:
                    side = image_transform.nearest_valid_side(min(first))
                    raise click.UsageError("--source: the images come out %dx%d but %s; pass --resolution %dx%d "
                                           "(or --width/--height)" % (first + (problem, side, side)))
            elif img.size != first:
                raise click.UsageError("--source: image %d is %dx%d but the first was %dx%d; pass --resolution "
                                       "WxH to resize all images to one size" % ((idx,) + img.size + first))
            name = archive_name(count)
            add(name, _png_bytes(img))
            if label is not None:
                labels.append([name, label])
            count += 1
            if echo is not None and count % 10000 == 0:
                echo("%d / %d images" % (count, src.count))
        if first is None and dropped:
            raise click.UsageError("--source %s: no image is at least %dx%d, so --transform=center-crop-wide kept "
                                   "none; lower --width/--height" % (source, width, height))
        if first is None:
            raise click.UsageError("--source %s holds no decodable image" % source)
        meta = {"labels": labels if len(labels) == count else None}
        if meta["labels"] and src.class_names:
            meta["class_names"] = src.class_names
        add(LABELS_FILE, json.dumps(meta).encode("utf-8"))
    if echo is not None:
        for note in src.notes + (["Dropped %d image(s) smaller than %dx%d (center-crop-wide)" % (dropped, width, height)]
                                 if dropped else []):
            echo(note)
    return count, (first[1], first[0], 1 if mode == "L" else 3), bool(meta["labels"])


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--source", required=True, metavar="PATH",
              help="Folder or zip of images, cifar-10-python.tar.gz, train-images-idx3-ubyte.gz (MNIST), an LSUN "
                   "*_lmdb folder, or 'builtin' (cartoon faces)")
@click.option("--dest", required=True, metavar="PATH", help="Output .zip or folder (new, or an empty folder)")
@click.option("--max-images", type=int, metavar="N", help="Convert at most N images [builtin default: %d]"
              % BUILTIN_DEFAULT_COUNT)
@click.option("--resolution", metavar="WxH", help="Centre-crop and resize every image to WxH (e.g. 64x64); "
              "the same as --transform=center-crop --width W --height H")
@click.option("--transform", type=click.Choice(image_transform.TRANSFORMS),
              help="Crop mode, with --width and --height [default: resize only]")
@click.option("--width", type=int, metavar="W", help="Output width (without --transform: resize to it)")
@click.option("--height", type=int, metavar="H", help="Output height (without --transform: resize to it)")
@click.option("--resize-filter", type=click.Choice(sorted(image_transform.RESIZE_FILTERS)), default="lanczos",
              show_default=True, help="Filter used when resizing")
def main(source, dest, max_images, resolution, transform, width, height, resize_filter):
    """Convert images into the trainer's dataset format (PNG zip/folder + dataset.json).

    \b
    The source kind follows from --source:
      builtin                       the built-in cartoon faces (labels: expressions)
      path/                         every image under path/ (labels: dataset.json or subfolders)
      dataset.zip                   every image in the zip (labels as for a folder)
      cifar-10-python.tar.gz        CIFAR-10's 50,000 training images (labels)
      train-images-idx3-ubyte.gz    MNIST, padded to 32x32 (labels from train-labels-idx1-ubyte.gz)
      something_lmdb/               an LSUN category (needs: pip install lmdb)

    \b
    Output images must be square with a power-of-two side (what train.py takes):
      --resolution 64x64                              centre-crop and resize
      --width 64 --height 64                          resize only
      --transform center-crop --width 64 --height 64  the same as --resolution 64x64
      --transform center-crop-wide --width 512 --height 384
                                                      wide band, letterboxed into 512x512
    """
    count, shape, has_labels = convert(source, dest, resolution, max_images, transform, width, height, resize_filter)
    h, w, c = shape
    click.echo("Wrote %d images of %dx%dx%d%s to %s" % (count, w, h, c, " with labels" if has_labels else "", dest))


if __name__ == "__main__":
    main()

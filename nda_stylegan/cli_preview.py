"""``nda-stylegan preview``: a PNG grid of source images beside their negatives."""

import os

import click
import numpy as np
import torch

ALL_NEGATIVES_SPEC = "jigsaw,stitch,mixup,cutout,cutmix,rotate,mosaic"
MASKED_COLOUR = np.array([220, 30, 30], dtype=np.uint8)


def mark_masked(images, valid):
    """Draw a red frame around negatives that equal their source (they are never used as fakes)."""
    out = images.copy()
    for i in np.flatnonzero(~valid):
        out[i, 0, :], out[i, -1, :], out[i, :, 0], out[i, :, -1] = (MASKED_COLOUR,) * 4
    return out


def preview_rows(sources, spec, seed):
    """Grid rows: the sources, then one row per negative of ``spec`` applied to all of them."""
    from . import make_negative, parse_spec
    from .image_io import to_float, to_uint8

    images = to_float(sources)
    generator = torch.Generator().manual_seed(seed)
    rows = [sources]
    for name, params, _weight in parse_spec(spec):
        negative = make_negative(name, **params)
        out, valid = negative.apply_masked(images, negative.sample(images, generator))
        rows.append(mark_masked(to_uint8(out), valid.cpu().numpy()))
    return rows


def check_out_path(out):
    """UsageError unless a file can be created at ``out``: tried for real with a temporary file
    (os.access says yes to root everywhere, and nothing says no for /proc), before any work."""
    import tempfile

    folder = os.path.dirname(os.path.abspath(out))
    if out.endswith(("/", os.sep)) or os.path.isdir(out):
        raise click.UsageError("--out: %s names a folder; give a file name such as %s"
                               % (out, os.path.join(out, "nda-preview.png")))
    if not os.path.isdir(folder):
        raise click.UsageError("--out: cannot write %s: folder %s does not exist; create it first" % (out, folder))
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise click.UsageError("--out: cannot write in %s (%s); choose a folder you can write to"
                               % (folder, exc.strerror or type(exc).__name__))


@click.command("preview")
@click.option("--data", type=click.Path(), default=None,
              help="Image folder or stylegan-style dataset zip [default: the built-in faces].")
@click.option("--nda", "spec", default=ALL_NEGATIVES_SPEC, show_default=True,
              help="Negatives to show, one row each (same syntax as train.py --nda).")
@click.option("--num", type=click.IntRange(2, 64), default=8, show_default=True, help="Source images (columns).")
@click.option("--resolution", type=click.IntRange(4, 1024), default=32, show_default=True, help="Image size.")
@click.option("--scale", type=click.IntRange(1, 16), default=4, show_default=True, help="Enlargement of the PNG.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the negatives' parameters.")
@click.option("--out", type=click.Path(dir_okay=False), default="nda-preview.png", show_default=True,
              help="PNG file to write.")
def preview_command(data, spec, num, resolution, scale, seed, out):
    """Write a PNG grid: the first row holds source images, each further row one negative of
    them. Negatives framed in red equal their source and are masked out in training."""
    from .image_io import grid_image, load_images, save_png

    check_out_path(out)
    try:
        if data is None:
            from .sample_data import make_faces

            sources, _labels = make_faces(num, resolution=resolution, seed=seed)
        else:
            sources = load_images(data, num, resolution)
            if len(sources) < 2:
                raise ValueError("%s holds %d image; negatives need at least 2" % (data, len(sources)))
        from .spec import check_spec_fits

        check_spec_fits(spec, sources.shape[1], sources.shape[2], batch=len(sources))
        rows = preview_rows(sources, spec, seed)
    except ValueError as exc:
        raise click.UsageError(str(exc))
    try:
        save_png(grid_image(rows), out, scale=scale)
    except OSError as exc:  # the temporary file is removed; only say what the user can act on
        raise click.UsageError("--out: cannot write %s (%s); choose a folder you can write to"
                               % (out, exc.strerror or type(exc).__name__))
    click.echo("wrote %s (%d sources x %d negatives)" % (out, len(rows[0]), len(rows) - 1))

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

    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise click.UsageError("cannot write %s: folder %s is missing or not writable" % (out, folder))
    try:
        if data is None:
            from .sample_data import make_faces

            sources, _labels = make_faces(num, resolution=resolution, seed=seed)
        else:
            sources = load_images(data, num, resolution)
            if len(sources) < 2:
                raise ValueError("%s holds %d image; negatives need at least 2" % (data, len(sources)))
        rows = preview_rows(sources, spec, seed)
    except ValueError as exc:
        raise click.UsageError(str(exc))
    save_png(grid_image(rows), out, scale=scale)
    click.echo("wrote %s (%d sources x %d negatives)" % (out, len(rows[0]), len(rows) - 1))

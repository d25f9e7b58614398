"""Reading small image sets (folder or stylegan-style zip) and writing image grids atomically."""

import io
import os
import zipfile

import numpy as np

from .fileio import atomic_write_bytes

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _list_sources(path):
    """(names, opener) of the image files in a folder or zip, in sorted order."""
    if os.path.isdir(path):
        names = sorted(
            os.path.relpath(os.path.join(root, f), path)
            for root, _dirs, files in os.walk(path)
            for f in files
            if f.lower().endswith(IMAGE_EXTENSIONS)
        )
        return names, lambda name: open(os.path.join(path, name), "rb").read()
    if zipfile.is_zipfile(path):
        archive = zipfile.ZipFile(path)
        names = sorted(n for n in archive.namelist() if n.lower().endswith(IMAGE_EXTENSIONS))
        return names, archive.read
    raise ValueError("%s is neither an image folder nor a zip archive" % path)


def load_images(path, count, resolution):
    """Up to ``count`` images from a folder or zip as uint8 ``[N, resolution, resolution, 3]``.

    Images are centre-cropped to a square and resized, so any photo collection previews.
    """
    from PIL import Image

    if not os.path.exists(path):
        raise ValueError("%s does not exist; give an image folder or a dataset zip" % path)
    names, read = _list_sources(path)
    if not names:
        raise ValueError("%s holds no images (%s)" % (path, ", ".join(IMAGE_EXTENSIONS)))
    out = []
    for name in names[:count]:
        try:
            img = Image.open(io.BytesIO(read(name))).convert("RGB")
        except Exception as exc:  # PIL raises several types for corrupt files
            raise ValueError("cannot read image %s in %s: %s" % (name, path, exc)) from None
        side = min(img.size)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        img = img.crop((left, top, left + side, top + side)).resize((resolution, resolution), Image.LANCZOS)
        out.append(np.asarray(img, dtype=np.uint8))
    return np.stack(out)


def grid_image(rows, pad=2, pad_value=255):
    """Tile ``rows`` (a list of uint8 ``[N, H, W, 3]`` arrays, one per grid row) into one array."""
    n = max(len(r) for r in rows)
    h, w = rows[0].shape[1:3]
    grid = np.full((len(rows) * (h + pad) + pad, n * (w + pad) + pad, 3), pad_value, dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            grid[y:y + h, x:x + w] = img
    return grid


def save_png(array, path, scale=1):
    """Save a uint8 ``[H, W, 3]`` array as PNG (optionally enlarged, nearest neighbour), atomically."""
    from PIL import Image

    img = Image.fromarray(array)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def to_uint8(images):
    """``N, C, H, W`` floats in [-1, 1] -> uint8 ``[N, H, W, C]``."""
    import torch

    arr = ((images.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return arr.permute(0, 2, 3, 1).numpy()


def to_float(images):
    """uint8 ``[N, H, W, C]`` -> ``N, C, H, W`` float32 in [-1, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1

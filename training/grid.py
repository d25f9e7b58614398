"""Image grids for the run folder (reals.png, fakes*.png, negatives.png) and atomic PNG writes."""

import numpy as np
import PIL.Image
import torch

from nda_stylegan.fileio import atomic_write


def grid_shape(resolution, max_w=16, max_h=8):
    """Grid columns/rows for images of ``resolution`` px: about 1920x1080 px, at least 4x4,
    capped so generating the grid stays cheap on a CPU."""
    gw = int(np.clip(1920 // resolution, 4, max_w))
    gh = int(np.clip(1080 // resolution, 4, max_h))
    return gw, gh


def pick_grid_samples(dataset, resolution, seed=0):
    """Choose dataset indices for the grid: by class (one class per row) when the dataset is
    labelled, else a seeded random pick. Returns ``(gw, gh), indices`` (len gw * gh)."""
    gw, gh = grid_shape(resolution)
    n = len(dataset)
    rng = np.random.RandomState(seed)
    if not getattr(dataset, "has_labels", False):
        order = rng.permutation(n) if n >= gw * gh else rng.randint(n, size=gw * gh)
        return (gw, gh), [int(i) for i in order[: gw * gh]]
    by_label = {}
    for i in rng.permutation(n):
        key = tuple(np.asarray(dataset.get_label(int(i))).flatten().tolist())
        by_label.setdefault(key, []).append(int(i))
    keys = sorted(by_label)
    indices = []
    for row in range(gh):
        members = by_label[keys[row % len(keys)]]
        indices.extend(members[col % len(members)] for col in range(gw))
    return (gw, gh), indices


def images_to_grid(images, grid_size, drange=(-1, 1)):
    """N,C,H,W images (tensor or array) in ``drange`` -> uint8 H*gh, W*gw, C grid (C = 1 or 3)."""
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu().numpy()
    images = np.asarray(images, dtype=np.float32)
    lo, hi = drange
    images = np.rint((images - lo) * (255 / (hi - lo))).clip(0, 255).astype(np.uint8)
    gw, gh = grid_size
    n, c, h, w = images.shape
    if n < gw * gh:  # fill the last row with blanks
        images = np.concatenate([images, np.zeros([gw * gh - n, c, h, w], np.uint8)])
    images = images[: gw * gh].reshape(gh, gw, c, h, w).transpose(0, 3, 1, 4, 2).reshape(gh * h, gw * w, c)
    return images


def save_png(array, path):
    """Write an H,W,C (C = 1 or 3) uint8 array as a PNG, atomically."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    img = PIL.Image.fromarray(array, "L" if array.ndim == 2 else "RGB")
    with atomic_write(path) as f:
        img.save(f, format="PNG")


def save_image_grid(images, path, grid_size=None, drange=(-1, 1)):
    """Save N,C,H,W images as one grid PNG; grid_size defaults to a near-square layout."""
    if grid_size is None:
        n = len(images)
        gw = int(np.ceil(np.sqrt(n)))
        grid_size = (gw, int(np.ceil(n / gw)))
    save_png(images_to_grid(images, grid_size, drange), path)

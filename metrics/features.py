"""Feature statistics of real data and of a generator, through a detector.

``FeatureStats`` accumulates features (all rows, and/or float64 mean and covariance sums);
``dataset_features`` and ``generator_features`` feed it, split across ranks when
``torch.distributed`` runs with several processes (rank r takes items r, r + n, ...; every rank
ends with all features).
"""

import contextlib

import numpy as np
import torch


class FeatureStats:
    """Accumulated detector features.

    Args:
        capture_all: keep every feature row (KID, precision/recall, IS).
        capture_mean_cov: keep float64 sums for the mean and covariance (FID).
        max_items: stop accepting rows after this many (None: no limit).
    """

    def __init__(self, capture_all=False, capture_mean_cov=False, max_items=None):
        self.capture_all = capture_all
        self.capture_mean_cov = capture_mean_cov
        self.max_items = max_items
        self.num_items = 0
        self.num_features = None
        self._rows = []
        self._sum = None
        self._outer = None

    def is_full(self):
        return self.max_items is not None and self.num_items >= self.max_items

    def append(self, x):
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError("features must be 2-D [N, C], got shape %s" % (x.shape,))
        if self.max_items is not None:
            x = x[:max(self.max_items - self.num_items, 0)]
        if x.shape[0] == 0:
            return
        if self.num_features is None:
            self.num_features = x.shape[1]
            self._sum = np.zeros([x.shape[1]], np.float64)
            self._outer = np.zeros([x.shape[1]] * 2, np.float64) if self.capture_mean_cov else None
        elif x.shape[1] != self.num_features:
            raise ValueError("features changed width: %d then %d" % (self.num_features, x.shape[1]))
        self.num_items += x.shape[0]
        if self.capture_all:
            self._rows.append(x)
        if self.capture_mean_cov:
            x64 = x.astype(np.float64)
            self._sum += x64.sum(axis=0)
            self._outer += x64.T @ x64

    def get_all(self):
        if not self.capture_all:
            raise ValueError("these stats were collected without capture_all")
        if not self._rows:
            return np.zeros([0, self.num_features or 0], np.float32)
        return np.concatenate(self._rows, axis=0)

    def get_mean_cov(self):
        """Mean and (biased, 1/N) covariance, as the host's FID uses."""
        if not self.capture_mean_cov:
            raise ValueError("these stats were collected without capture_mean_cov")
        if self.num_items == 0:
            raise ValueError("no features were collected")
        mean = self._sum / self.num_items
        return mean, self._outer / self.num_items - np.outer(mean, mean)

    # Plain arrays in and out, so the disk cache never needs pickle.
    def to_arrays(self):
        arrays = {"num_items": np.int64(self.num_items), "capture_all": np.bool_(self.capture_all),
                  "capture_mean_cov": np.bool_(self.capture_mean_cov)}
        if self.capture_all:
            arrays["all"] = self.get_all()
        if self.capture_mean_cov:
            arrays["sum"], arrays["outer"] = self._sum, self._outer
        return arrays

    @classmethod
    def from_arrays(cls, arrays, max_items=None):
        stats = cls(capture_all=bool(arrays["capture_all"]), capture_mean_cov=bool(arrays["capture_mean_cov"]),
                    max_items=max_items)
        stats.num_items = int(arrays["num_items"])
        if stats.capture_all:
            rows = np.asarray(arrays["all"], np.float32)
            if rows.ndim != 2 or rows.shape[0] != stats.num_items:
                raise ValueError("stored features do not match their count")
            stats._rows, stats.num_features = [rows], rows.shape[1]
        if stats.capture_mean_cov:
            stats._sum = np.asarray(arrays["sum"], np.float64)
            stats._outer = np.asarray(arrays["outer"], np.float64)
            c = stats._sum.shape[0]
            if stats._sum.ndim != 1 or stats._outer.shape != (c, c):
                raise ValueError("stored mean/covariance sums have inconsistent shapes")
            stats.num_features = c
        for value in arrays.values():
            if np.asarray(value).dtype.kind == "f" and not np.all(np.isfinite(value)):
                raise ValueError("stored features are not finite")
        return stats


def world_and_rank():
    """``(world size, rank)`` of torch.distributed, ``(1, 0)`` in a single process."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def gather_rows(x):
    """All ranks' rows of one step, interleaved so row order matches the item order."""
    world, _ = world_and_rank()
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    torch.distributed.all_gather(parts, x.contiguous())
    return torch.stack(parts, dim=1).flatten(0, 1)


def to_rgb_uint8(images):
    """Detector input: uint8 NCHW with 3 channels (grey images repeated)."""
    if images.dtype != torch.uint8:
        raise ValueError("detector input must be uint8 images, got %s" % images.dtype)
    if images.shape[1] == 1:
        images = images.repeat([1, 3, 1, 1])
    return images


def generated_to_uint8(images):
    """Generator output in [-1, 1] -> uint8 in [0, 255], as the host quantises it."""
    return (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def iterate_dataset(dataset, num_items, batch_size, rank=0, world=1, num_workers=0):
    """Batches ``(images uint8 NCHW, labels)`` of items ``rank, rank + world, ...`` below ``num_items``
    (indices wrap around so every rank takes the same number of steps)."""
    per_rank = (num_items - 1) // world + 1
    indices = [(i * world + rank) % num_items for i in range(per_rank)]
    loader = torch.utils.data.DataLoader(dataset, sampler=indices, batch_size=batch_size, num_workers=num_workers)
    for images, labels in loader:
        yield torch.as_tensor(images), labels


@torch.no_grad()
def dataset_features(dataset, detector, detector_kwargs, device, stats, batch_size=64, progress=None,
                     num_workers=0, transform=None):
    """Fill ``stats`` (its ``max_items`` = how many dataset items) with features of the dataset."""
    world, rank = world_and_rank()
    num_items = stats.max_items if stats.max_items is not None else len(dataset)
    for images, _labels in iterate_dataset(dataset, num_items, batch_size, rank, world, num_workers):
        images = to_rgb_uint8(images.to(device))
        if transform is not None:
            images = transform(images)
        stats.append(gather_rows(detector(images, **detector_kwargs)).cpu().numpy())
        if progress is not None:
            progress.update(stats.num_items)
    return stats


def sample_labels(dataset, n, generator):
    """``n`` labels drawn from the dataset's labels (float [n, c_dim]); uses ``get_label``."""
    idx = torch.randint(len(dataset), [n], generator=generator).tolist()
    labels = [np.asarray(dataset.get_label(i), dtype=np.float32).reshape(-1) for i in idx]
    return torch.from_numpy(np.stack(labels)) if labels else torch.zeros([0, 0])


@torch.no_grad()
def generate_images(G, dataset, n, device, generator, G_kwargs=None):
    """``n`` generated images (uint8 NCHW) with z from ``generator`` and labels drawn from ``dataset``."""
    z = torch.randn([n, G.z_dim], generator=generator).to(device)
    if G.c_dim:
        c = sample_labels(dataset, n, generator).to(device)
    else:
        c = torch.zeros([n, 0], device=device)
    return generated_to_uint8(G(z, c, **(G_kwargs or {})))


@contextlib.contextmanager
def seeded_global_rng(seed, device):
    """Seed torch's global RNG (G's noise inputs draw from it) for a block, then restore the
    caller's state: metrics are reproducible and a training loop's random stream is untouched."""
    device = torch.device(device)
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(int(seed))
        if devices:
            with torch.cuda.device(devices[0]):
                torch.cuda.manual_seed(int(seed))
        yield


@torch.no_grad()
def generator_features(G, dataset, detector, detector_kwargs, device, stats, seed=0, batch_size=64,
                       batch_gen=None, G_kwargs=None, progress=None):
    """Fill ``stats`` (``max_items`` required) with features of images from ``G``; deterministic for
    ``seed`` (each rank draws from its own seeded generator)."""
    if stats.max_items is None:
        raise ValueError("generator features need a sample count (max_items)")
    world, rank = world_and_rank()
    batch_gen = batch_gen or min(batch_size, 8)
    generator = torch.Generator().manual_seed(int(seed) * 1000003 + rank)
    with seeded_global_rng(int(seed) * 1000003 + rank + 1, device):
        while not stats.is_full():
            images = torch.cat([generate_images(G, dataset, batch_gen, device, generator, G_kwargs)
                                for _ in range(max(batch_size // batch_gen, 1))])
            stats.append(gather_rows(detector(to_rgb_uint8(images), **detector_kwargs)).cpu().numpy())
            if progress is not None:
                progress.update(stats.num_items)
    return stats

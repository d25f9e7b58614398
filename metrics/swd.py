"""Sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al., Progressive GAN, 2018).

For each pyramid level (full resolution down to ``resolution_min``), ``patches_per_image`` random
7x7 patches per image become descriptors; each set's descriptors are normalised per channel by its
own mean and std; the distance between the two sets is the mean, over ``dir_repeats`` x
``dirs_per_repeat`` random unit directions, of the 1-D Wasserstein-1 distance between the sorted
projections. Values are reported multiplied by 1e3 (the original's ``SWDx1e3``), per level and
averaged. No pretrained network is involved.
"""

import numpy as np
import torch
import torch.nn.functional as F

from metrics.features import generate_images, iterate_dataset, seeded_global_rng, to_rgb_uint8

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(x, gain=1.0):
    """5x5 binomial (Gaussian) filter per channel, mirrored borders."""
    c = x.shape[1]
    k = (torch.outer(_BINOMIAL, _BINOMIAL) * gain).to(x)
    x = F.pad(x, [2, 2, 2, 2], mode="reflect")
    return F.conv2d(x, k.expand(c, 1, 5, 5), groups=c)


def pyr_down(x):
    return _blur(x)[:, :, ::2, ::2]


def pyr_up(x):
    n, c, h, w = x.shape
    up = x.new_zeros([n, c, h * 2, w * 2])
    up[:, :, ::2, ::2] = x
    return _blur(up, gain=4.0)  # zero insertion keeps 1/4 of the samples


def laplacian_pyramid(x, num_levels):
    """Band-pass levels from full resolution down, then the low-pass residual (``num_levels`` in all)."""
    levels = []
    for _ in range(num_levels - 1):
        low = pyr_down(x)
        levels.append(x - pyr_up(low))
        x = low
    levels.append(x)
    return levels


def level_resolutions(resolution, resolution_min=16):
    res, out = resolution, []
    while res >= min(resolution_min, resolution):
        out.append(res)
        res //= 2
    return out


def sample_patch_positions(n, height, width, patches_per_image, nhood, generator):
    """Top-left corners of random ``nhood`` x ``nhood`` patches: (ys, xs), each [n, patches]."""
    ys = torch.randint(height - nhood + 1, [n, patches_per_image], generator=generator)
    xs = torch.randint(width - nhood + 1, [n, patches_per_image], generator=generator)
    return ys, xs


def extract_patches(level, ys, xs, nhood):
    """Patches [n * patches, C, nhood, nhood] at the given corners."""
    n = level.shape[0]
    offsets = torch.arange(nhood)
    rows = (ys[:, :, None] + offsets)[:, :, :, None]  # [n, p, nhood, 1]
    cols = (xs[:, :, None] + offsets)[:, :, None, :]  # [n, p, 1, nhood]
    batch = torch.arange(n)[:, None, None, None]
    patches = level.permute(0, 2, 3, 1)[batch, rows, cols]  # [n, p, nhood, nhood, C]
    return patches.permute(0, 1, 4, 2, 3).reshape(-1, level.shape[1], nhood, nhood)


def normalise_descriptors(desc):
    """Per-channel zero mean, unit std over the whole set, flattened to [M, C * nhood^2]."""
    desc = desc.float()
    mean = desc.mean(dim=(0, 2, 3), keepdim=True)
    std = desc.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
    return ((desc - mean) / std).reshape(desc.shape[0], -1)


def sort_rows(x):
    """Each row sorted ascending. On the CPU through NumPy, whose SIMD sort is ~15x faster than
    torch's here (tests/benchmarks/bench_metrics.py measures both)."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.sort(x.detach().contiguous().numpy(), axis=1))
    return x.sort(dim=1).values


def sliced_wasserstein(a, b, generator, dir_repeats=4, dirs_per_repeat=128):
    """Mean 1-D Wasserstein-1 distance of sorted projections of ``a`` and ``b`` (equal row counts)."""
    if a.shape != b.shape:
        raise ValueError("SWD needs descriptor sets of equal shape: %s vs %s" % (tuple(a.shape), tuple(b.shape)))
    results = []
    for _ in range(dir_repeats):
        dirs = torch.randn([a.shape[1], dirs_per_repeat], generator=generator).to(a)
        dirs = dirs / dirs.norm(dim=0, keepdim=True)
        pa, pb = sort_rows((a @ dirs).t()), sort_rows((b @ dirs).t())
        results.append((pa - pb).abs().mean())
    return float(torch.stack(results).mean())


class PatchDescriptors:
    """Collects per-level patch descriptors of image batches (uint8 or float NCHW)."""

    def __init__(self, resolution, generator, resolution_min=16, patches_per_image=128, nhood=7):
        self.resolutions = level_resolutions(resolution, resolution_min)
        if self.resolutions[-1] < nhood:
            raise ValueError("SWD needs levels of at least %d px; lowest level is %d px" % (nhood, self.resolutions[-1]))
        self.generator, self.patches_per_image, self.nhood = generator, patches_per_image, nhood
        self.levels = [[] for _ in self.resolutions]

    def add(self, images):
        images = images.float().cpu()
        for store, level in zip(self.levels, laplacian_pyramid(images, len(self.resolutions))):
            ys, xs = sample_patch_positions(level.shape[0], level.shape[2], level.shape[3],
                                            self.patches_per_image, self.nhood, self.generator)
            store.append(extract_patches(level, ys, xs, self.nhood).half())  # half: memory, not precision

    def finalize_level(self, i):
        """Level ``i``'s normalised float32 descriptors (one level at a time keeps memory low)."""
        return normalise_descriptors(torch.cat(self.levels[i]))


def swd_between(images_a, images_b, seed=0, resolution_min=16, patches_per_image=128, nhood=7,
                dir_repeats=4, dirs_per_repeat=128, batch_size=256):
    """SWD x 1e3 per level and their mean between two equal-size image tensors (NCHW)."""
    sets = []
    for images in (images_a, images_b):
        desc = PatchDescriptors(images.shape[-1], _patch_generator(seed), resolution_min, patches_per_image, nhood)
        for batch in images.split(batch_size):
            desc.add(batch)
        sets.append(desc)
    return _distances(sets[0], sets[1], _direction_generator(seed), dir_repeats, dirs_per_repeat)


# Both sets draw patch positions from identically seeded streams (common random numbers): the
# estimate's variance drops, and identical image sets give exactly 0.
def _patch_generator(seed):
    return torch.Generator().manual_seed(int(seed))


def _direction_generator(seed):
    return torch.Generator().manual_seed(int(seed) + 7919)


def _distances(desc_a, desc_b, generator, dir_repeats, dirs_per_repeat):
    per_level = [sliced_wasserstein(desc_a.finalize_level(i), desc_b.finalize_level(i), generator, dir_repeats,
                                    dirs_per_repeat) * 1e3 for i in range(len(desc_a.levels))]
    return dict(zip(desc_a.resolutions, per_level)), sum(per_level) / len(per_level)


def compute_swd(opts, num_images, resolution_min=16, patches_per_image=128, dir_repeats=4, dirs_per_repeat=128):
    """SWD between ``num_images`` real (the first ones of the dataset) and generated images."""
    dataset = opts.dataset(**(opts.extra.get("dataset_updates") or {}))
    num_images = min(num_images, len(dataset))
    batch = opts.option("batch_size", 64)
    resolution = opts.G.img_resolution
    real = PatchDescriptors(resolution, _patch_generator(opts.seed), resolution_min, patches_per_image)
    fake = PatchDescriptors(resolution, _patch_generator(opts.seed), resolution_min, patches_per_image)
    progress = opts.progress.sub(tag="swd real", num_items=num_images, rel_lo=0.0, rel_hi=0.5)
    done = 0
    for images, _ in iterate_dataset(dataset, num_images, batch):
        real.add(to_rgb_uint8(images))
        done += images.shape[0]
        progress.update(done)
    progress = opts.progress.sub(tag="swd generated", num_items=num_images, rel_lo=0.5, rel_hi=1.0)
    gen_generator = torch.Generator().manual_seed(int(opts.seed) * 1000003)
    label_source = dataset if opts.G.c_dim else None
    done = 0
    with seeded_global_rng(int(opts.seed) * 1000003 + 1, opts.device):  # G's noise inputs
        while done < num_images:
            n = min(batch, num_images - done)
            fake.add(to_rgb_uint8(generate_images(opts.G, label_source, n, opts.device, gen_generator, opts.G_kwargs)))
            done += n
            progress.update(done)
    per_level, mean = _distances(real, fake, _direction_generator(opts.seed), dir_repeats, dirs_per_repeat)
    return per_level, mean

"""Sliced Wasserstein distance on Laplacian-pyramid patches: pyramid, patches, distances."""

import pytest
import torch

from metrics import swd


def _smooth_images(n, res=32, seed=0):
    """Images with structure at several scales (sums of random sinusoids), uint8."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, res)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    out = torch.zeros([n, 3, res, res])
    for _ in range(4):
        f = torch.randint(1, 6, [n, 3, 2], generator=g).float()
        ph = torch.rand([n, 3, 1, 1], generator=g) * 6.28
        out += torch.sin(6.28 * (f[..., 0, None, None] * xx + f[..., 1, None, None] * yy) + ph)
    return ((out / 4 + 1) * 127.5).clamp(0, 255).to(torch.uint8)


def test_laplacian_pyramid_reconstructs_the_image():
    x = torch.rand([2, 3, 32, 32], generator=torch.Generator().manual_seed(0))
    levels = swd.laplacian_pyramid(x, 3)
    assert [lv.shape[-1] for lv in levels] == [32, 16, 8]
    rebuilt = levels[-1]
    for band in reversed(levels[:-1]):
        rebuilt = band + swd.pyr_up(rebuilt)
    assert torch.allclose(rebuilt, x, atol=1e-5)


def test_pyr_down_keeps_constant_images_constant():
    x = torch.full([1, 1, 16, 16], 3.0)
    assert torch.allclose(swd.pyr_down(x), torch.full([1, 1, 8, 8], 3.0))
    assert torch.allclose(swd.pyr_up(swd.pyr_down(x)), x)


def test_extract_patches_returns_the_pixels_at_the_corners():
    level = torch.arange(2 * 2 * 10 * 10, dtype=torch.float32).reshape(2, 2, 10, 10)
    ys, xs = torch.tensor([[0, 3], [2, 1]]), torch.tensor([[1, 0], [3, 2]])
    patches = swd.extract_patches(level, ys, xs, 7)
    assert patches.shape == (4, 2, 7, 7)
    for n in range(2):
        for p in range(2):
            y, x = int(ys[n, p]), int(xs[n, p])
            assert torch.equal(patches[n * 2 + p], level[n, :, y:y + 7, x:x + 7])


def test_level_resolutions_stop_at_the_minimum():
    assert swd.level_resolutions(128, 16) == [128, 64, 32, 16]
    assert swd.level_resolutions(16, 16) == [16]


def test_swd_of_identical_images_is_near_zero_and_grows_with_distortion():
    images = _smooth_images(64)
    kw = dict(seed=1, patches_per_image=32, dir_repeats=2, dirs_per_repeat=64)
    per_level, same = swd.swd_between(images, images.clone(), **kw)
    assert set(per_level) == {32, 16}
    assert same == pytest.approx(0.0, abs=1e-6)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(2))
    means = []
    for strength in (4.0, 16.0, 64.0):
        noisy = (images.float() + strength * noise).clamp(0, 255).to(torch.uint8)
        means.append(swd.swd_between(images, noisy, **kw)[1])
    assert 0 < means[0] < means[1] < means[2]


def test_swd_rejects_sets_of_different_sizes():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="equal shape"):
        swd.sliced_wasserstein(torch.zeros(5, 3), torch.zeros(4, 3), g)

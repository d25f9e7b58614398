"""training.augment.AugmentPipe: probabilities, exactness of pixel-exact transforms, accuracy of
the filtered resampling, colour/filter/noise/cutout stages, gradients, seeding, presets."""

import math

import numpy as np
import pytest
import torch

from training import augment as A
from training.augment import AUGPIPE_PRESETS, AugmentPipe


def images(n=4, c=3, size=16, seed=0):
    return torch.rand([n, c, size, size], generator=torch.Generator().manual_seed(seed)) * 2 - 1


def smooth_images(n=2, size=32):
    t = torch.linspace(-1, 1, size)
    base = torch.sin(2 * t)[:, None] * torch.cos(1.5 * t)[None, :]
    return torch.stack([base, base.t(), -base])[None].repeat(n, 1, 1, 1)


def pipe(p=1.0, **kwargs):
    out = AugmentPipe(**kwargs)
    out.p.fill_(p)
    return out


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", ["bgcfnc", "bgc", "color"])
def test_p_zero_is_the_identity(name):
    x = images()
    assert torch.equal(pipe(0.0, **AUGPIPE_PRESETS[name])(x, generator=gen()), x)


def test_xflip_at_p_one_flips_exactly_the_images_it_picks():
    x = images(n=64)
    params = pipe(1.0, xflip=1).sample(x.shape, generator=gen(1))
    y = pipe(1.0, xflip=1).apply(x, params)
    flipped = params["geom"][:, 0, 0] < 0
    assert 10 < int(flipped.sum()) < 54  # each image: a fair coin
    assert torch.equal(y[flipped], x[flipped].flip(3)) and torch.equal(y[~flipped], x[~flipped])


def test_xflip_always_when_the_flip_is_forced():
    x = images(n=8)
    p = pipe(1.0, xflip=1)
    params = p.sample(x.shape, generator=gen())
    params["geom"] = A._scale2d(-torch.ones(8), torch.ones(8))  # replay a "flip all" draw
    assert torch.equal(p.apply(x, params), x.flip(3))


def test_blit_transforms_are_pixel_exact():
    x = images(n=32)
    y = pipe(1.0, **AUGPIPE_PRESETS["blit"])(x, generator=gen(2))
    # Every output is a permutation of its input's pixels (flip / rotate90 / integer shift with
    # reflection): values are copied exactly, none interpolated.
    for a, b in zip(x, y):
        assert set(b.flatten().tolist()) <= set(a.flatten().tolist())


def test_filtered_resampling_identity_flip_and_shift_are_accurate():
    augment = A.AugmentPipe()
    lowpass, offset = augment.lowpass, augment.lowpass_offset
    x = images(n=2, size=16)
    ident = A._resample_filtered(x, torch.eye(3).repeat(2, 1, 1), lowpass, offset)
    assert (ident - x)[..., 4:-4, 4:-4].abs().max() < 1e-5  # perfect reconstruction inside
    s = smooth_images()
    flip = A._resample_filtered(s, A._scale2d(-torch.ones(2), torch.ones(2)), lowpass, offset)
    assert (flip - s.flip(3)).abs().max() < 0.02
    shift = A._translate2d(torch.tensor([-1.0, 2.0]), torch.tensor([0.0, -3.0]))
    exact = A._resample_exact(s, shift)
    assert (A._resample_filtered(s, shift, lowpass, offset) - exact)[..., 4:-4, 4:-4].abs().max() < 0.01


def test_rotation_by_a_quarter_turn_through_the_filtered_path():
    augment = A.AugmentPipe()
    s = smooth_images()
    out = A._resample_filtered(s, A._rotate2d(torch.full([2], math.pi / 2)), augment.lowpass, augment.lowpass_offset)
    err = min(float((out - torch.rot90(s, k, (2, 3))).abs().max()) for k in (1, 3))
    assert err < 0.02


def test_every_stage_but_the_noise_stays_on_the_images_device():
    """On the meta device (a stand-in for a GPU here: no data, and no mixing with CPU tensors) the
    whole pipe runs, so apply() never combines a device tensor with a CPU one. (It did: the
    filtered resampling's offset came from the filter buffer times a CPU range, which crashed the
    main job on a GPU.) The noise stage draws from a generator on the images' device, which the
    meta device lacks."""
    augment = pipe(**dict(AUGPIPE_PRESETS["bgcfnc"], noise=0))
    params = augment.sample([4, 3, 16, 16], generator=gen())
    assert not params["blit_only"]  # the filtered resampling runs
    out = augment.to("meta").apply(images().to("meta"), params)
    assert out.device.type == "meta" and out.shape == (4, 3, 16, 16)


def test_symlet_is_orthonormal_to_its_even_shifts():
    h = A.symlet_lowpass(6)
    assert len(h) == 12 and abs(h.sum() - math.sqrt(2)) < 1e-12
    for m in range(6):
        assert abs(np.dot(h[:12 - 2 * m], h[2 * m:]) - (1.0 if m == 0 else 0.0)) < 1e-10
    bands = A.band_filters(h)
    impulse = np.zeros(bands.shape[1])
    impulse[bands.shape[1] // 2] = 1
    assert np.allclose(bands.sum(axis=0), impulse, atol=1e-12)


@pytest.mark.parametrize("name", sorted(AUGPIPE_PRESETS))
def test_every_preset_keeps_shape_dtype_and_finiteness(name):
    x = images(n=4, size=16)
    y = pipe(1.0, **AUGPIPE_PRESETS[name])(x, generator=gen(3))
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()
    assert not torch.equal(x, y)


def test_gradients_flow_to_the_input():
    x = images(n=4, size=16).requires_grad_(True)
    y = pipe(1.0, **AUGPIPE_PRESETS["bgcfnc"])(x, generator=gen(4))
    (y * torch.linspace(0, 1, y.numel()).reshape(y.shape)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_same_seed_same_output_and_params_replay():
    x = images(n=6)
    p = pipe(0.7, **AUGPIPE_PRESETS["bgcfn"])
    a, b = p(x, generator=gen(5)), p(x, generator=gen(5))
    assert torch.equal(a, b)
    assert not torch.equal(a, p(x, generator=gen(6)))
    assert torch.equal(p.apply(x, p.sample(x.shape, generator=gen(5))), a)


def test_probability_scales_with_p():
    x = torch.zeros([400, 3, 8, 8])
    p = pipe(0.25, brightness=1, brightness_std=1.0)
    changed = (p(x, generator=gen(7)).flatten(1).abs().max(dim=1).values > 0).float().mean()
    assert 0.17 < float(changed) < 0.33


def test_colour_matrices_preserve_grey_axis_and_are_finite_on_extremes():
    # Hue rotation turns around the grey axis: grey stays grey.
    grey = torch.full([16, 3, 4, 4], 0.3)
    y = pipe(1.0, hue=1)(grey, generator=gen(8))
    assert torch.allclose(y, grey, atol=1e-5)
    extreme = torch.tensor([-1.0, 1.0]).repeat(16 * 3 * 32).reshape(16, 3, 8, 8)
    out = pipe(1.0, **AUGPIPE_PRESETS["color"])(extreme, generator=gen(9))
    assert torch.isfinite(out).all()


def test_greyscale_images_get_colour_augmentation():
    x = images(n=8, c=1)
    y = pipe(1.0, brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)(x, generator=gen(10))
    assert y.shape == x.shape and not torch.equal(x, y)


def test_colour_needs_one_or_three_channels():
    with pytest.raises(ValueError, match="1 or 3 channels"):
        pipe(1.0, brightness=1)(images(c=2), generator=gen())


def test_cutout_zeroes_a_square_of_the_given_size():
    x = torch.ones([4, 3, 16, 16])
    y = pipe(1.0, cutout=1, cutout_size=0.5)(x, generator=gen(11))
    zeros = (y[:, 0] == 0).sum(dim=(1, 2))
    assert torch.all((zeros > 0) & (zeros <= 64)) and set(y.unique().tolist()) <= {0.0, 1.0}


def test_state_dict_holds_only_p_and_init_kwargs_rebuild_the_pipe():
    p = pipe(0.3, **AUGPIPE_PRESETS["bgc"])
    assert list(p.state_dict()) == ["p"]
    q = AugmentPipe(**p.init_kwargs)
    q.load_state_dict(p.state_dict())
    x = images()
    assert torch.equal(p(x, generator=gen(12)), q(x, generator=gen(12)))


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(xflip=-1), "xflip must be"),
    (dict(scale_std=float("nan")), "scale_std must be"),
    (dict(imgfilter_bands=[1, 1]), "imgfilter_bands"),
])
def test_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        AugmentPipe(**kwargs)


def test_bad_images_and_mismatched_params():
    p = pipe(1.0, xflip=1)
    with pytest.raises(ValueError, match="float tensor"):
        p(torch.zeros([2, 3, 8], dtype=torch.float32))
    params = p.sample([2, 3, 8, 8], generator=gen())
    with pytest.raises(ValueError, match="sampled for shape"):
        p.apply(torch.zeros([3, 3, 8, 8]), params)


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_grid_sample_fallback_for_old_torch_is_right_to_second_order(monkeypatch, mode):
    """Torch <= 2.0 cannot differentiate grid_sample's backward (R1 through the augment pipe needs
    it). For a fixed grid, sampling is a matrix M on the flattened images: the fallback must give
    y = M x, dL/dx = M^T w for L = <y, w>, and d||M^T w||^2/dw = 2 M M^T w (w stands for D's
    parameters, which R1's penalty reaches through the backward). M comes from first-order
    autograd only, so this holds on any torch."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn([2, 3, 5, 6], generator=g, dtype=torch.float64, requires_grad=True)
    grid = torch.rand([2, 4, 7, 2], generator=g, dtype=torch.float64) * 2.4 - 1.2
    kwargs = dict(mode=mode, padding_mode="reflection", align_corners=False)
    weight = torch.randn([2, 3, 4, 7], generator=g, dtype=torch.float64, requires_grad=True)
    M = torch.autograd.functional.jacobian(lambda t: torch.nn.functional.grid_sample(t, grid, **kwargs), x.detach())
    M = M.reshape(weight.numel(), x.numel())

    monkeypatch.setattr(A, "_grid_sample_double_backward", False)  # as on old torch
    y = A._grid_sample(x, grid, **kwargs)
    (gx,) = torch.autograd.grad((y * weight).sum(), x, create_graph=True)
    (g_weight,) = torch.autograd.grad(gx.square().sum(), weight)
    w = weight.detach().flatten()
    torch.testing.assert_close(y.detach().flatten(), M @ x.detach().flatten())
    torch.testing.assert_close(gx.detach().flatten(), M.T @ w)
    torch.testing.assert_close(g_weight.flatten(), 2 * M @ (M.T @ w))
    assert torch.autograd.gradgradcheck(lambda t: A._GridSampleLinear.apply(t, grid, kwargs), (x,))


def test_grid_sample_probe_matches_this_torch(monkeypatch):
    monkeypatch.setattr(A, "_grid_sample_double_backward", None)  # probe afresh
    x = torch.randn([1, 1, 3, 3], requires_grad=True)
    w = torch.randn([1, 1, 2, 2], requires_grad=True)
    try:
        (gx,) = torch.autograd.grad((torch.nn.functional.grid_sample(x, torch.zeros([1, 2, 2, 2]), align_corners=False) * w).sum(),
                                    x, create_graph=True)
        torch.autograd.grad(gx.sum(), w)
        native = True
    except RuntimeError:
        native = False
    assert A._has_grid_sample_double_backward() is native

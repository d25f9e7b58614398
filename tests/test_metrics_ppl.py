"""Perceptual path length: the interpolation maths against closed forms, the shared noise of a
pair, the host's input preparation and outlier rule, and the five metrics end to end (library
call and calc_metrics.py) with a tiny generator and the stand-in VGG16."""

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import calc_metrics
from metrics import ppl, registry, stats_cache
from standin_detectors import save_standin_detectors, use_standins
from training import snapshot
from training.networks import Discriminator, Generator

PPL_METRICS = ("ppl_zfull", "ppl_wfull", "ppl_zend", "ppl_wend", "ppl2_wend")
RES = 16
DATA = dict(class_name="training.dataset.BuiltinDataset", size=40, resolution=RES, seed=0)

standins_only = pytest.fixture(autouse=True)(use_standins)  # metrics here read the stand-ins


class LinearG(torch.nn.Module):
    """A generator that is linear end to end (float64): mapping ``w = z M`` (2 ws), synthesis
    ``img = mean(ws) A``. Its path lengths have closed forms."""

    def __init__(self, z_dim=6, w_dim=5, res=4, channels=3, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.z_dim, self.c_dim, self.img_resolution, self.img_channels = z_dim, 0, res, channels
        self.M = torch.randn([z_dim, w_dim], generator=g, dtype=torch.float64)
        self.A = torch.randn([w_dim, channels * res * res], generator=g, dtype=torch.float64) * 0.1
        self.synthesis = self._Synthesis(self)

    class _Synthesis(torch.nn.Module):
        def __init__(self, owner):
            super().__init__()
            self.owner = [owner]  # a list: not registered as a submodule (no cycle)

        def forward(self, ws, noise_mode="random"):
            o = self.owner[0]
            return (ws.mean(dim=1) @ o.A).view(-1, o.img_channels, o.img_resolution, o.img_resolution)

    def mapping(self, z, c):
        return (z @ self.M).unsqueeze(1).repeat([1, 2, 1])


def _flat(images):
    return images.flatten(1)


def _pairs(n=5, z_dim=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn([n, z_dim], generator=g, dtype=torch.float64),
            torch.randn([n, z_dim], generator=g, dtype=torch.float64))


# --- interpolation ---------------------------------------------------------------------------

def test_slerp_walks_the_great_circle_at_a_constant_angular_speed():
    a, b = _pairs(4, 7)
    ua, ub = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    theta = torch.acos((ua * ub).sum(dim=1))
    torch.testing.assert_close(ppl.slerp(a, b, 0.0), ua)
    torch.testing.assert_close(ppl.slerp(a, b, 1.0), ub)
    for t in (0.25, 0.5, 0.8):
        p = ppl.slerp(a, b, torch.full([4, 1], t, dtype=torch.float64))
        torch.testing.assert_close(p.norm(dim=1), torch.ones(4, dtype=torch.float64))
        torch.testing.assert_close(torch.acos((p * ua).sum(dim=1).clamp(-1, 1)), t * theta)
        torch.testing.assert_close(torch.acos((p * ub).sum(dim=1).clamp(-1, 1)), (1 - t) * theta)
        # in the plane of a and b: nothing left after removing the a and b components
        coef = torch.linalg.lstsq(torch.stack([ua, ub], dim=2), p.unsqueeze(2)).solution
        residual = p - (torch.stack([ua, ub], dim=2) @ coef).squeeze(2)
        assert residual.abs().max() < 1e-10


def test_sample_paths_end_sampling_starts_every_path_at_zero():
    g = torch.Generator().manual_seed(0)
    z0, z1, t = ppl.sample_paths(64, 8, "full", g)
    assert z0.shape == z1.shape == (64, 8) and t.shape == (64,)
    assert (t >= 0).all() and (t < 1).all() and t.std() > 0.1
    assert not torch.equal(z0, z1)
    _, _, t_end = ppl.sample_paths(64, 8, "end", g)
    assert torch.equal(t_end, torch.zeros(64))
    with pytest.raises(ValueError, match="sampling='middle' is not known"):
        ppl.sample_paths(2, 8, "middle", g)
    with pytest.raises(ValueError, match="space='x' is not known"):
        ppl.path_ws(LinearG(), *_pairs(2), torch.zeros([2, 0]), torch.zeros(2), 1e-4, "x")


def test_w_space_distance_of_a_linear_generator_is_its_closed_form():
    # In W the step is epsilon * (w1 - w0), so d = ||scale * (w1 - w0) A||^2 for every t.
    G = LinearG()
    z0, z1 = _pairs()
    t = torch.tensor([0.0, 0.2, 0.5, 0.7, 0.99], dtype=torch.float64)
    d = ppl.step_distances(G, _flat, z0, z1, torch.zeros([5, 0]), t, 1e-4, "w", False, torch.Generator())
    expected = ((255 / 2) * ((z1 - z0) @ G.M @ G.A)).square().sum(dim=1)
    torch.testing.assert_close(d, expected, rtol=1e-5, atol=0)


def test_z_space_distance_at_the_path_start_is_the_arc_tangent_through_the_generator():
    # At t = 0 the slerp point is unit(z0) and moves along unit(z1's part orthogonal to z0) at
    # speed theta (the angle between z0 and z1); G is linear, so d = ||scale * theta * u M A||^2.
    G = LinearG()
    z0, z1 = _pairs()
    u0 = z0 / z0.norm(dim=1, keepdim=True)
    u1 = z1 / z1.norm(dim=1, keepdim=True)
    cos = (u0 * u1).sum(dim=1, keepdim=True)
    tangent = (u1 - cos * u0) / (u1 - cos * u0).norm(dim=1, keepdim=True)
    theta = torch.acos(cos)
    d = ppl.step_distances(G, _flat, z0, z1, torch.zeros([5, 0]), torch.zeros(5, dtype=torch.float64), 1e-6, "z",
                           False, torch.Generator())
    expected = ((255 / 2) * theta * (tangent @ G.M @ G.A)).square().sum(dim=1)
    torch.testing.assert_close(d, expected, rtol=1e-4, atol=0)


# --- noise, input preparation, outliers --------------------------------------------------------

def _tiny_generator(use_noise=True, c_dim=0):
    torch.manual_seed(0)
    return Generator(z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=RES, img_channels=3,
                     mapping_kwargs=dict(num_layers=2),
                     synthesis_kwargs=dict(channel_base=256, channel_max=16, use_noise=use_noise)).eval()


def test_both_images_of_a_pair_share_their_noise_and_the_buffers_are_restored():
    G = _tiny_generator(use_noise=True)
    for layer in G.synthesis.modules():  # make the noise matter
        if hasattr(layer, "noise_strength"):
            layer.noise_strength.data.fill_(1.0)
    before = {k: v.clone() for k, v in G.synthesis.named_buffers() if k.endswith("noise_const")}
    assert before
    z = torch.randn([4, 16])
    with torch.no_grad():
        d = ppl.step_distances(G, _flat, z, z, torch.zeros([4, 0]), torch.rand(4), 1e-4, "w", False,
                               torch.Generator().manual_seed(5))
        # the same latents twice: only noise could tell the two images apart, and it does not
        assert torch.equal(d, torch.zeros(4))
        # while different noise draws do change the image, so the test above can fail
        ws = G.mapping(z, torch.zeros([4, 0]))
        with ppl.shared_random_noise(G.synthesis, torch.Generator().manual_seed(1)):
            one = G.synthesis(ws, noise_mode="const")
        with ppl.shared_random_noise(G.synthesis, torch.Generator().manual_seed(2)):
            two = G.synthesis(ws, noise_mode="const")
        assert (one - two).abs().max() > 1e-3
    for k, v in G.synthesis.named_buffers():
        if k in before:
            assert torch.equal(v, before[k])


def test_lpips_input_crops_downsamples_and_scales_like_the_host():
    img = torch.linspace(-1, 1, 32 * 32).view(1, 1, 32, 32).repeat([2, 1, 1, 1])
    out = ppl.lpips_input(img, crop=True, resolution=32)
    assert out.shape == (2, 3, 16, 16)  # rows 12..27, columns 8..23 of 32; grey repeated to RGB
    torch.testing.assert_close(out[:, 0], (img[:, 0, 12:28, 8:24] + 1) * 127.5)
    big = torch.rand([1, 3, 1024, 1024]) * 2 - 1
    down = ppl.lpips_input(big, crop=False, resolution=1024)
    assert down.shape == (1, 3, 256, 256)
    torch.testing.assert_close(down[0, :, 0, 0], (big[0, :, :4, :4].mean(dim=(1, 2)) + 1) * 127.5)
    same = ppl.lpips_input(big[:, :, :256, :256], crop=False, resolution=256)
    torch.testing.assert_close(same, (big[:, :, :256, :256] + 1) * 127.5)


def test_filtered_mean_drops_values_outside_the_1st_and_99th_percentiles():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 100, 1001):
        values = rng.standard_normal(n) ** 3
        values[: max(1, n // 50)] *= 1e6  # outliers
        lo = np.percentile(values, 1, method="lower")
        hi = np.percentile(values, 99, method="higher")
        expected = values[(values >= lo) & (values <= hi)].mean()
        assert math.isclose(ppl.filtered_mean(torch.from_numpy(values)), expected, rel_tol=1e-12)
    assert ppl.filtered_mean(torch.tensor([1.0, 2.0, 3.0, 1e9] * 50)) < 1e9  # the outliers are cut
    with pytest.raises(ValueError, match="no path samples"):
        ppl.filtered_mean(torch.zeros(0))


# --- end to end ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def detectors_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("detectors")
    save_standin_detectors(str(folder), inception_features=64, vgg_features=128)
    return str(folder)


def test_the_five_host_metrics_are_registered_and_need_the_vgg16_file():
    for name in PPL_METRICS:
        assert registry.is_valid_metric(name)
        assert registry.metric_needs([name]) == ["vgg16"]


@pytest.mark.parametrize("c_dim", [0, 4])
def test_every_ppl_metric_is_finite_positive_and_seeded(detectors_dir, c_dim):
    G = _tiny_generator(c_dim=c_dim)
    dataset = dict(DATA, use_labels=bool(c_dim))
    values = {}
    for name in PPL_METRICS:
        out = registry.compute_metric(name, G, dataset, "cpu", detectors_dir=detectors_dir, cache_dir=False,
                                      num_gen=12, batch_size=4)
        assert set(out["results"]) == {name} and out["overrides"] == dict(num_gen=12, batch_size=4)
        values[name] = out["results"][name]
        assert math.isfinite(values[name]) and values[name] > 0
    again = registry.compute_metric("ppl_wfull", G, dataset, "cpu", detectors_dir=detectors_dir, cache_dir=False,
                                    num_gen=12, batch_size=4)["results"]["ppl_wfull"]
    other = registry.compute_metric("ppl_wfull", G, dataset, "cpu", detectors_dir=detectors_dir, cache_dir=False,
                                    num_gen=12, batch_size=4, seed=1)["results"]["ppl_wfull"]
    assert again == values["ppl_wfull"] and other != again
    assert values["ppl_zend"] != values["ppl_wend"] != values["ppl2_wend"]  # space and crop matter


def test_calc_metrics_computes_ppl_on_a_snapshot(detectors_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(stats_cache.ENV_CACHE, str(tmp_path / "cache"))
    G = _tiny_generator()
    D = Discriminator(c_dim=0, img_resolution=RES, img_channels=3, channel_base=256, channel_max=16)
    snapshot.save_snapshot(str(tmp_path / "network-snapshot-000000"), dict(G=G, D=D, G_ema=G), DATA)
    result = CliRunner().invoke(calc_metrics.calc_metrics, [
        "--network", str(tmp_path / "network-snapshot-000000.pkl"), "--metrics", "ppl2_wend,ppl_zfull",
        "--detectors", detectors_dir, "--num-gen", "8", "--verbose", "false"])
    assert result.exit_code == 0, result.output
    for name in ("ppl2_wend", "ppl_zfull"):
        with open(tmp_path / ("metric-%s.jsonl" % name)) as f:
            row = json.loads(f.read().splitlines()[-1])
        assert row["metric"] == name and row["overrides"] == dict(num_gen=8) and row["results"][name] > 0
    # two CPU processes split the path samples (all_gather) and rank 0 alone reports
    two = CliRunner().invoke(calc_metrics.calc_metrics, [
        "--network", str(tmp_path / "network-snapshot-000000.pkl"), "--metrics", "ppl2_wend", "--gpus", "2",
        "--detectors", detectors_dir, "--num-gen", "8", "--verbose", "false"])
    assert two.exit_code == 0, two.output
    with open(tmp_path / "metric-ppl2_wend.jsonl") as f:
        rows = [json.loads(line) for line in f.read().splitlines()]
    assert len(rows) == 2 and rows[1]["num_gpus"] == 2 and math.isfinite(rows[1]["results"]["ppl2_wend"])
    # no vgg16.pt: a one-line usage error naming the file, before any work
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = CliRunner().invoke(calc_metrics.calc_metrics, [
        "--network", str(tmp_path / "network-snapshot-000000.pkl"), "--metrics", "ppl2_wend", "--detectors", str(empty)])
    assert missing.exit_code == 2 and "vgg16.pt" in missing.output

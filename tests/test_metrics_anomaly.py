"""Anomaly detection with D (nda_auroc) and the on-the-fly corruptions."""

import numpy as np
import pytest
import torch

from metrics import anomaly, corruptions, registry
from nda_stylegan.sample_data import make_faces

RES = 16


class FacesDataset:
    def __init__(self, n=24, seed=0):
        images, _ = make_faces(n, resolution=RES, seed=seed)
        self.images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        self.name, self.resolution, self.image_shape = "faces", RES, [3, RES, RES]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], np.zeros([0], np.float32)

    def get_label(self, i):
        return np.zeros([0], np.float32)


class MinibatchStd(torch.nn.Module):
    def __init__(self, group_size=4):
        super().__init__()
        self.group_size = group_size


BATCH_SIZES = []


class SmoothnessD(torch.nn.Module):
    """Logit = minus the mean absolute pixel difference: smooth images look "real". Records batch sizes."""

    def __init__(self):
        super().__init__()
        self.mbstd = MinibatchStd(4)

    def forward(self, img, c):
        assert img.min() >= -1 and img.max() <= 1
        BATCH_SIZES.append(img.shape[0])  # a module-level list: metrics deep-copy D
        tv = (img[:, :, 1:] - img[:, :, :-1]).abs().mean(dim=(1, 2, 3)) + (img[..., 1:] - img[..., :-1]).abs().mean(dim=(1, 2, 3))
        return -tv[:, None]


def _nda_auroc(D, spec, seed=0, **kw):
    return registry.compute_metric("nda_auroc", G=None, dataset=FacesDataset(), device="cpu", D=D, nda_spec=spec,
                                   seed=seed, num_images=kw.pop("num_images", 22), batch_size=8, **kw)


def test_nda_auroc_reports_each_set_and_their_mean_with_the_right_sign():
    D = SmoothnessD()
    del BATCH_SIZES[:]
    result = _nda_auroc(D, "jigsaw,cutout", corruptions=["gaussian_noise", "gaussian_blur", "jpeg"])
    r = result["results"]
    assert set(r) == {"nda_auroc_neg_jigsaw", "nda_auroc_neg_cutout", "nda_auroc_corrupt_gaussian_noise",
                      "nda_auroc_corrupt_gaussian_blur", "nda_auroc_corrupt_jpeg", "nda_auroc_mean"}
    assert r["nda_auroc_corrupt_gaussian_noise"] == 1.0  # noise is rougher: reals score higher
    assert r["nda_auroc_corrupt_gaussian_blur"] < 0.5  # blur is smoother: D prefers it
    assert r["nda_auroc_neg_jigsaw"] > 0.5  # tile seams add edges
    others = [v for k, v in r.items() if k != "nda_auroc_mean"]
    assert r["nda_auroc_mean"] == pytest.approx(np.mean(others))
    # 22 images -> 20 (whole minibatch-std groups of 4), scored in batches of 8 = 8, 8, 4
    assert all(n % 4 == 0 for n in BATCH_SIZES) and BATCH_SIZES[:3] == [8, 8, 4]


def test_nda_auroc_is_deterministic_for_a_seed():
    a = _nda_auroc(SmoothnessD(), "stitch,mixup", corruptions=["gaussian_noise"])["results"]
    b = _nda_auroc(SmoothnessD(), "stitch,mixup", corruptions=["gaussian_noise"])["results"]
    assert a == b


class KnowsTheRealsD(torch.nn.Module):
    """Logit ``sign``: +1 for an image of the dataset (to float precision), -1 for anything else;
    ``sign=0``: the same logit whatever the input."""

    def __init__(self, sign=1.0):
        super().__init__()
        self.mbstd = MinibatchStd(4)
        self.sign = sign
        self.reals = torch.from_numpy(FacesDataset().images).float() / 127.5 - 1

    def forward(self, img, c):
        distance = (img[:, None] - self.reals[None]).abs().flatten(2).amax(2).min(1).values
        return self.sign * ((distance < 1e-5).float() * 2 - 1)[:, None]


class NegatedD(SmoothnessD):
    def forward(self, img, c):
        return -super().forward(img, c)


def _set_results(D, spec=None):
    r = dict(_nda_auroc(D, spec, num_images=8)["results"])
    mean = r.pop("nda_auroc_mean")
    assert mean == pytest.approx(np.mean(list(r.values())))
    return r


def test_default_spec_covers_every_builtin_negative_and_corruption():
    # A D that tells reals from everything else: every set is separated perfectly (AUROC 1).
    perfect = _set_results(KnowsTheRealsD())
    expected = {"nda_auroc_neg_" + name for name in anomaly.DEFAULT_NDA_SPEC.split(",")}
    expected |= {"nda_auroc_corrupt_" + name for name in corruptions.CORRUPTIONS}
    assert set(perfect) == expected
    assert all(v == 1.0 for v in perfect.values()), perfect
    # The same D upside down ranks every real last (0); a D that ignores its input gives ties (0.5).
    assert all(v == 0.0 for v in _set_results(KnowsTheRealsD(sign=-1.0)).values())
    assert all(v == 0.5 for v in _set_results(KnowsTheRealsD(sign=0.0)).values())


def test_negating_the_logit_gives_one_minus_the_auroc():
    spec = "jigsaw,stitch,mixup,cutout"
    r, flipped = _set_results(SmoothnessD(), spec), _set_results(NegatedD(), spec)
    assert set(r) == set(flipped)
    assert any(0.05 < v < 0.95 for v in r.values())  # not only the trivial 0 / 1 cases
    for key in r:
        assert flipped[key] == pytest.approx(1 - r[key], abs=1e-12), key


def test_negatives_with_parameters_get_distinct_keys():
    keys = [k for k, _ in anomaly.negatives_from_spec("jigsaw(k=4),jigsaw:2,jigsaw(k=4):3")]
    assert keys == ["jigsaw_k_4", "jigsaw"]


def test_nda_auroc_without_d_is_a_clear_error():
    with pytest.raises(ValueError, match="needs the discriminator"):
        _nda_auroc(None, "jigsaw")


def test_conditional_d_receives_the_source_labels():
    class LabelledFaces(FacesDataset):
        def __getitem__(self, i):
            return self.images[i], np.eye(4, dtype=np.float32)[i % 4]

    seen = []

    class CondD(SmoothnessD):
        def forward(self, img, c):
            seen.append(c)
            return super().forward(img, c)

    images, labels = anomaly.load_real(LabelledFaces(), 8, "cpu")
    out = anomaly.anomaly_aurocs(CondD(), images, labels, [], [("contrast", corruptions.make_corruption("contrast"))])
    assert set(out) == {"corrupt_contrast"}
    assert all(torch.equal(c, labels[:c.shape[0]]) for c in seen)


@pytest.mark.parametrize("name", sorted(corruptions.CORRUPTIONS))
def test_corruptions_keep_shape_and_range_and_change_the_image(name):
    x = torch.from_numpy(make_faces(4, resolution=RES, seed=3)[0]).permute(0, 3, 1, 2).float() / 127.5 - 1
    c = corruptions.make_corruption(name)
    out = c.apply(x, c.sample(x, generator=torch.Generator().manual_seed(0)))
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
    assert (out - x).abs().mean() > 0.01
    replay = c.apply(x, c.sample(x, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(out, replay)  # same generator seed, same corruption


def test_pixelate_is_constant_within_blocks_and_contrast_keeps_the_mean():
    x = torch.rand([2, 3, 32, 32]) * 2 - 1
    p = corruptions.Pixelate(4).apply(x, None)
    blocks = p.unfold(2, 4, 4).unfold(3, 4, 4)
    assert torch.allclose(blocks, blocks[..., :1, :1].expand_as(blocks))
    c = corruptions.Contrast(0.3).apply(x, None)
    assert torch.allclose(c.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-6)


def test_jpeg_handles_grey_images():
    x = torch.rand([2, 1, 16, 16]) * 2 - 1
    out = corruptions.Jpeg(10).apply(x, None)
    assert out.shape == x.shape


def test_unknown_corruption_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown corruption 'fog'; known: gaussian_noise"):
        corruptions.make_corruption("fog")

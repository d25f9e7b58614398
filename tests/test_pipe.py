"""NDAPipe: weighted mixing in one op call, labels, reproducibility, no gradient, statistics."""

import sys

import pytest
import torch

import nda_stylegan
from nda_stylegan.negatives import make_negative
from nda_stylegan.pipe import NDAPipe

ALL_SPEC = "jigsaw:3,stitch,mixup,cutout,cutmix,rotate,mosaic"


def images(n=8, h=16, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g) * 2 - 1


def test_mixing_proportions_follow_weights():
    pipe = NDAPipe("jigsaw:6,stitch:3,cutout:1", seed=0)
    _, choice = pipe.sample(images(6000, 8, 8))
    share = torch.bincount(choice, minlength=3).double() / 6000
    assert torch.allclose(share, torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64), atol=0.025)


def _quarters(img):
    """The 2 x 2 tiles of a ``[C, H, W]`` image, row by row."""
    h, w = img.shape[1] // 2, img.shape[2] // 2
    return [img[:, i * h:(i + 1) * h, j * w:(j + 1) * w] for i in (0, 1) for j in (0, 1)]


def _changed_box(out, src):
    """(y0, y1, x0, x1): the bounding box of the pixels where ``out`` differs from ``src``, or None."""
    rows, cols = (out != src).any(0).any(1).nonzero(), (out != src).any(0).any(0).nonzero()
    if rows.numel() == 0:
        return None
    return int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1


def is_negative_of(name, out, x, n):
    """Whether ``out`` can be the default-parameter negative ``name`` of image ``n`` of the batch
    ``x``, judged from the pixels alone (random images: no two kinds can be confused)."""
    src, others = x[n], [m for m in range(len(x)) if m != n]
    h, w = src.shape[1:]
    if name == "jigsaw":  # its own four tiles, in another order
        perm = [next((s for s, tile in enumerate(_quarters(src)) if torch.equal(got, tile)), None)
                for got in _quarters(out)]
        return sorted(p for p in perm if p is not None) == [0, 1, 2, 3] and perm != [0, 1, 2, 3]
    if name == "rotate":
        return any(torch.equal(out, torch.rot90(src, q, dims=(1, 2))) for q in (1, 2, 3))
    if name == "mosaic":  # each tile in place, from at least two different images
        sources = [next((m for m in range(len(x)) if torch.equal(got, _quarters(x[m])[t])), None)
                   for t, got in enumerate(_quarters(out))]
        return None not in sources and len(set(sources)) > 1
    if name == "stitch":  # own top (left) half, another image's bottom (right) half
        return any((torch.equal(out[:, :h // 2], src[:, :h // 2]) and torch.equal(out[:, h // 2:], x[m][:, h // 2:]))
                   or (torch.equal(out[:, :, :w // 2], src[:, :, :w // 2])
                       and torch.equal(out[:, :, w // 2:], x[m][:, :, w // 2:])) for m in others)
    if name == "mixup":  # l * own + (1 - l) * another, 0 < l < 1
        for m in others:
            d = src - x[m]
            lam = float(((out - x[m]) * d).sum() / (d * d).sum())
            if 0 < lam < 1 and torch.allclose(out, lam * src + (1 - lam) * x[m], atol=1e-5):
                return True
        return False
    box = _changed_box(out, src)  # cutout and cutmix change one box and nothing else
    if box is None:
        return False
    inside = out[:, box[0]:box[1], box[2]:box[3]]
    if name == "cutout":  # the box holds its own per-channel mean
        mean = src[:, box[0]:box[1], box[2]:box[3]].mean((1, 2), keepdim=True)
        return torch.allclose(inside, mean.expand_as(inside), atol=1e-6)
    if name == "cutmix":  # the box holds another image's pixels at the same place
        return any(torch.equal(inside, x[m][:, box[0]:box[1], box[2]:box[3]]) for m in others)
    raise AssertionError(name)


# A stitch is also a cutmix whose box is a half, and a mosaic whose tiles come from two images.
ALSO_LOOKS_LIKE = {"stitch": {"cutmix", "mosaic"}}


def test_one_apply_call_and_every_image_gets_the_negative_chosen_for_it(monkeypatch):
    import nda_stylegan.ops.tile as tile

    calls = []
    real = tile.apply_plan

    def counting(x, plan, *args, **kwargs):
        calls.append(plan.batch)
        return real(x, plan, *args, **kwargs)

    monkeypatch.setattr(tile, "apply_plan", counting)
    pipe = NDAPipe(ALL_SPEC)
    names = [neg.name for neg in pipe.negatives]
    seen = set()
    for seed in range(3):
        x = images(24, seed=seed)
        del calls[:]
        out, _, valid = pipe(x, generator=torch.Generator().manual_seed(seed))
        assert calls == [24] and bool(valid.all())
        # The same generator state through the public two steps gives the choice behind ``out``.
        plan, choice = pipe.sample(x, torch.Generator().manual_seed(seed))
        assert torch.equal(pipe.apply_masked(x, plan)[0], out)
        for n, k in enumerate(choice.tolist()):
            kinds = {name for name in names if is_negative_of(name, out[n], x, n)}
            assert kinds - ALSO_LOOKS_LIKE.get(names[k], set()) == {names[k]}, (seed, n, names[k], kinds)
            seen.add(names[k])
    assert seen == set(names)


def test_labels_follow_their_sources():
    # Jigsaw and rotate only move pixels within an image: negative n holds exactly image n's pixels.
    pipe = NDAPipe("jigsaw,rotate", seed=1)
    x = images(8)
    labels = torch.arange(8) * 10
    out, out_labels, _ = pipe(x, labels)
    assert out_labels is labels
    for n in range(8):
        assert torch.equal(out[n].flatten().sort().values, x[n].flatten().sort().values)
    assert pipe(x)[1] is None
    onehot = torch.eye(8)
    assert torch.equal(pipe(x, onehot)[1], onehot)
    with pytest.raises(ValueError, match=r"labels must be a tensor with one row per image \(8\)"):
        pipe(x, torch.arange(7))


def test_seeded_reproducibility():
    x = images(8)
    a, b = NDAPipe(ALL_SPEC, seed=3), NDAPipe(ALL_SPEC, seed=3)
    first = [a(x)[0] for _ in range(3)]
    second = [b(x)[0] for _ in range(3)]
    assert all(torch.equal(p, q) for p, q in zip(first, second))
    assert not torch.equal(first[0], first[1])  # the pipe's generator advances between calls
    assert not torch.equal(NDAPipe(ALL_SPEC, seed=4)(x)[0], first[0])
    # An explicit generator overrides the pipe's own.
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(a(x, generator=g1)[0], NDAPipe(ALL_SPEC)(x, generator=g2)[0])
    # Parsed lists work the same as text.
    parsed = nda_stylegan.parse_spec(ALL_SPEC)
    assert torch.equal(NDAPipe(parsed, seed=3)(x)[0], first[0])


def test_no_gradient_and_dtypes():
    x = images(8).requires_grad_(True)
    out, _, _ = NDAPipe(ALL_SPEC, seed=0)(x)
    assert not out.requires_grad and out.grad_fn is None
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        out, _, valid = NDAPipe(ALL_SPEC, seed=0)(images(8).to(dtype))
        assert out.dtype == dtype and bool(valid.all())


def test_rectangular_and_larger_sizes():
    out, _, valid = NDAPipe(ALL_SPEC.replace("rotate", "rotate(angles=180)"), seed=0)(images(8, 32, 64))
    assert out.shape == (8, 3, 32, 64) and bool(valid.all())
    out, _, valid = NDAPipe("jigsaw(k=4),cutout", seed=0)(images(4, 64, 64))
    assert out.shape == (4, 3, 64, 64) and bool(valid.all())


def test_statistics_report_invalid_share():
    pipe = NDAPipe("rotate(angles=180):1,jigsaw:1", seed=0)
    x = images(8)
    x[:4] = 0.25  # constant images: rotation and jigsaw leave them unchanged
    for _ in range(10):
        _, _, valid = pipe(x)
        assert not valid[:4].any() and valid[4:].all()
    stats = pipe.pop_stats()
    assert stats["nda/count"] == 80 and stats["nda/invalid_share"] == 0.5
    assert abs(stats["nda/rotate(angles=180)/share"] + stats["nda/jigsaw/share"] - 1) < 1e-12
    assert 0.2 < stats["nda/jigsaw/invalid_share"] < 0.8
    assert pipe.stats()["nda/count"] == 0  # popped


def test_errors_are_one_line():
    with pytest.raises(ValueError, match="needs a batch of at least 2 images") as info:
        NDAPipe("jigsaw,stitch")(images(1))
    assert "\n" not in str(info.value)
    assert NDAPipe("jigsaw")(images(1))[0].shape == (1, 3, 16, 16)
    x = images(4)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        NDAPipe("cutout")(x)
    with pytest.raises(ValueError, match="floating point"):
        NDAPipe("jigsaw")(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="unknown negative 'jigsw'"):
        NDAPipe("jigsw")
    with pytest.raises(ValueError, match="jigsaw with k=3 needs height and width divisible by 3"):
        NDAPipe("jigsaw(k=3):0.01,stitch")(images(4))


def test_public_exports_are_lazy():
    import subprocess

    code = ("import sys, nda_stylegan; assert 'torch' not in sys.modules; "
            "assert 'NDAPipe' in dir(nda_stylegan); "
            "print(nda_stylegan.available_negatives()); assert 'torch' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert nda_stylegan.NDAPipe is NDAPipe
    assert nda_stylegan.make_negative("jigsaw", k=2).k == 2
    with pytest.raises(AttributeError):
        nda_stylegan.not_a_name


def test_pipe_survives_deepcopy_and_pickle_with_its_random_stream():
    import copy
    import pickle

    x = images(8)
    pipe = NDAPipe(ALL_SPEC, seed=2)
    pipe(x)
    for clone in (copy.deepcopy(pipe), pickle.loads(pickle.dumps(pipe))):
        assert torch.equal(clone(x)[0], copy.deepcopy(pipe)(x)[0])
        assert clone.spec == pipe.spec and clone.names == pipe.names
    unseeded = pickle.loads(pickle.dumps(NDAPipe("jigsaw")))
    assert unseeded.generator is None and unseeded(x)[0].shape == x.shape


def test_docstring_examples_of_pipe_and_spec_run():
    import doctest

    import nda_stylegan.pipe
    import nda_stylegan.spec

    for module in (nda_stylegan.pipe, nda_stylegan.spec):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__

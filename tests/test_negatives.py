"""The seven built-in negatives: shapes, reproducibility, semantics against independent
constructions, official parameters at 32x32, scaling, the never-equal-to-source rule, errors,
and the entry-point registry."""

import doctest
import importlib
import math

import pytest
import torch

from nda_stylegan.negatives import available_negatives, make_negative, registry
from nda_stylegan.negatives.base import Negative, Param
from nda_stylegan.negatives.plan import BOX_FILL, BOX_PASTE, TilePlan
from nda_stylegan.negatives.registry import BUILTIN_NEGATIVES

ALL = sorted(BUILTIN_NEGATIVES)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def images(n=8, c=3, h=32, w=32, seed=0, dtype=torch.float32):
    # Continuous random values: two different pixels are never equal by chance.
    return (torch.rand(n, c, h, w, generator=gen(seed), dtype=torch.float64) * 2 - 1).to(dtype)


def tiles_of(x, gh, gw):
    """Independent tiling (last row/column absorbs the remainder): list of [N, C, h, w] tensors."""
    h, w = x.shape[-2:]
    th, tw = h // gh, w // gw
    ys = [i * th for i in range(gh)] + [h]
    xs = [j * tw for j in range(gw)] + [w]
    return [x[..., ys[i]:ys[i + 1], xs[j]:xs[j + 1]] for i in range(gh) for j in range(gw)]


# -- registry ---------------------------------------------------------------------------------
def test_registry_lists_builtins_sorted_and_errors_name_choices():
    assert available_negatives() == ALL
    with pytest.raises(ValueError, match=r"unknown negative 'jigsw'; available: cutmix, cutout, jigsaw"):
        make_negative("jigsw")
    with pytest.raises(ValueError, match=r"jigsaw: unknown parameter q; allowed: k \(an int in \[2, 64\]\)"):
        make_negative("jigsaw", q=1)
    with pytest.raises(ValueError, match=r"k=1 is not allowed; use an int in \[2, 64\]"):
        make_negative("jigsaw", k=1)
    assert make_negative("jigsaw", k=4).k == 4


def test_builtins_are_registered_as_entry_points():
    found = {ep.name: ep.value for ep in registry._entry_points()}
    for name in BUILTIN_NEGATIVES:
        assert found.get(name) == "nda_stylegan.negatives.%s:%s" % (name, name.capitalize())


class _FakeEP(object):
    def __init__(self, name, obj):
        self.name, self.value, self._obj = name, "fake:%s" % name, obj

    def load(self):
        return self._obj


class Blur(Negative):
    """A third-party negative for the test (identity plan: always invalid)."""

    name = "blur"
    PARAMS = {"radius": Param(1, "int", "radius", low=1, high=4)}

    def sample_plan(self, n, height, width, generator):
        return TilePlan.identity(n)


@pytest.mark.parametrize("style", ["dict", "select"])
def test_third_party_entry_point_and_both_metadata_apis(monkeypatch, style):
    """Python 3.8/3.9 return a dict of groups; 3.10+ an object with select()."""
    from importlib import metadata

    eps = [_FakeEP("blur", Blur), _FakeEP("jigsaw", Blur)]  # may not replace a built-in

    class Selectable(object):
        def select(self, group):
            return eps if group == registry.ENTRY_POINT_GROUP else []

    fake = {registry.ENTRY_POINT_GROUP: eps} if style == "dict" else Selectable()
    monkeypatch.setattr(metadata, "entry_points", lambda: fake)
    try:
        assert available_negatives(refresh=True) == sorted(ALL + ["blur"])
        neg = make_negative("blur", radius=2)
        assert isinstance(neg, Blur) and neg.radius == 2
        assert type(make_negative("jigsaw")).__name__ == "Jigsaw"
        out, valid = neg.apply_masked(images(2), neg.sample(images(2)))
        assert not valid.any()
    finally:
        monkeypatch.undo()
        available_negatives(refresh=True)


def test_broken_third_party_entry_points_give_clear_errors(monkeypatch):
    from importlib import metadata

    class Broken(_FakeEP):
        def load(self):
            raise ImportError("no module named mypkg")

    eps = {registry.ENTRY_POINT_GROUP: [Broken("broken", None), _FakeEP("notaneg", object)]}
    monkeypatch.setattr(metadata, "entry_points", lambda: eps)
    try:
        available_negatives(refresh=True)
        with pytest.raises(ValueError, match=r"negative 'broken' could not be loaded.*ImportError"):
            make_negative("broken")
        with pytest.raises(ValueError, match=r"has no sample\(\); subclass nda_stylegan.negatives.base.Negative"):
            make_negative("notaneg")
    finally:
        monkeypatch.undo()
        available_negatives(refresh=True)


def test_spec_words_are_never_negatives(monkeypatch):
    from importlib import metadata

    from nda_stylegan.spec import DEFAULT_SPEC, parse_spec

    eps = {registry.ENTRY_POINT_GROUP: [_FakeEP(name, object) for name in ("default", "None", "off")]}
    monkeypatch.setattr(metadata, "entry_points", lambda: eps)
    try:
        assert available_negatives(refresh=True) == ALL  # a plugin naming one of them is skipped
        assert parse_spec("default") == parse_spec(DEFAULT_SPEC) == parse_spec(" DEFAULT ")
        with pytest.raises(ValueError, match="unknown negative 'off'"):
            parse_spec("off")
    finally:
        monkeypatch.undo()
        available_negatives(refresh=True)


def test_registry_falls_back_to_builtins_without_metadata(monkeypatch):
    from importlib import metadata

    def broken():
        raise RuntimeError("no metadata")

    monkeypatch.setattr(metadata, "entry_points", broken)
    try:
        assert available_negatives(refresh=True) == ALL
        assert type(make_negative("mosaic")).__name__ == "Mosaic"
    finally:
        monkeypatch.undo()
        available_negatives(refresh=True)


def test_docstring_examples_run():
    for name in ALL:
        module = importlib.import_module("nda_stylegan.negatives." + name)
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, name
        cls = getattr(module, name.capitalize())
        assert "Parameters" in cls.__doc__ and "Shapes" in cls.__doc__
        text = cls.describe()
        assert text.startswith(name + ":") and all(p in text for p in cls.PARAMS)


# -- shapes, dtypes, reproducibility ---------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_shape_dtype_and_valid(name, dtype):
    neg = make_negative(name)
    x = images(4, h=16, w=16, dtype=dtype)
    plan = neg.sample(x, gen(1))
    assert isinstance(plan, TilePlan) and plan.grid.device == x.device
    out, valid = neg.apply_masked(x, plan)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert valid.dtype == torch.bool and valid.shape == (4,) and bool(valid.all())
    assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize("name", ALL)
def test_seeded_reproducibility_and_replay(name):
    neg = make_negative(name)
    x = images(6, h=16, w=16)
    a = neg(x, gen(7))
    b = neg(x, gen(7))
    assert torch.equal(a, b)
    plan = neg.sample(x, gen(7))
    assert torch.equal(neg.apply(x, plan), a)  # sample/apply replays the call
    assert torch.equal(neg.apply(x, plan.clone()), a)
    # The default CPU generator is used when none is given.
    torch.manual_seed(3)
    c = neg(x)
    torch.manual_seed(3)
    assert torch.equal(neg(x), c)
    draws = [neg.sample(x, gen(s)).tensors() for s in range(4)]
    assert any(any(not torch.equal(p, q) for p, q in zip(draws[0], d)) for d in draws[1:])


# -- never equal to the source ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_no_negative_equals_its_source_over_many_draws(name):
    neg = make_negative(name)
    x = images(8, c=1, h=8, w=8)
    g = gen(11)
    leaks = 0
    for _ in range(300):  # 2400 negatives per transform
        out, valid = neg.apply_masked(x, neg.sample(x, g))
        same = (out == x).flatten(1).all(1)
        leaks += int(same.sum())
        assert torch.equal(valid, ~same)
    assert leaks == 0


def test_jigsaw_never_draws_identity_and_transposed_assembly_would_leak():
    neg = make_negative("jigsaw")
    plan = neg.sample_cpu(24000, 32, 32, gen(0))
    perm = plan.tile_src_tile[:, :4]
    assert not (perm == torch.arange(4)).all(1).any()
    assert (plan.tile_src_image[:, :4] == torch.arange(24000)[:, None]).all()  # tiles from the image itself
    # All 23 non-identity permutations are drawn, roughly uniformly.
    codes = (perm * torch.tensor([64, 16, 4, 1])).sum(1)
    counts = torch.bincount(codes, minlength=256)
    counts = counts[counts > 0]
    assert counts.numel() == 23 and counts.min() > 800 and counts.max() < 1300
    # The official code put output tile (r, c) from tile perm[c*k + r] (transposed reassembly):
    # one allowed permutation (the transpose) then returns the input unchanged, ~1/23 of draws.
    transposed = perm[:, [0, 2, 1, 3]]
    official_leak = (transposed == torch.arange(4)).all(1).float().mean().item()
    assert abs(official_leak - 1 / 23) < 0.006


@pytest.mark.parametrize("name", ["stitch", "mixup", "cutmix"])
def test_partners_are_never_self(name):
    neg = make_negative(name)
    for n in (2, 3, 64):
        for s in range(20):
            plan = neg.sample_cpu(n, 16, 16, gen(s))
            partner = {"stitch": lambda: plan.tile_src_image[:, 1], "mixup": lambda: plan.blend_src,
                       "cutmix": lambda: plan.box_src}[name]()
            assert not (partner == torch.arange(n)).any()
            assert sorted(partner.tolist()) == list(range(n))  # a permutation: every image used once


def test_mosaic_sources():
    neg = make_negative("mosaic")
    plan = neg.sample_cpu(3000, 16, 16, gen(0))
    src = plan.tile_src_image[:, :4]
    assert all(len(set(row)) == 4 for row in src[:500].tolist())  # distinct images when N >= k*k
    assert (plan.tile_src_tile[:, :4] == torch.arange(4)).all()  # same position
    for n in (2, 3):  # small batch: repeats allowed, but never all tiles from one image
        plan = neg.sample_cpu(n, 16, 16, gen(n))
        for s in range(200):
            src = neg.sample_cpu(n, 16, 16, gen(s)).tile_src_image[:, :4]
            assert (src != src[:, :1]).any(1).all()


# -- semantics against independent constructions ----------------------------------------------------
def test_jigsaw_output_tiles_are_the_permuted_input_tiles():
    x = images(5, h=32, w=48)
    for k in (2, 4):
        neg = make_negative("jigsaw", k=k)
        plan = neg.sample(x, gen(k))
        out = neg.apply(x, plan)
        src_tiles, out_tiles = tiles_of(x, k, k), tiles_of(out, k, k)
        assert out_tiles[0].shape[-2:] == (32 // k, 48 // k)
        for n in range(5):
            for t in range(k * k):
                assert torch.equal(out_tiles[t][n], src_tiles[int(plan.tile_src_tile[n, t])][n])


@pytest.mark.parametrize("orientation", ["horizontal", "vertical", "image", "batch"])
def test_stitch_halves_come_from_the_right_images(orientation):
    x = images(6, h=17, w=20)
    neg = make_negative("stitch", orientation=orientation)
    vertical_seen = set()
    for s in range(6):
        plan = neg.sample(x, gen(s))
        out = neg.apply(x, plan)
        partner = plan.tile_src_image[:, 1]
        for n in range(6):
            vertical = int(plan.grid_cols[n]) == 2
            vertical_seen.add(vertical)
            if vertical:
                assert torch.equal(out[n, :, :, :10], x[n, :, :, :10])
                assert torch.equal(out[n, :, :, 10:], x[partner[n], :, :, 10:])
            else:
                assert torch.equal(out[n, :, :8], x[n, :, :8])  # own top half: H // 2 rows
                assert torch.equal(out[n, :, 8:], x[partner[n], :, 8:])
        if orientation == "batch":
            assert len(set(plan.grid_cols.tolist())) == 1
    expected = {"horizontal": {False}, "vertical": {True}}.get(orientation, {False, True})
    assert vertical_seen == expected


def test_mixup_blend_and_official_beta():
    x = images(6, h=16, w=16)
    neg = make_negative("mixup")
    plan = neg.sample(x, gen(0))
    lam = plan.blend_w
    assert (lam == lam[0]).all()  # one l per batch (official)
    expected = lam[0] * x + (1 - lam[0]) * x[plan.blend_src]
    assert torch.allclose(neg.apply(x, plan), expected, atol=1e-6)
    # Beta(25, 25): mean 0.5, std sqrt(1/204) = 0.0700.
    lam = make_negative("mixup", per_image=True).sample_cpu(20000, 32, 32, gen(1)).blend_w.double()
    assert abs(lam.mean().item() - 0.5) < 0.003
    assert abs(lam.std().item() - math.sqrt(1 / 204)) < 0.003
    batch_lams = torch.stack([neg.sample_cpu(2, 8, 8, gen(s)).blend_w[0] for s in range(300)]).double()
    assert abs(batch_lams.mean().item() - 0.5) < 0.02 and batch_lams.std().item() > 0.05


def test_cutout_box_holds_its_mean_and_official_sizes():
    x = images(8, h=32, w=32)
    neg = make_negative("cutout")
    plan = neg.sample(x, gen(0))
    out = neg.apply(x, plan)
    assert (plan.box_mode == BOX_FILL).all()
    for n in range(8):
        y0, y1, x0, x1 = plan.box_bounds[n].tolist()
        mean = x[n, :, y0:y1, x0:x1].mean((1, 2))
        assert torch.allclose(out[n, :, y0:y1, x0:x1], mean[:, None, None].expand(-1, y1 - y0, x1 - x0), atol=1e-6)
        outside = torch.ones(32, 32, dtype=torch.bool)
        outside[y0:y1, x0:x1] = False
        assert torch.equal(out[n][:, outside], x[n][:, outside])

    def sides(h, w, n=4000):
        y0, y1, x0, x1 = neg.sample_cpu(n, h, w, gen(2)).box_bounds.unbind(1)
        side_y, side_x = y1 - y0, x1 - x0
        assert torch.equal(side_y, side_x)  # a square
        assert (y0 >= 0).all() and (y1 <= h).all() and (x0 >= 0).all() and (x1 <= w).all()
        return set(side_y.tolist()), x0

    assert sides(32, 32)[0] == set(range(10, 20))  # official: 10..19 px at 32x32
    assert sides(64, 64)[0] == set(range(20, 40))
    assert min(sides(256, 256)[0]) == 80 and max(sides(256, 256)[0]) == 159
    got, x0 = sides(32, 96)  # rectangular: the shorter side sets the size, the square moves along both
    assert got == set(range(10, 20)) and x0.max() > 60
    fixed = make_negative("cutout", size=0.25).sample_cpu(50, 64, 64, gen(0)).box_bounds
    assert ((fixed[:, 1] - fixed[:, 0]) == 16).all()  # y1 - y0
    tiny = make_negative("cutout", size=0.01).sample_cpu(50, 8, 8, gen(0)).box_bounds
    assert ((tiny[:, 1] - tiny[:, 0]) == 1).all()  # never an empty box


def test_cutmix_paste_and_box_rules():
    x = images(6, h=32, w=32)
    neg = make_negative("cutmix")
    for s in range(5):
        plan = neg.sample(x, gen(s))
        out = neg.apply(x, plan)
        assert (plan.box_mode == BOX_PASTE).all() and (plan.box_bounds == plan.box_bounds[:1]).all()
        y0, y1, x0, x1 = plan.box_bounds[0].tolist()
        expected = x.clone()
        expected[:, :, y0:y1, x0:x1] = x[plan.box_src, :, y0:y1, x0:x1]
        assert torch.equal(out, expected)
    y0, y1, x0, x1 = make_negative("cutmix", per_image=True).sample_cpu(20000, 32, 32, gen(9)).box_bounds.unbind(1)
    h, w = y1 - y0, x1 - x0
    assert (h > 0).all() and (w > 0).all() and not ((h == 32) & (w == 32)).any()
    # The area (1 - l with l ~ U(0, 1), before clipping) spans the whole range.
    area = (h * w).double() / 1024
    assert area.min() < 0.01 and area.max() > 0.85
    # Unclipped side = 2 * (floor(S * sqrt(1 - l)) // 2): with l pinned near 0.5 -> 22 px at 32, 44 at 64.
    for size, side in ((32, 22), (64, 44)):
        y0, y1, x0, x1 = make_negative("cutmix", alpha=1e6, per_image=True).sample_cpu(400, size, size, gen(0)).box_bounds.unbind(1)
        inner = (y0 > 0) & (y1 < size) & (x0 > 0) & (x1 < size)
        assert inner.sum() > 10 and ((y1 - y0)[inner] == side).all()


def test_rotate_equals_rot90_and_non_square_uses_180():
    x = images(8, h=16, w=16)
    neg = make_negative("rotate")
    plan = neg.sample(x, gen(0))
    out = neg.apply(x, plan)
    quarters = plan.tile_rot[:, 0]
    for n in range(8):
        assert torch.equal(out[n], torch.rot90(x[n], int(quarters[n]), dims=(1, 2)))
    drawn = neg.sample_cpu(3000, 16, 16, gen(1)).tile_rot[:, 0]
    assert set(drawn.tolist()) == {1, 2, 3}
    # Non-square: quarter turns would change the shape, so only 180 degrees is drawn.
    r = images(4, h=16, w=24)
    plan = neg.sample(r, gen(2))
    assert (plan.tile_rot[:, 0] == 2).all()
    assert torch.equal(neg.apply(r, plan), torch.rot90(r, 2, dims=(2, 3)))
    with pytest.raises(ValueError, match=r"16x24 image is not square.*add 180 to angles"):
        make_negative("rotate", angles=(90, 270)).sample(r)
    only90 = make_negative("rotate", angles=90)
    assert only90.angles == (90,) and torch.equal(only90(x), torch.rot90(x, 1, dims=(2, 3)))


def test_mosaic_tiles_come_from_their_sources_in_place():
    x = images(8, h=33, w=35)  # not divisible: the last row/column of tiles is larger
    for k in (2, 3):
        neg = make_negative("mosaic", k=k)
        plan = neg.sample(x, gen(k))
        out = neg.apply(x, plan)
        out_t, src_t = tiles_of(out, k, k), tiles_of(x, k, k)
        for n in range(8):
            for t in range(k * k):
                assert torch.equal(out_t[t][n], src_t[t][int(plan.tile_src_image[n, t])])


# -- validity mask and errors ----------------------------------------------------------------------
def test_valid_mask_false_where_output_equals_source():
    x = images(4, h=8, w=8)
    x[1] = 0.5  # constant: any rotation / cutout leaves it unchanged
    x[2] = x[2] + torch.rot90(x[2], 2, dims=(1, 2))  # 180-degree symmetric
    _, valid = make_negative("rotate", angles=180).apply_masked(x, make_negative("rotate", angles=180).sample(x))
    assert valid.tolist() == [True, False, False, True]
    _, valid = make_negative("cutout").apply_masked(x, make_negative("cutout").sample(x, gen(0)))
    assert not valid[1] and valid[0]


@pytest.mark.parametrize("name", ["stitch", "mixup", "cutmix", "mosaic"])
def test_batch_of_one_is_refused_for_partner_negatives(name):
    with pytest.raises(ValueError, match=r"needs a batch of at least 2 images.*use a larger batch"):
        make_negative(name)(images(1))


@pytest.mark.parametrize("name", ALL)
def test_bad_input_gives_one_line_errors(name):
    neg = make_negative(name)
    cases = [
        (torch.zeros(4, 3, 16, 16, dtype=torch.uint8), r"floating point"),
        (torch.zeros(3, 16, 16), r"\[N, C, H, W\]"),
        ([[1.0]], r"torch.Tensor"),
    ]
    for bad, pattern in cases:
        with pytest.raises(ValueError, match=pattern) as info:
            neg(bad)
        assert "\n" not in str(info.value)
    x = images(4, h=16, w=16)
    x[2, 0, 3, 3] = float("nan")
    x[3] = float("inf")
    with pytest.raises(ValueError, match=r"images hold NaN or Inf values") as info:
        neg(x, gen(0))
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"TilePlan"):
        neg.apply(images(4, h=16, w=16), {"k": 2})
    with pytest.raises(ValueError, match=r"torch.Generator"):
        neg.sample(images(4, h=16, w=16), generator=0)


def test_check_flags_counts_only_nonfinite_images():
    from nda_stylegan.negatives.base import check_flags
    from nda_stylegan.negatives.plan import FLAG_CHANGED, FLAG_NONFINITE

    check_flags(torch.tensor([FLAG_CHANGED, 0, FLAG_CHANGED], dtype=torch.int32), "x")  # no error
    check_flags(torch.zeros(0, dtype=torch.int32), "x")
    flags = torch.tensor([FLAG_CHANGED, FLAG_CHANGED | FLAG_NONFINITE, 0, FLAG_NONFINITE], dtype=torch.int32)
    with pytest.raises(ValueError, match=r"^x: 2 of 4 images hold NaN or Inf values"):
        check_flags(flags, "x")


@pytest.mark.parametrize("ops", ["auto", "reference"])
def test_apply_and_apply_masked_agree_and_both_refuse_nonfinite(ops, monkeypatch):
    monkeypatch.setenv("NDA_STYLEGAN_OPS", ops)
    neg = make_negative("rotate", angles=180)
    x = images(4, h=8, w=8)
    x[1] = 0.5  # unchanged by a half turn: invalid
    plan = neg.sample(x, gen(0))
    out, valid = neg.apply_masked(x, plan)
    assert torch.equal(neg.apply(x, plan), out) and torch.equal(out, torch.rot90(x, 2, dims=(2, 3)))
    assert valid.dtype == torch.bool and valid.tolist() == [True, False, True, True]
    x[2, 0, 3, 3] = float("nan")
    x[3] = float("inf")
    for fn in (neg.apply, neg.apply_masked):
        with pytest.raises(ValueError, match=r"^rotate: 2 of 4 images hold NaN or Inf values"):
            fn(x, plan)


def test_apply_uses_a_subclass_apply_masked():
    class Flipped(Negative):
        name = "flipped"

        def sample_plan(self, n, height, width, generator):
            return TilePlan.identity(n)

        def apply_masked(self, images, params):
            return images.flip(-1), torch.ones(images.shape[0], dtype=torch.bool)

    x = images(2, h=4, w=4)
    neg = Flipped()
    assert torch.equal(neg.apply(x, neg.sample(x)), x.flip(-1))


def test_size_errors():
    with pytest.raises(ValueError, match=r"jigsaw with k=3 needs height and width divisible by 3, got 32x32"):
        make_negative("jigsaw", k=3)(images(2))
    with pytest.raises(ValueError, match=r"mosaic with k=4 needs images at least 4 pixels"):
        make_negative("mosaic", k=4)(images(2, h=3, w=8))
    with pytest.raises(ValueError, match=r"orientation='vertical'"):
        make_negative("stitch")(images(2, h=1, w=8))
    out = make_negative("stitch", orientation="vertical")(images(2, h=1, w=8))
    assert out.shape == (2, 3, 1, 8)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ALL)
def test_plans_are_drawn_on_cpu_and_identical_on_every_device(name, device):
    neg = make_negative(name)
    x = images(4, h=16, w=16)
    ref_plan = neg.sample(x, gen(4))
    plan = neg.sample(x.to(device), gen(4))
    assert plan.grid.device.type == device
    assert all(torch.equal(p.cpu(), q) for p, q in zip(plan.tensors(), ref_plan.tensors()))
    out = neg.apply(x.to(device), plan)
    assert out.device.type == device
    assert torch.allclose(out.cpu(), neg.apply(x, ref_plan), atol=1e-6)

"""The fused TilePlan kernel (C++ CPU) against the pure-PyTorch reference, and the dispatcher."""

import pytest
import torch

from nda_stylegan.negatives.plan import BOX_FILL, BOX_NONE, BOX_PASTE, FLAG_CHANGED, FLAG_NONFINITE, TilePlan
from nda_stylegan.ops import tile, tile_kernel
from nda_stylegan.ops.tile_ref import apply_plan_reference

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@pytest.fixture(scope="module")
def kernel():
    """Build (or reload from the cache) the CPU kernel; fail loudly if it does not build."""
    reason = tile_kernel.unsupported_reason(torch.zeros(1, 1, 1, 1))
    assert reason is None, reason


def random_plan(n, h, w, gen, max_grid=4, blend=True, box=True, wild=False):
    """A random plan mixing every feature; ``wild`` adds tile ids outside the grid (clamped)."""
    gh = torch.randint(1, min(max_grid, h) + 1, (n,), generator=gen)
    gw = torch.randint(1, min(max_grid, w) + 1, (n,), generator=gen)
    t = int((gh * gw).max())
    tiles = torch.stack([
        torch.randint(0, n, (n, t), generator=gen),
        torch.randint(-3 if wild else 0, t + (3 if wild else 0), (n, t), generator=gen) if wild
        else (torch.rand(n, t, generator=gen) * (gh * gw).view(n, 1)).long(),
        torch.randint(0, 4, (n, t), generator=gen),
    ], -1)
    grid = torch.stack([gh, gw], 1)
    blend_w = torch.ones(n)
    if blend:
        on = torch.rand(n, generator=gen) < 0.4
        blend_w = torch.where(on, torch.rand(n, generator=gen), blend_w)
    boxes = torch.zeros(n, 6, dtype=torch.int64)
    if box:
        ys = torch.randint(-2, h + 2, (n, 2), generator=gen).sort(1).values
        xs = torch.randint(-2, w + 2, (n, 2), generator=gen).sort(1).values
        boxes[:, 0:2], boxes[:, 2:4] = ys, xs
        boxes[:, 4] = torch.randint(0, 3, (n,), generator=gen)
    boxes[:, 5] = torch.randint(0, n, (n,), generator=gen)
    return TilePlan(grid, tiles, boxes, torch.randint(0, n, (n,), generator=gen), blend_w)


def assert_same(images, plan):
    out_k, flags_k = tile.apply_plan(images, plan, impl="kernel")
    out_r, flags_r = apply_plan_reference(images, plan)
    assert out_k.dtype == images.dtype and out_k.shape == images.shape
    assert out_k.is_contiguous()
    # Blends and box means may differ in the last bit (summation order); gathers are exact.
    rounding = plan.blend_w.ne(1).any() or plan.box_mode.eq(BOX_FILL).any()
    if rounding:
        torch.testing.assert_close(out_k, out_r, equal_nan=True)
    else:
        assert torch.equal(out_k.isnan(), out_r.isnan())
        assert torch.equal(out_k.nan_to_num(), out_r.nan_to_num())
    assert torch.equal(flags_k, flags_r), (flags_k, flags_r)


SHAPES = [(3, 1, 1, 1), (4, 3, 8, 8), (5, 2, 7, 13), (3, 3, 16, 9), (2, 1, 5, 5), (6, 3, 32, 32), (2, 4, 17, 31)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_random_plans_match_reference(kernel, shape, dtype):
    gen = torch.Generator().manual_seed(SHAPES.index(shape) * 10 + DTYPES.index(dtype))
    n, c, h, w = shape
    for trial in range(6):
        images = torch.randn(shape, generator=gen).to(dtype)
        plan = random_plan(n, h, w, gen, blend=trial % 2 == 0, box=trial % 3 != 2, wild=trial == 5)
        assert_same(images, plan)


@pytest.mark.parametrize("gh,gw", [(1, 1), (2, 2), (3, 3), (4, 4), (2, 3), (4, 1), (1, 4), (3, 2)])
@pytest.mark.parametrize("hw", [(12, 12), (13, 11), (10, 15)])
def test_every_rotation_on_every_grid(kernel, gh, gw, hw):
    """Each tile entry rotated 0..3 turns, on grids with and without remainder tiles."""
    h, w = hw
    n = 4
    images = torch.randn(n, 2, h, w, generator=torch.Generator().manual_seed(gh * 10 + gw))
    plan = TilePlan.identity(n, gh, gw)
    t = gh * gw
    plan.tile_src_image = torch.arange(n).roll(1).view(n, 1)
    plan.tile_src_tile = torch.arange(t).flip(0).view(1, t)
    plan.tile_rot = (torch.arange(n).view(n, 1) + torch.arange(t).view(1, t)) % 4
    assert_same(images, plan)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 15, 16, 17, 19, 33, 37])
def test_turned_tiles_of_every_size_are_exact(kernel, size, dtype):
    """Quarter-turned tiles are gathered in bands of 16 rows by 4x4 transposes (float32) or one
    value at a time (others): every tile size, with edges left over in rows and columns, is
    bit-exact, on whole images and on grids with remainder tiles, alone and with blend and box."""
    gen = torch.Generator().manual_seed(size)
    n = 3
    images = torch.randn(n, 2, size, size, generator=gen).to(dtype)
    for k in (1, 3):
        plan = TilePlan.identity(n)
        plan.tile_rot[:, 0] = k
        out, flags = tile.apply_plan(images, plan, impl="kernel")
        assert torch.equal(out, torch.rot90(images, k, dims=(-2, -1)))
        assert torch.equal(flags, apply_plan_reference(images, plan)[1])
    for gh, gw in [(2, 2), (3, 3), (2, 3)]:
        if gh > size or gw > size:
            continue
        t = gh * gw
        plan = TilePlan.identity(n, gh, gw)
        plan.tile_src_image = torch.arange(n).roll(1).view(n, 1)
        plan.tile_src_tile = torch.randint(0, t, (n, t), generator=gen)
        plan.tile_rot = torch.randint(0, 4, (n, t), generator=gen)
        assert_same(images, plan)
        # The same tiles blended with another image, then a filled and a pasted box.
        plan.blend_w[0] = 0.25
        plan.blend_src = torch.arange(n).roll(-1)
        plan.box_bounds[1] = torch.tensor([size // 4, size - size // 4, 0, size // 2 + 1])
        plan.box_mode[1], plan.box_src[1] = BOX_FILL, 0
        plan.box_bounds[2] = torch.tensor([1, size, size // 3, size])
        plan.box_mode[2], plan.box_src[2] = BOX_PASTE, 0
        assert_same(images, plan)


def test_turned_bands_across_thread_chunks(kernel):
    """Large enough that the rows are split between threads inside an image (mid-band)."""
    gen = torch.Generator().manual_seed(5)
    images = torch.randn(3, 1, 203, 203, generator=gen)
    plan = TilePlan.identity(3, 2, 2)
    plan.tile_rot = torch.tensor([[1, 3, 1, 3], [3, 1, 2, 1], [1, 1, 3, 3]])
    plan.tile_src_tile = torch.tensor([[3, 2, 1, 0], [0, 1, 2, 3], [1, 0, 3, 2]])
    images[2, 0, 150, 7] = float("nan")  # flagged from inside a band
    assert_same(images, plan)
    _, flags = tile.apply_plan(images, plan, impl="kernel")
    assert flags.tolist() == [FLAG_CHANGED, FLAG_CHANGED, FLAG_CHANGED | FLAG_NONFINITE]


def test_fill_box_split_between_threads_has_one_value(kernel):
    """Each thread computes the box means it needs: an image whose rows are split between two
    threads (mid-box) still gets one fill value per channel, equal to the reference's."""
    gen = torch.Generator().manual_seed(6)
    images = torch.randn(3, 2, 203, 203, generator=gen)
    plan = TilePlan.identity(3)
    plan.box_bounds = torch.tensor([40, 170, 10, 190])
    plan.box_mode = BOX_FILL
    assert_same(images, plan)
    out, _ = tile.apply_plan(images, plan, impl="kernel")
    for n in range(3):
        for ch in range(2):
            box = out[n, ch, 40:170, 10:190]
            assert torch.equal(box, box[0, 0].expand_as(box))


def test_whole_image_rotation_is_rot90(kernel):
    images = torch.randn(3, 3, 9, 9)
    for k in range(4):
        plan = TilePlan.identity(3)
        plan.tile_rot[:, 0] = k
        out, flags = tile.apply_plan(images, plan, impl="kernel")
        assert torch.equal(out, torch.rot90(images, k, dims=(-2, -1)))
        assert flags.tolist() == [0 if k == 0 else FLAG_CHANGED] * 3


def test_blend_fill_and_paste(kernel):
    gen = torch.Generator().manual_seed(3)
    images = torch.randn(4, 3, 10, 12, generator=gen)
    plan = TilePlan.identity(4)
    plan.blend_src = torch.tensor([1, 0, 3, 2])
    plan.blend_w = torch.tensor([0.3, 1.0, 0.5, 0.9])
    plan.box = torch.tensor([[2, 6, 3, 9, BOX_FILL, 0], [0, 10, 0, 12, BOX_PASTE, 2],
                             [1, 2, 1, 2, BOX_FILL, 2], [5, 5, 0, 4, BOX_PASTE, 0]])
    assert_same(images, plan)
    out, _ = tile.apply_plan(images, plan, impl="kernel")
    assert torch.equal(out[1], images[2])  # a paste over the whole image
    mean = images[0, :, 2:6, 3:9].mean((1, 2))
    torch.testing.assert_close(out[0, :, 2:6, 3:9], mean.view(3, 1, 1).expand(3, 4, 6))


def test_mixed_plans_across_a_batch(kernel):
    """One batch whose images use different grids, rotations, blends and boxes."""
    gen = torch.Generator().manual_seed(11)
    n, h, w = 8, 16, 16
    plans = [random_plan(n, h, w, gen, max_grid=1), random_plan(n, h, w, gen, max_grid=4, box=False),
             random_plan(n, h, w, gen, blend=False)]
    choice = torch.arange(n) % 3
    plan = TilePlan.select(plans, choice)
    for dtype in DTYPES:
        assert_same(torch.randn(n, 3, h, w, generator=gen).to(dtype), plan)


@pytest.mark.parametrize("dtype", DTYPES)
def test_flags_identity_nan_and_inf(kernel, dtype):
    images = torch.randn(4, 2, 6, 6).to(dtype)
    images[1, 0, 2, 3] = float("nan")
    images[2, 1, 0, 0] = float("inf")
    plan = TilePlan.identity(4, 2, 2)
    out, flags = tile.apply_plan(images, plan, impl="kernel")
    # NaN != NaN, so an untouched NaN image counts as changed, as in the reference.
    assert flags.tolist() == [0, FLAG_CHANGED | FLAG_NONFINITE, FLAG_NONFINITE, 0]
    assert_same(images, plan)
    plan.tile_src_image = torch.tensor([1, 0, 3, 2]).view(4, 1)
    assert_same(images, plan)


def test_constant_images_fill_is_unchanged(kernel):
    """A box filled with its own mean on a constant image leaves it unchanged (flag clear)."""
    images = torch.full((2, 3, 8, 8), 0.25)
    plan = TilePlan.identity(2)
    plan.box_bounds = torch.tensor([1, 5, 2, 7])
    plan.box_mode = BOX_FILL
    out, flags = tile.apply_plan(images, plan, impl="kernel")
    assert flags.tolist() == [0, 0]
    assert torch.equal(out, images)
    assert_same(images, plan)


def test_layouts_are_accepted(kernel):
    gen = torch.Generator().manual_seed(5)
    images = torch.randn(4, 3, 9, 11, generator=gen)
    plan = random_plan(4, 9, 11, gen)
    expected, flags = apply_plan_reference(images, plan)
    for variant in (images.to(memory_format=torch.channels_last),
                    images.transpose(2, 3).contiguous().transpose(2, 3)):
        out, f = tile.apply_plan(variant, plan, impl="kernel")
        torch.testing.assert_close(out, expected)
        assert torch.equal(f, flags)


def bad_plans():
    """(plan, words of the error) for a batch of 3 images of 4x4: one broken condition each."""
    bad = []
    p = TilePlan.identity(3); p.tile_src_image[0, 0] = 3; bad.append((p, "tile source"))
    p = TilePlan.identity(3); p.tile_rot[1, 0] = 4; bad.append((p, "rotation"))
    p = TilePlan.identity(3); p.grid[2] = torch.tensor([5, 1]); bad.append((p, "grid"))
    p = TilePlan.identity(3); p.grid[2] = torch.tensor([2, 1]); bad.append((p, "fewer tile entries"))
    p = TilePlan.identity(3); p.blend_src[0] = -1; bad.append((p, "blend source"))
    p = TilePlan.identity(3); p.box_src[0] = 7; bad.append((p, "box source"))
    p = TilePlan.identity(3); p.box_mode[0] = 3; bad.append((p, "box mode"))
    bad.append((TilePlan.identity(2), "batch"))
    return bad


def test_bad_plans_raise_value_error_in_both_paths(kernel):
    images = torch.randn(3, 1, 4, 4)
    for plan, words in bad_plans():
        for impl in ("kernel", "reference"):
            with pytest.raises(ValueError, match=words):
                tile.apply_plan(images, plan, impl=impl)


def test_kernel_reports_bad_plan_contents_in_its_flags_instead_of_throwing(kernel):
    # A C++ exception from the library crashed the process on one GPU machine: the op itself
    # must report what a user can get wrong (FLAG_BAD_PLAN on every image), apply_plan raises.
    from nda_stylegan.negatives.plan import FLAG_BAD_PLAN

    images = torch.randn(3, 1, 4, 4)
    for plan, words in bad_plans():
        if words == "batch":
            continue  # a layout error: apply_plan rejects it before calling the op
        _, flags = tile_kernel.apply_plan_kernel(images, plan)
        assert flags.tolist() == [FLAG_BAD_PLAN] * 3, words
    _, flags = tile_kernel.apply_plan_kernel(images, TilePlan.identity(3))
    assert flags.tolist() == [0, 0, 0]


def test_bad_plan_layouts_raise_value_error_before_the_kernel(kernel):
    images = torch.randn(3, 1, 4, 4)
    cases = []
    p = TilePlan.identity(3); p.grid = p.grid.int(); cases.append((p, "grid must be torch.int64"))
    p = TilePlan.identity(3); p.blend_w = p.blend_w.double(); cases.append((p, "blend_w must be torch.float32"))
    p = TilePlan.identity(3); p.tiles = p.tiles[:, :, :2]; cases.append((p, "wrong shapes.*tiles"))
    p = TilePlan.identity(3); p.box = p.box[:, :5]; cases.append((p, "wrong shapes.*box"))
    p = TilePlan.identity(3); p.blend_src = p.blend_src[:2]; cases.append((p, "wrong shapes.*blend_src"))
    p = TilePlan.identity(3); p.tiles = p.tiles[:, :0]; cases.append((p, "wrong shapes.*tiles"))
    for plan, words in cases:
        with pytest.raises(ValueError, match=words):
            tile.apply_plan(images, plan, impl="kernel")


def test_dispatch(kernel, monkeypatch):
    images = torch.randn(2, 1, 4, 4)
    plan = TilePlan.identity(2, 2, 2)
    with pytest.raises(ValueError, match="impl"):
        tile.apply_plan(images, plan, impl="fast")
    with pytest.raises(RuntimeError, match="int64"):
        tile.apply_plan(images.long(), plan, impl="kernel")
    out, flags = tile.apply_plan(images.long(), plan)  # auto: falls back to the reference
    assert torch.equal(out, images.long()) and flags.tolist() == [0, 0]
    monkeypatch.setenv("NDA_STYLEGAN_OPS", "reference")
    with pytest.raises(RuntimeError, match="NDA_STYLEGAN_OPS=reference"):
        tile.apply_plan(images, plan, impl="kernel")
    out, _ = tile.apply_plan(images, plan)
    assert torch.equal(out, images)


def test_inputs_that_need_gradients_use_the_reference(kernel):
    images = torch.randn(2, 1, 4, 4, requires_grad=True)
    plan = TilePlan.identity(2)
    plan.blend_w[:] = 0.5
    plan.blend_src = torch.tensor([1, 0])
    out, _ = tile.apply_plan(images, plan)
    out.sum().backward()
    assert torch.equal(images.grad, torch.ones_like(images))
    with pytest.raises(RuntimeError, match="no backward"):
        tile.apply_plan(images, plan, impl="kernel")
    with torch.no_grad():
        out, _ = tile.apply_plan(images, plan, impl="kernel")
    assert not out.requires_grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_nonfinite_values_anywhere_are_flagged(kernel, dtype):
    """Flags match the reference when NaN/inf sit late in images that already differ early."""
    gen = torch.Generator().manual_seed(21)
    n, h, w = 8, 12, 10
    for trial in range(8):
        images = torch.randn(n, 3, h, w, generator=gen)
        spots = torch.randint(0, n * 3 * h * w, (3,), generator=gen)
        images.view(-1)[spots] = torch.tensor([float("nan"), float("inf"), -float("inf")])
        plan = random_plan(n, h, w, gen, blend=trial % 2 == 0)
        assert_same(images.to(dtype), plan)

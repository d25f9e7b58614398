"""The CUDA kernels against their pure-PyTorch references, on a GPU: bias_act and upfirdn2d
(values in every compiled dtype, first- and second-order gradients, R1's double backward), the
fused tile kernel of the negatives (random plans, every dtype), whole networks with kernels vs
references (fp32 and the fp16 layers), ADA's augment pipe, and a short training run with NDA
and ADA on the GPU.

Every test needs a CUDA device, and the suite sees one only with NDA_TESTS_USE_GPU=1 (see
conftest.py: the rest of the suite pins CPU behaviour):

    NDA_TESTS_USE_GPU=1 pytest tests/test_cuda_ops.py      # or: bash tests/run_gpu_checks.sh

Without a visible GPU (CI, the development machines) each test is skipped with that reason. The
CPU kernels have the same checks in test_training_ops.py (through kernel_checks.py, shared with
this file) and test_tile_op.py, which run everywhere. When this file last ran on a GPU, and its
output: docs/gpu-checks/README.md.
"""

import itertools
import json

import pytest
import torch

from kernel_checks import (UPFIRDN2D_GRADIENT_CASES, bias_act_gradients, r1_double_backward, randn,
                           upfirdn2d_gradients, upfirdn2d_grid)
from test_tile_op import DTYPES as TILE_DTYPES
from test_tile_op import SHAPES as TILE_SHAPES
from test_tile_op import bad_plans, random_plan
from trainer_helpers import common_kwargs, tiny_config, tiny_networks

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device visible (a GPU is hidden from the suite unless "
                                       "NDA_TESTS_USE_GPU=1): these tests compare the CUDA kernels with their "
                                       "references on a GPU")

CUDA = "cuda"


@pytest.fixture(autouse=True)
def exact_float32():
    """TF32 would make the references' convolutions and matmuls less exact than the kernels."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


# ---------------------------------------------------------------- bias_act
def bias_act_values(device):
    from training.ops.bias_act import ACTIVATIONS, bias_act

    checked = 0
    # float16 is compared with the float32 reference: the kernel rounds once, the reference at every step.
    for act, (dtype, tol) in itertools.product(sorted(ACTIVATIONS), ((torch.float64, 1e-12), (torch.float32, 1e-5),
                                                                     (torch.float16, 2e-3))):
        for shape, dim, layout in (([2, 5, 4, 3], 1, "nchw"), ([2, 5, 4, 3], 1, "channels_last"),
                                   ([3, 64, 8, 8], 1, "nchw"), ([6, 7], 1, "nchw"), ([5, 3], 0, "nchw")):
            x = randn(*shape, device=device) * 3
            if layout == "channels_last":
                x = x.to(memory_format=torch.channels_last)
            b = randn(shape[dim], seed=1, device=device)
            for clamp, gain, alpha in ((None, None, None), (0.8, 1.7, 0.1)):
                kw = dict(dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
                out = bias_act(x.to(dtype), b.to(dtype), impl="kernel", **kw)
                ref_dtype = torch.float32 if dtype == torch.float16 else dtype
                # The reference sees the same (rounded) inputs, so only the output's rounding differs.
                ref = bias_act(x.to(dtype).to(ref_dtype), b.to(dtype).to(ref_dtype), impl="reference", **kw)
                assert out.dtype == dtype and out.device.type == device and out.shape == ref.shape
                torch.testing.assert_close(out.to(ref_dtype), ref, rtol=tol, atol=tol, msg=lambda m: "%s %s %s: %s"
                                           % (act, dtype, shape, m))
                checked += 1
    return checked


def test_bias_act_cuda_matches_reference_in_every_dtype():
    assert bias_act_values(CUDA) == 9 * 3 * 5 * 2


@pytest.mark.parametrize("act", ["linear", "lrelu", "relu", "tanh", "sigmoid", "elu", "selu", "softplus", "swish"])
@pytest.mark.parametrize("clamp", [None, 0.9])
def test_bias_act_cuda_gradients_first_and_second_order(act, clamp):
    bias_act_gradients(CUDA, act, clamp)


def test_bias_act_cuda_r1_style_double_backward():
    r1_double_backward(CUDA)


# ---------------------------------------------------------------- upfirdn2d
def upfirdn2d_values(device):
    """The float64 grid, then float32 and float16 (channels_last) on the preset's shapes."""
    from training.ops.upfirdn2d import setup_filter, upfirdn2d

    checked = upfirdn2d_grid(device, tol=1e-11)
    f = setup_filter([1, 3, 3, 1], device=torch.device(device))
    for dtype, tol in ((torch.float32, 1e-5), (torch.float16, 2e-3)):
        for shape in ((2, 4, 9, 9), (3, 64, 32, 32)):
            x32 = randn(*shape, dtype=torch.float32, seed=7, device=device).to(memory_format=torch.channels_last)
            for kw in (dict(up=2, padding=[2, 1, 2, 1], gain=4), dict(down=2, padding=1), dict(padding=[1, 2, 2, 1])):
                x_in, f_in = x32.to(dtype), f.to(dtype)
                out = upfirdn2d(x_in, f_in, impl="kernel", **kw)
                ref = upfirdn2d(x_in.float(), f_in.float(), impl="reference", **kw)  # the same rounded inputs
                assert out.dtype == dtype
                torch.testing.assert_close(out.float(), ref, rtol=tol, atol=tol)
                checked += 1
    return checked


def test_upfirdn2d_cuda_matches_reference_over_parameter_grid():
    assert upfirdn2d_values(CUDA) > 400


def test_upfirdn2d_cuda_64bit_index_branch():
    # The kernel takes 64-bit indices only when an index could pass 2^31: past 2^31 elements
    # (8 GiB of float32), or upsampled coordinates past 2^30, which a huge down reaches on a
    # small tensor (one output sample per row). The wrapper caps such a down at the padded extent
    # (the same output), so the op is called directly; it must give the reference's values.
    from training.ops.upfirdn2d import upfirdn2d

    x = randn(2, 3, 16, 16, dtype=torch.float64, seed=11, device=CUDA)
    f = randn(3, 3, dtype=torch.float64, seed=12, device=CUDA)
    upfirdn2d(x, f, impl="kernel")  # builds and loads the op library
    # (upx, upy, downx, downy, padx0, padx1, pady0, pady1)
    for cfg in ((1, 1, 1_200_000_000, 1, 0, 0, 0, 0), (1, 1, 1, 1_200_000_000, 1, 2, 3, 0),
                (2, 2, 1_100_000_000, 3, 1, 1, 1, 1)):
        upx, upy, downx, downy, px0, px1, py0, py1 = cfg
        out = torch.ops.nda_upfirdn2d.upfirdn2d(x, f, upx, upy, downx, downy, px0, px1, py0, py1, False, 1.0)
        ref = upfirdn2d(x, f, up=(upx, upy), down=(downx, downy), padding=(px0, px1, py0, py1), impl="reference")
        assert out.shape == ref.shape and 1 in out.shape[2:], cfg
        torch.testing.assert_close(out, ref, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("up,down,pad,taps", UPFIRDN2D_GRADIENT_CASES)
def test_upfirdn2d_cuda_gradients_first_and_second_order(up, down, pad, taps):
    upfirdn2d_gradients(CUDA, up, down, pad, taps, tol=1e-11)


# ---------------------------------------------------------------- the negatives' tile kernel
def tile_plans(device):
    from nda_stylegan.negatives.plan import BOX_FILL
    from nda_stylegan.ops import tile
    from nda_stylegan.ops.tile_ref import apply_plan_reference

    checked = 0
    for shape, dtype in itertools.product(TILE_SHAPES, TILE_DTYPES):
        gen = torch.Generator().manual_seed(TILE_SHAPES.index(shape) * 10 + TILE_DTYPES.index(dtype))
        n, c, h, w = shape
        for trial in range(6):
            images = torch.randn(shape, generator=gen).to(dtype)
            plan = random_plan(n, h, w, gen, blend=trial % 2 == 0, box=trial % 3 != 2, wild=trial == 5)
            out, flags = tile.apply_plan(images.to(device), plan, impl="kernel")
            assert out.device.type == device and out.dtype == dtype and out.is_contiguous()
            ref, ref_flags = apply_plan_reference(images, plan)  # on the CPU: the device must not matter
            if plan.blend_w.ne(1).any() or plan.box_mode.eq(BOX_FILL).any():  # sums: the last bit may differ
                torch.testing.assert_close(out.cpu(), ref, equal_nan=True)
            else:
                assert torch.equal(out.cpu().isnan(), ref.isnan())
                assert torch.equal(out.cpu().nan_to_num(), ref.nan_to_num())
            assert torch.equal(flags.cpu(), ref_flags), (shape, dtype, trial)
            checked += 1
    return checked


def test_tile_kernel_cuda_matches_reference_on_random_plans():
    assert tile_plans(CUDA) == len(TILE_SHAPES) * len(TILE_DTYPES) * 6


def test_bad_plans_raise_value_error_on_cuda():
    # The CUDA kernel checks the plan itself (FLAG_BAD_PLAN) instead of TilePlan.check's syncs.
    from nda_stylegan.negatives.plan import TilePlan
    from nda_stylegan.ops import tile

    images = torch.randn(3, 1, 4, 4, device=CUDA)
    for plan, words in bad_plans():
        for where in ("cpu", CUDA):  # moved by apply_plan, or already on the GPU
            with pytest.raises(ValueError, match=words):
                tile.apply_plan(images, plan.to(where), impl="kernel")
    out, flags = tile.apply_plan(images, TilePlan.identity(3, 2, 2).to(CUDA), impl="kernel")
    assert torch.equal(out, images) and flags.tolist() == [0, 0, 0]  # nothing left over from the bad ones


def test_cuda_kernel_reports_bad_plan_contents_in_its_flags_instead_of_throwing():
    # A C++ exception thrown from the library crashed the process on the GPU machine (run 3 of
    # docs/gpu-checks): the op reports the image whose plan is bad, apply_plan raises.
    from nda_stylegan.negatives.plan import FLAG_BAD_PLAN
    from nda_stylegan.ops import tile_kernel

    images = torch.randn(3, 1, 4, 4, device=CUDA)
    for plan, words in bad_plans():
        if words == "batch":
            continue  # a layout error: apply_plan rejects it before calling the op
        _, flags = tile_kernel.apply_plan_kernel(images, plan.to(CUDA))
        bad = (flags & FLAG_BAD_PLAN) != 0
        assert bad.sum().item() == 1, (words, flags.tolist())  # each case breaks one image's plan


def test_every_negative_runs_its_cuda_kernel_and_matches_the_cpu():
    from nda_stylegan.negatives import make_negative
    from nda_stylegan.negatives.registry import available_negatives
    from nda_stylegan.ops import tile_kernel

    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert tile_kernel.unsupported_reason(x.to(CUDA)) is None, tile_kernel.unsupported_reason(x.to(CUDA))
    for name in available_negatives():
        neg = make_negative(name)
        plan = neg.sample(x, torch.Generator().manual_seed(1))
        torch.testing.assert_close(neg.apply(x.to(CUDA), plan).cpu(), neg.apply(x, plan), msg=name)


# ---------------------------------------------------------------- ADA's augment pipe
def test_augment_pipe_on_the_gpu_matches_the_cpu_for_the_same_parameters():
    from training.augment import AUGPIPE_PRESETS, AugmentPipe

    pipe = AugmentPipe(**dict(AUGPIPE_PRESETS["bgcfnc"], noise=0))  # the noise is drawn on each device
    pipe.p.fill_(1.0)
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for seed in range(3):
        params = pipe.sample(x.shape, generator=torch.Generator().manual_seed(seed))
        want = pipe.apply(x, params)
        got = pipe.to(CUDA).apply(x.to(CUDA), params)
        pipe.cpu()
        assert got.device.type == CUDA
        torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- whole networks and training
def network_step(G, D, device, z, c):
    """G's images, D's logits, G's and D's gradients and D's R1 gradient norm, for one batch."""
    G.zero_grad(set_to_none=True)
    D.zero_grad(set_to_none=True)
    img = G(z.to(device), c, noise_mode="const")
    real = img.detach().requires_grad_(True)
    logits = D(real, c)
    (r1,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    (torch.nn.functional.softplus(D(img, c)).mean() + r1.square().sum() * 0.5).backward()
    grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
             for p in list(G.parameters()) + list(D.parameters())]
    return [img.detach(), logits.detach(), r1.detach()] + grads


def networks_kernels_vs_reference(device, monkeypatch, fp16):
    from training.util import construct_class_by_name

    if fp16:
        cfg = tiny_config("/tmp")
        torch.manual_seed(0)
        G = construct_class_by_name(**dict(cfg["G_kwargs"], num_fp16_res=2, conv_clamp=256), **common_kwargs())
        D = construct_class_by_name(**dict(cfg["D_kwargs"], num_fp16_res=2, conv_clamp=256), **common_kwargs())
    else:
        G, D = tiny_networks()
    G, D = G.to(device), D.to(device)
    z = torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(2))
    c = torch.zeros(4, 0, device=device)
    kernel = network_step(G, D, device, z, c)
    monkeypatch.setenv("NDA_STYLEGAN_OPS", "reference")
    reference = network_step(G, D, device, z, c)
    monkeypatch.delenv("NDA_STYLEGAN_OPS")
    # fp16 layers: half-precision rounding in different places; fp32: summation order only.
    rtol, atol = (2e-2, 2e-2) if fp16 else (1e-4, 1e-5)
    for i, (got, want) in enumerate(zip(kernel, reference)):
        assert torch.isfinite(got).all(), i
        scale = want.abs().max().clamp(min=1)
        torch.testing.assert_close(got / scale, want / scale, rtol=rtol, atol=atol, msg=lambda m: "tensor %d: %s" % (i, m))


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16-layers"])
def test_networks_with_cuda_kernels_match_the_reference_path(monkeypatch, fp16):
    networks_kernels_vs_reference(CUDA, monkeypatch, fp16)


def test_training_with_nda_and_ada_on_the_gpu_writes_a_snapshot_that_loads_on_the_cpu(tmp_path):
    from training import snapshot
    from training.augment import AUGPIPE_PRESETS
    from training.training_loop import training_loop

    loss = dict(class_name="nda_stylegan.loss.NDALoss", nda_inner_class_name="training.loss.StyleGAN2Loss",
                nda_spec="jigsaw,stitch", nda_mode="weighted", r1_gamma=0.1)
    aug = dict(class_name="training.augment.AugmentPipe", **AUGPIPE_PRESETS["bgc"])  # the main job's augment
    result = training_loop(**tiny_config(tmp_path, device=CUDA, loss_kwargs=loss, total_kimg=0.064,
                                         augment_kwargs=aug, augment_p=0.5, ada_target=0.6, ada_interval=1))
    assert result.cur_nimg == 64
    G = snapshot.load_network_file(result.snapshot)["G_ema"]  # networks come back on the CPU
    img = G(torch.randn(2, G.z_dim), torch.zeros(2, 0), noise_mode="const")
    assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()
    stats = [json.loads(line) for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert all(line["Loss/NDA/loss"]["num"] > 0 for line in stats)  # D saw negatives in every tick

"""The trainer's Generator and Discriminator: interfaces, determinism, truncation and w_avg,
noise modes, minibatch-stddev grouping, pickling, rebuilding from init kwargs, and agreement
between the C++ kernels and the pure-PyTorch references (including R1's double backward)."""

import io
import os
import pickle
import subprocess
import sys

import pytest
import torch

from training.networks import Discriminator, Generator, MinibatchStdLayer
from trainer_helpers import one_thread  # tiny tensors: run torch on one thread

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SYN = dict(channel_base=256, channel_max=32)
MAP = dict(num_layers=2)


one_thread_per_module = pytest.fixture(scope="module", autouse=True)(one_thread)


def make_G(c_dim=0, res=16, seed=0, **synthesis):
    torch.manual_seed(seed)
    return Generator(z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=res, img_channels=3,
                     mapping_kwargs=MAP, synthesis_kwargs=dict(SYN, **synthesis))


def make_D(c_dim=0, res=16, seed=0, **kwargs):
    torch.manual_seed(seed)
    return Discriminator(c_dim=c_dim, img_resolution=res, img_channels=3, **dict(SYN, **kwargs))


def test_generator_interface_and_shapes():
    G = make_G()
    assert (G.z_dim, G.c_dim, G.w_dim, G.img_resolution, G.img_channels) == (16, 0, 16, 16, 3)
    assert G.num_ws == 2 * 3 - 1 + 1  # 4x4: 1 conv; 8, 16: 2 convs each; plus the last ToRGB
    z = torch.randn(4, 16)
    ws = G.mapping(z, None)
    assert ws.shape == (4, G.num_ws, 16)
    img = G.synthesis(ws, noise_mode="const")
    assert img.shape == (4, 3, 16, 16) and img.dtype == torch.float32
    torch.testing.assert_close(G(z, None, noise_mode="const"), img)
    assert G.mapping.num_layers == 2 and G.mapping.fc0.weight.shape == (16, 16)
    # Default mapping depth is 8 with lr multiplier 0.01 (equalised learning rate).
    torch.manual_seed(0)
    G8 = Generator(16, 0, 16, 16, 3, synthesis_kwargs=SYN)
    assert G8.mapping.num_layers == 8 and G8.mapping.fc7.weight_gain == pytest.approx(0.01 / 4)
    # stylegan3-style flat synthesis kwargs are accepted too.
    torch.manual_seed(0)
    flat = Generator(16, 0, 16, 16, 3, mapping_kwargs=MAP, **SYN)
    assert flat.num_ws == G.num_ws
    for name, t in G.state_dict().items():
        torch.testing.assert_close(flat.state_dict()[name], t)


def test_construction_is_deterministic_and_seed_dependent():
    a, b, c = make_G(seed=3), make_G(seed=3), make_G(seed=4)
    for name, t in a.state_dict().items():
        assert torch.equal(t, b.state_dict()[name]), name
    assert not torch.equal(a.mapping.fc0.weight, c.mapping.fc0.weight)
    da, db = make_D(seed=3), make_D(seed=3)
    for name, t in da.state_dict().items():
        assert torch.equal(t, db.state_dict()[name]), name


def test_truncation_and_w_avg():
    G = make_G()
    z = torch.randn(4, 16)
    assert torch.count_nonzero(G.mapping.w_avg) == 0
    G.mapping(z, None)  # no update without update_emas
    assert torch.count_nonzero(G.mapping.w_avg) == 0
    ws = G.mapping(z, None, update_emas=True)
    expected = ws[:, 0].mean(dim=0) * (1 - 0.995)
    torch.testing.assert_close(G.mapping.w_avg, expected)
    ws0 = G.mapping(z, None, truncation_psi=0)
    torch.testing.assert_close(ws0, G.mapping.w_avg.expand_as(ws0))
    half = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=2)
    torch.testing.assert_close(half[:, :2], G.mapping.w_avg + 0.5 * (ws[:, :2] - G.mapping.w_avg))
    torch.testing.assert_close(half[:, 2:], ws[:, 2:])


def test_noise_modes():
    G = make_G()
    for module in G.modules():
        if hasattr(module, "noise_strength"):
            module.noise_strength.data.fill_(0.5)
    z = torch.randn(4, 16)
    const1, const2 = G(z, None, noise_mode="const"), G(z, None, noise_mode="const")
    torch.testing.assert_close(const1, const2)
    assert not torch.allclose(G(z, None, noise_mode="random"), G(z, None, noise_mode="random"))
    none = G(z, None, noise_mode="none")
    assert not torch.allclose(none, const1)
    with pytest.raises(ValueError, match="noise_mode"):
        G(z, None, noise_mode="loud")


@pytest.mark.parametrize("arch", ["orig", "skip", "resnet"])
def test_architectures_run_and_train(arch):
    G = make_G(architecture=arch)
    D = make_D(architecture=arch)
    img = G(torch.randn(4, 16), None)
    logits = D(img, None)
    assert logits.shape == (4, 1)
    logits.sum().backward()
    for name, p in list(G.named_parameters()) + list(D.named_parameters()):
        if "noise_strength" in name:
            continue  # starts at zero; still gets a gradient, but not necessarily a non-zero one
        assert p.grad is not None, name


def test_conditional_generator_and_projection_discriminator():
    G = make_G(c_dim=5)
    D = make_D(c_dim=5)
    z = torch.randn(4, 16)
    c = torch.eye(5)[[0, 1, 2, 3]]
    img = G(z, c, noise_mode="const")
    assert not torch.allclose(img, G(z, torch.eye(5)[[4, 4, 4, 4]], noise_mode="const"))
    assert D.b4.cmap_dim == 32 and D.mapping.w_dim == 32
    out = D(img, c)
    assert out.shape == (4, 1)
    assert not torch.allclose(out, D(img, torch.eye(5)[[4, 4, 4, 4]]))
    with pytest.raises(ValueError, match="c must be"):
        G(z, None)


def test_minibatch_std_groups_samples_strided():
    layer = MinibatchStdLayer(group_size=2)
    x = torch.randn(6, 4, 3, 3)
    out = layer(x)
    assert out.shape == (6, 5, 3, 3)
    # G = 2, N // G = 3: sample i is in group i % 3, i.e. groups {0, 3}, {1, 4}, {2, 5}.
    for i in range(6):
        pair = x[[i % 3, i % 3 + 3]]
        expected = (pair.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        torch.testing.assert_close(out[i, 4], expected.expand(3, 3))
    assert MinibatchStdLayer(group_size=8)(x).shape == (6, 5, 3, 3)  # G = min(group_size, N)
    with pytest.raises(ValueError, match="multiple of the group size"):
        MinibatchStdLayer(group_size=4)(x)
    D = make_D(mbstd_group_size=2)
    groups = [m for m in D.modules() if hasattr(m, "group_size")]
    assert len(groups) == 1 and groups[0].group_size == 2
    assert make_D(epilogue_kwargs=dict(mbstd_group_size=8)).b4.mbstd.group_size == 8


def test_cpu_stays_fp32_with_num_fp16_res():
    z = torch.randn(4, 16)
    G16, G32 = make_G(num_fp16_res=2, conv_clamp=256), make_G(num_fp16_res=0, conv_clamp=256)
    assert G16.synthesis.b16.use_fp16 and G16.synthesis.b8.use_fp16 and not G16.synthesis.b4.use_fp16
    img = G16(z, None, noise_mode="const")
    assert img.dtype == torch.float32
    torch.testing.assert_close(img, G32(z, None, noise_mode="const"))
    D16, D32 = make_D(num_fp16_res=2), make_D(num_fp16_res=0)
    torch.testing.assert_close(D16(img, None), D32(img, None))


def test_rebuild_from_init_kwargs_with_weights_only_load():
    G, D = make_G(c_dim=3, architecture="resnet"), make_D(c_dim=3, architecture="skip")
    buf = io.BytesIO()
    torch.save(dict(G=dict(kwargs=G.init_kwargs, state=G.state_dict()),
                    D=dict(kwargs=D.init_kwargs, state=D.state_dict())), buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    torch.manual_seed(123)  # a different seed: the values must come from the state dict
    G2 = Generator(**saved["G"]["kwargs"])
    G2.load_state_dict(saved["G"]["state"])
    D2 = Discriminator(**saved["D"]["kwargs"])
    D2.load_state_dict(saved["D"]["state"])
    z, c = torch.randn(4, 16), torch.eye(3)[[0, 1, 2, 0]]
    img = G(z, c, noise_mode="const")
    torch.testing.assert_close(G2(z, c, noise_mode="const"), img)
    torch.testing.assert_close(D2(img, c), D(img, c))


def test_pickle_loads_and_runs_without_nda_stylegan(tmp_path):
    G = make_G()
    G.eval()
    z = torch.randn(4, 16)
    expected = G(z, None, noise_mode="const").detach()
    G2 = pickle.loads(pickle.dumps(G))
    torch.testing.assert_close(G2(z, None, noise_mode="const"), expected)
    with open(tmp_path / "G.pkl", "wb") as f:
        pickle.dump(dict(G=G, z=z, expected=expected), f)
    # A fresh process where nda_stylegan cannot be imported: the ops use their references.
    code = (
        "import sys, pickle, torch\n"
        "sys.modules['nda_stylegan'] = None\n"
        "sys.path.insert(0, %r)\n"
        "d = pickle.load(open(%r, 'rb'))\n"
        "out = d['G'](d['z'], None, noise_mode='const')\n"
        "torch.testing.assert_close(out, d['expected'], rtol=1e-4, atol=1e-5)\n"
        "print('ok')\n" % (REPO, str(tmp_path / "G.pkl"))
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(tmp_path),
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def _r1_and_g_grads(monkeypatch, mode):
    if mode == "reference":
        monkeypatch.setenv("NDA_STYLEGAN_OPS", "reference")
    else:
        monkeypatch.delenv("NDA_STYLEGAN_OPS", raising=False)
    G = make_G(conv_clamp=256)
    D = make_D(conv_clamp=256)
    z = torch.randn(4, 16, generator=torch.Generator().manual_seed(1))
    # Generator step.
    gen = G(z, None, noise_mode="const")
    torch.nn.functional.softplus(-D(gen, None)).sum().backward()
    # R1 on reals: gradient of D's output w.r.t. its input, with create_graph, then backprop.
    real = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    (g,) = torch.autograd.grad(D(real, None).sum(), real, create_graph=True)
    D.zero_grad()
    g.square().sum().backward()
    return gen.detach(), {"G." + n: p.grad.clone() for n, p in G.named_parameters() if p.grad is not None}, \
        {"D." + n: p.grad.clone() for n, p in D.named_parameters() if p.grad is not None}


def test_kernels_and_references_agree_through_whole_networks(monkeypatch):
    from training.ops import bias_act as bias_act_module
    from training.ops import upfirdn2d as upfirdn2d_module

    calls = {"bias_act": 0, "upfirdn2d": 0}

    def counting(op, fn):
        def wrapper(*args):
            calls[op] += 1
            return fn(*args)
        return wrapper

    monkeypatch.setattr(bias_act_module._BiasActKernel, "apply",
                        counting("bias_act", bias_act_module._BiasActKernel.apply))
    monkeypatch.setattr(upfirdn2d_module._Upfirdn2dKernel, "apply",
                        counting("upfirdn2d", upfirdn2d_module._Upfirdn2dKernel.apply))
    gen_k, g_k, d_k = _r1_and_g_grads(monkeypatch, "auto")
    assert calls["bias_act"] > 5 and calls["upfirdn2d"] > 5, calls  # the kernels did run
    kernel_calls = dict(calls)
    gen_r, g_r, d_r = _r1_and_g_grads(monkeypatch, "reference")
    assert calls == kernel_calls  # and not here
    torch.testing.assert_close(gen_k, gen_r, rtol=1e-4, atol=1e-5)
    assert g_k.keys() == g_r.keys() and d_k.keys() == d_r.keys() and len(d_k) > 10
    for name in g_k:
        torch.testing.assert_close(g_k[name], g_r[name], rtol=1e-3, atol=1e-4, msg=name)
    for name in d_k:
        torch.testing.assert_close(d_k[name], d_r[name], rtol=1e-3, atol=1e-4, msg=name)


def test_bad_input_is_a_clear_error():
    G, D = make_G(), make_D()
    with pytest.raises(ValueError, match="z must be"):
        G(torch.randn(4, 7), None)
    with pytest.raises(ValueError, match="ws must be"):
        G.synthesis(torch.randn(4, 2, 16))
    with pytest.raises(ValueError, match="img must be"):
        D(torch.randn(4, 3, 8, 8), None)
    with pytest.raises(ValueError, match="power of two"):
        make_G(res=24)
    with pytest.raises(ValueError, match="architecture"):
        make_D(architecture="dense")

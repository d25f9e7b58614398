"""Network pickles across checkouts: ours load in a checkout laid out like stylegan2-ada-pytorch's
(its own training/, torch_utils/, dnnlib/, legacy.py; tests/fixtures/hosts/sg2ada_checkout, an
independent plain-PyTorch StyleGAN2 generator), and that checkout's pickles load here without
running the code they carry.

Set NDA_STYLEGAN_HOST_CHECKOUT to a clone of NVlabs/stylegan2-ada-pytorch to run the same checks
against the real thing as well (both directions; its dnnlib needs ``requests``)."""

import json
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

from trainer_helpers import one_thread, REPO
from training import snapshot
from training.augment import AugmentPipe
from training.networks import Discriminator, Generator

import generate  # the root script (conftest.py puts the repository on sys.path)

single_thread = pytest.fixture(autouse=True)(one_thread)

FIXTURE = os.path.join(REPO, "tests", "fixtures", "hosts", "sg2ada_checkout")
CHECKOUTS = [FIXTURE] + ([os.environ["NDA_STYLEGAN_HOST_CHECKOUT"]] if os.environ.get("NDA_STYLEGAN_HOST_CHECKOUT") else [])

# Two shapes of network: the cpu preset's (box filter, no noise inputs) and the host's defaults
# with labels, noise inputs, clamping and an augment pipe.
CONFIGS = {
    "cpu-preset": dict(c_dim=0, synthesis_kwargs=dict(channel_base=1024, channel_max=32, num_fp16_res=0, conv_clamp=None,
                                                      use_noise=False, resample_filter=[1, 1]), augment=False),
    "conditional": dict(c_dim=3, synthesis_kwargs=dict(channel_base=512, channel_max=32, conv_clamp=256), augment=True),
}
PSI = 0.6


def make_networks(config, seed=0):
    torch.manual_seed(seed)
    spec = CONFIGS[config]
    G = Generator(z_dim=16, c_dim=spec["c_dim"], w_dim=16, img_resolution=16, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=spec["synthesis_kwargs"])
    with torch.no_grad():  # trained-looking weights: away from the initial zeros and ones
        for p in G.parameters():
            p.add_(torch.randn_like(p) * 0.2)
        G.mapping.w_avg.normal_()
    D = Discriminator(c_dim=spec["c_dim"], img_resolution=16, img_channels=3, channel_base=512, channel_max=32,
                      mbstd_group_size=2)
    pipe = AugmentPipe(xflip=1, rotate90=1, brightness=1) if spec["augment"] else None
    if pipe is not None:
        pipe.p.fill_(0.3)
    return dict(G=G, D=D, G_ema=G, augment_pipe=pipe)


def latents(G, n=2):
    z = torch.from_numpy(np.random.RandomState(5).randn(n, G.z_dim)).float()
    c = torch.zeros([n, G.c_dim])
    if G.c_dim:
        c[:, 1] = 1
    return z, c


def our_images(G):
    z, c = latents(G)
    with torch.no_grad():
        return G(z, c, truncation_psi=PSI, noise_mode="const")


def host_python(checkout, script, *args, env=None):
    """Run ``script`` in ``checkout`` with only that checkout importable (not this repository)."""
    clean = dict(os.environ, **(env or {}))
    kept = [p for p in clean.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.abspath(p) != REPO]
    clean["PYTHONPATH"] = os.pathsep.join(kept)  # e.g. where the real checkout's requirements live
    code = "import sys\nsys.modules['nda_stylegan'] = None  # any import of it fails\n" + script
    proc = subprocess.run([sys.executable, "-c", code] + [str(a) for a in args], cwd=checkout, env=clean,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


HOST_GENERATE = """
import numpy as np, torch, dnnlib, legacy
with dnnlib.util.open_url(sys.argv[1]) as f:
    data = legacy.load_network_pkl(f)
for name in ('G', 'D', 'G_ema'):
    net = data[name]
    assert not net.training and not any(p.requires_grad for p in net.parameters()), name
G = data['G_ema']
z = torch.from_numpy(np.random.RandomState(5).randn(2, G.z_dim)).float()
c = torch.zeros([2, G.c_dim])
if G.c_dim:
    c[:, 1] = 1
with torch.no_grad():
    img = G(z, c, truncation_psi=float(sys.argv[3]), noise_mode='const')
pipe = data['augment_pipe']
torch.save(dict(img=img, p=None if pipe is None else float(pipe.p), ts=data['training_set_kwargs']), sys.argv[2])
print(sorted(m for m in sys.modules if m == 'training' or m.startswith('training.')))
"""


@pytest.mark.parametrize("checkout", CHECKOUTS)
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_our_snapshot_generates_in_a_stylegan2_ada_checkout(tmp_path, checkout, config):
    nets = make_networks(config)
    pkl = snapshot.save_snapshot(str(tmp_path / "network-snapshot-000000"), nets,
                                 dict(class_name="training.dataset.ImageFolderDataset", path="data.zip"))
    out = tmp_path / "host.pt"
    modules = host_python(checkout, HOST_GENERATE, pkl, out, PSI)
    assert "training.networks_generator" not in modules  # only the host's own modules were used
    result = torch.load(out)
    torch.testing.assert_close(result["img"], our_images(nets["G_ema"]), atol=1e-4, rtol=1e-4)
    assert result["p"] == (pytest.approx(0.3) if nets["augment_pipe"] is not None else None)
    assert result["ts"]["path"] == "data.zip"


WRITE_HOST_PICKLE = """
import copy, pickle, torch
from training.networks import Generator, Discriminator, MappingNetwork
from training.augment import AugmentPipe
spec = torch.load(sys.argv[1])
nets = {}
for name, (cls, kwargs, state) in spec.items():
    net = {'Generator': Generator, 'Discriminator': Discriminator, 'AugmentPipe': AugmentPipe,
           'MappingNetwork': MappingNetwork}[cls](**kwargs)
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {'Hz_geom', 'Hz_fbank'}, (name, missing, unexpected)
    nets[name] = copy.deepcopy(net).eval().requires_grad_(False)
nets['training_set_kwargs'] = dict(class_name='training.dataset.ImageFolderDataset', path='cifar10.zip')
with open(sys.argv[2], 'wb') as f:
    pickle.dump(nets, f)
"""


def host_kwargs(net):
    kwargs = dict(net.init_kwargs)
    if isinstance(net, Discriminator):  # the host takes these only inside epilogue_kwargs
        kwargs.pop("mbstd_group_size"), kwargs.pop("mbstd_num_channels")
    return kwargs


def write_host_pickle(tmp_path, nets, name="host.pkl", kwargs=None, checkout=FIXTURE):
    """A pickle written by the checkout's own classes (torch_utils.persistence layout), holding
    the weights of ``nets`` (built with ``kwargs``, default: their init_kwargs)."""
    spec = {k: (type(v).__name__, kwargs or host_kwargs(v), v.state_dict()) for k, v in nets.items() if v is not None}
    torch.save(spec, tmp_path / "spec.pt")
    host_python(checkout, WRITE_HOST_PICKLE, tmp_path / "spec.pt", tmp_path / name)
    return str(tmp_path / name)


@pytest.mark.parametrize("checkout", CHECKOUTS)
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_host_pickles_load_here_without_running_their_code(tmp_path, monkeypatch, config, checkout):
    nets = make_networks(config)
    path = write_host_pickle(tmp_path, nets, checkout=checkout)
    with open(path, "rb") as f:
        assert b"torch_utils.persistence" in f.read()  # the host's layout: classes with their source
    marker = tmp_path / "executed.txt"
    if checkout == FIXTURE:  # control: unpickled the usual way, in the host checkout, the pickled source runs
        host_python(FIXTURE, "import pickle\npickle.load(open(sys.argv[1], 'rb'))\n", path,
                    env={"HOST_FIXTURE_EXEC_MARKER": str(marker)})
        assert marker.read_text() == "pickled source executed\n"
        marker.unlink()

    monkeypatch.setenv("HOST_FIXTURE_EXEC_MARKER", str(marker))
    data = snapshot.load_network_file(path)
    assert not marker.exists()
    assert not any(m.split(".")[0] in ("torch_utils", "dnnlib") or m.startswith("_imported_module_") for m in sys.modules)
    torch.testing.assert_close(our_images(data.G_ema), our_images(nets["G_ema"]))
    for name in ("D", "augment_pipe"):
        if nets[name] is None:
            assert data[name] is None
            continue
        assert type(data[name]) is type(nets[name])
        for key, value in nets[name].state_dict().items():
            torch.testing.assert_close(data[name].state_dict()[key], value)
    assert data.training_set_kwargs.path == "cifar10.zip" and data.resume_state is None


def test_generate_runs_on_a_host_pickle_without_the_host_repository(tmp_path):
    nets = make_networks("conditional")
    host = write_host_pickle(tmp_path, nets)
    ours = snapshot.save_snapshot(str(tmp_path / "ours"), nets, {})
    images = {}
    for tag, path in (("host", host), ("ours", ours)):
        result = CliRunner().invoke(generate.main, ["--network", path, "--seeds", "3", "--class", "1", "--outdir",
                                                    str(tmp_path / tag), "--device", "cpu"])
        assert result.exit_code == 0, result.output
        images[tag] = np.asarray(PIL.Image.open(tmp_path / tag / "seed0003.png"))
    assert np.array_equal(images["host"], images["ours"])


def test_calc_metrics_scores_a_host_pickle_as_the_same_network_of_ours(tmp_path):
    import calc_metrics  # the root script

    data = tmp_path / "faces"
    data.mkdir()
    rng = np.random.RandomState(0)
    for i in range(24):
        PIL.Image.fromarray(rng.randint(0, 255, (16, 16, 3), dtype=np.uint8)).save(data / ("%02d.png" % i))
    nets = make_networks("cpu-preset")
    paths = {"host": write_host_pickle(tmp_path, nets), "ours": snapshot.save_snapshot(str(tmp_path / "ours"), nets, {})}
    results = {}
    for tag, path in paths.items():
        result = CliRunner().invoke(calc_metrics.calc_metrics, ["--network", path, "--metrics", "swd", "--data", str(data),
                                                                "--num-images", "16", "--verbose", "false"])
        assert result.exit_code == 0, result.output
        line = [json.loads(x) for x in result.output.splitlines() if x.startswith("{")][-1]
        results[tag] = line["results"]
    assert results["host"] == results["ours"] and np.isfinite(results["host"]["swd_avg"])


def test_pickles_of_other_networks_say_what_they_hold(tmp_path):
    from training.networks_generator import MappingNetwork

    torch.manual_seed(0)
    kwargs = dict(z_dim=8, c_dim=0, w_dim=8, num_ws=2, num_layers=1)
    mapping = MappingNetwork(**kwargs)
    path = write_host_pickle(tmp_path, dict(G=mapping, D=mapping, G_ema=mapping), name="other.pkl", kwargs=kwargs)
    result = CliRunner().invoke(generate.main, ["--network", path, "--seeds", "0", "--outdir", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "'MappingNetwork', not one of stylegan2-ada-pytorch's" in result.output and "own tools" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()
    tf_like = tmp_path / "tf.pkl"  # what a TensorFlow-era pickle refers to
    tf_like.write_bytes(b"\x80\x02cdnnlib.tflib.network\nNetwork\n)\x81.")  # PROTO 2, GLOBAL, (), NEWOBJ, STOP
    with pytest.raises(ValueError, match="TensorFlow networks; convert it with stylegan2-ada-pytorch's legacy.py"):
        snapshot.load_network_file(str(tf_like))


def test_pickles_refer_only_to_names_the_host_checkout_has(tmp_path):
    nets = make_networks("conditional")
    pkl = snapshot.save_snapshot(str(tmp_path / "s"), nets, {})
    with open(pkl, "rb") as f:
        found = snapshot.pickle_globals(f.read())
    ours = {(m, n) for m, n in found if m.split(".")[0] not in ("torch", "functools", "collections")}
    assert ours == {("training.networks", "Generator"), ("training.networks", "Discriminator"),
                    ("training.augment", "AugmentPipe")}


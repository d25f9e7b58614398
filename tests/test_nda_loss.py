"""NDALoss around host losses of both signatures (stylegan2-ada-pytorch: sync+gain; stylegan3 and
ours: gain+cur_nimg). Expected gradients are computed independently, from the paper's formula."""

import pickle

import pytest
import torch
import torch.nn.functional as F

from nda_stylegan.loss import NDALoss, effective_group_size, mbstd_group_size

HERE = __name__  # dotted module name of this file, for nda_inner_class_name


# ---- a tiny host: G, D with minibatch-stddev, augment pipe, losses of both signatures ----------

class MbStd(torch.nn.Module):
    def __init__(self, group_size):
        super().__init__()
        self.group_size = group_size

    def forward(self, x):
        n, c, h, w = x.shape
        g = effective_group_size(self.group_size, n)
        y = x.reshape(g, n // g, c, h, w)  # sample i is in group i % (n // g)
        y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt().mean([1, 2, 3])
        return torch.cat([x, y.reshape(1, n // g, 1, 1, 1).repeat(g, 1, 1, h, w).reshape(n, 1, h, w)], 1)


class TinyD(torch.nn.Module):
    def __init__(self, c_dim=3, group_size=2):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.mbstd = MbStd(group_size)
        self.fc = torch.nn.Linear(5 * 4 * 4, c_dim)
        self.inputs = []  # (images, labels) of every forward, for the tests

    def forward(self, img, c):
        self.inputs.append((img.detach().clone(), c.detach().clone()))
        x = F.leaky_relu(self.conv(img), 0.2)
        return (self.fc(self.mbstd(x).flatten(1)) * c).sum(1, keepdim=True)


class TinyMapping(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4 + 3, 8)

    def forward(self, z, c):
        return self.fc(torch.cat([z, c], 1))


class TinySynthesis(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 3 * 8 * 8)

    def forward(self, ws):
        return torch.tanh(self.fc(ws)).reshape(-1, 3, 8, 8)


class TinyG(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.mapping, self.synthesis = TinyMapping(), TinySynthesis()


class ScaleAugment(torch.nn.Module):
    """Deterministic 'augmentation' (x * 0.9) that counts the images it sees."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.shape[0])
        return x * 0.9


class SyncHostLoss(object):
    """stylegan2-ada-pytorch's signatures."""

    def __init__(self, device, G_mapping, G_synthesis, D, augment_pipe=None, r1_gamma=0.0):
        self.G_mapping, self.G_synthesis, self.D, self.augment_pipe = G_mapping, G_synthesis, D, augment_pipe
        self.r1_gamma = r1_gamma
        self.syncs = []

    def run_G(self, z, c, sync):
        ws = self.G_mapping(z, c)
        return self.G_synthesis(ws), ws

    def run_D(self, img, c, sync):
        self.syncs.append(sync)
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        return self.D(img, c)

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, sync, gain):
        _host_phases(self, phase, real_img, real_c, gen_z, gen_c, gain, {"sync": False}, {"sync": sync})


class NimgHostLoss(object):
    """stylegan3's signatures (and our trainer's)."""

    def __init__(self, device, G, D, augment_pipe=None, r1_gamma=0.0):
        self.G, self.D, self.augment_pipe, self.r1_gamma = G, D, augment_pipe, r1_gamma
        self.blurs = []

    def run_G(self, z, c, update_emas=False):
        ws = self.G.mapping(z, c)
        return self.G.synthesis(ws), ws

    def run_D(self, img, c, blur_sigma=0, update_emas=False):
        self.blurs.append(blur_sigma)
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        return self.D(img, c)

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg):
        blur = 0.5 if cur_nimg < 100 else 0.0  # stands in for stylegan3's blur fade-out
        _host_phases(self, phase, real_img, real_c, gen_z, gen_c, gain, {"blur_sigma": blur}, {"blur_sigma": blur})


def _host_phases(loss, phase, real_img, real_c, gen_z, gen_c, gain, gen_kw, real_kw):
    if phase in ("Gmain", "Gboth"):
        gen_img, _ = loss.run_G(gen_z, gen_c, **({"sync": True} if "sync" in gen_kw else {}))
        F.softplus(-loss.run_D(gen_img, gen_c, **gen_kw)).mean().mul(gain).backward()
    if phase in ("Dmain", "Dboth"):
        gen_img, _ = loss.run_G(gen_z, gen_c, **({"sync": False} if "sync" in gen_kw else {}))
        F.softplus(loss.run_D(gen_img, gen_c, **gen_kw)).mean().mul(gain).backward()
    if phase in ("Dmain", "Dreg", "Dboth"):
        real = real_img.detach().requires_grad_(phase != "Dmain")
        logits = loss.run_D(real, real_c, **real_kw)
        total = logits * 0
        if phase != "Dreg":
            total = total + F.softplus(-logits)
        if phase != "Dmain":
            grad, = torch.autograd.grad(logits.sum(), real, create_graph=True)
            total = total + grad.square().sum([1, 2, 3]).unsqueeze(1) * loss.r1_gamma / 2
        total.mean().mul(gain).backward()


class FlipPipe(object):
    """Deterministic negatives: vertical flips; ``valid`` as given (False = equal to source)."""

    def __init__(self, valid):
        self.valid = torch.tensor(valid)
        self.calls = 0

    def __call__(self, images, labels=None, generator=None):
        self.calls += 1
        n = images.shape[0]
        return images.flip(2), labels, self.valid[:n]


STYLES = ["sync", "cur_nimg"]


def make_host(style, group_size=2, augment=True, seed=0):
    torch.manual_seed(seed)
    G, D = TinyG(), TinyD(group_size=group_size)
    aug = ScaleAugment() if augment else None
    if style == "sync":
        kwargs = dict(device="cpu", G_mapping=G.mapping, G_synthesis=G.synthesis, D=D, augment_pipe=aug)
        return G, D, aug, HERE + ".SyncHostLoss", kwargs
    return G, D, aug, HERE + ".NimgHostLoss", dict(device="cpu", G=G, D=D, augment_pipe=aug)


def make_batch(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    real = torch.rand(n, 3, 8, 8, generator=g) * 2 - 1
    real_c = F.one_hot(torch.arange(n) % 3, 3).float()
    gen_z = torch.randn(n, 4, generator=g)
    gen_c = F.one_hot((torch.arange(n) + 1) % 3, 3).float()
    return real, real_c, gen_z, gen_c


def step_kwargs(style, gain=1.0):
    return {"sync": True, "gain": gain} if style == "sync" else {"gain": gain, "cur_nimg": 0}


def d_grads(D):
    return [p.grad.clone() for p in D.parameters()]


def expected_d_grads(G, D, aug, batch, lam, valid, kind="logistic", gain=1.0):
    """Gradient of gain * (L_real + lam * L_fake + (1 - lam) * L_nda), computed from scratch."""
    real, real_c, gen_z, gen_c = batch
    D.zero_grad(set_to_none=True)
    a = (lambda x: x * 0.9) if aug is not None else (lambda x: x)
    with torch.no_grad():
        gen = G.synthesis(G.mapping(gen_z, gen_c))
    l_real = F.softplus(-D(a(real), real_c)).mean()
    l_fake = F.softplus(D(a(gen), gen_c)).mean()
    d_neg = D(a(real.flip(2)), real_c).squeeze(1)
    per = F.softplus(d_neg) if kind == "logistic" else F.relu(1 + d_neg)
    w = torch.tensor(valid, dtype=per.dtype)
    l_nda = (per * w).sum() / w.sum().clamp(min=1)
    ((l_real + lam * l_fake + (1 - lam) * l_nda) * gain).backward()
    return d_grads(D)


def run_phase(loss, phase, module, batch, style, gain=1.0):
    module.requires_grad_(True)
    for p in module.parameters():
        p.grad = None
    real, real_c, gen_z, gen_c = batch
    loss.accumulate_gradients(phase=phase, real_img=real, real_c=real_c, gen_z=gen_z, gen_c=gen_c, **step_kwargs(style, gain))
    module.requires_grad_(False)
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in module.parameters()]


def assert_grads_close(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


# ---- weighted mode ------------------------------------------------------------------------

@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("kind", ["logistic", "hinge"])
def test_weighted_d_gradient_matches_paper_formula(style, kind):
    G, D, aug, inner, kwargs = make_host(style)
    valid = [True, False, True, True]
    loss = NDALoss(nda_inner_class_name=inner, nda_spec=FlipPipe(valid), nda_lambda=0.3, nda_loss=kind, **kwargs)
    batch = make_batch()
    got = run_phase(loss, "Dmain", D, batch, style, gain=2.0)
    D.requires_grad_(True)
    want = expected_d_grads(G, D, aug, batch, 0.3, valid, kind, gain=2.0)
    assert_grads_close(got, want)


@pytest.mark.parametrize("style", STYLES)
def test_negatives_have_their_own_pass_through_run_D_with_source_labels(style):
    G, D, aug, inner, kwargs = make_host(style)
    pipe = FlipPipe([True] * 4)
    loss = NDALoss(nda_inner_class_name=inner, nda_spec=pipe, **kwargs)
    real, real_c, gen_z, gen_c = batch = make_batch()
    D.inputs.clear()
    run_phase(loss, "Dmain", D, batch, style)
    assert pipe.calls == 1 and len(D.inputs) == 3 and aug.seen == [4, 4, 4]  # gen, real, negatives: each alone
    neg_inputs = [(img, c) for img, c in D.inputs if torch.allclose(img, real.flip(2) * 0.9)]
    assert len(neg_inputs) == 1  # went through the augment pipe (x 0.9), in a pass of its own
    assert torch.equal(neg_inputs[0][1], real_c)  # each negative keeps its source label
    if style == "sync":  # first and unsynced; the host's real pass (sync=True) comes last
        assert loss.inner.syncs == [False, False, True]
    else:  # after the host's passes, with the blur the reals got
        assert loss.inner.blurs == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("style", STYLES)
def test_generator_phases_and_r1_are_untouched(style):
    batch = make_batch()
    results = []
    for use_nda in (False, True):
        G, D, aug, inner, kwargs = make_host(style)
        kwargs["r1_gamma"] = 1.0
        if use_nda:
            pipe = FlipPipe([True] * 4)
            loss = NDALoss(nda_inner_class_name=inner, nda_spec=pipe, **kwargs)
        else:
            loss = {"sync": SyncHostLoss, "cur_nimg": NimgHostLoss}[style](**kwargs)
        g = run_phase(loss, "Gmain", G, batch, style)
        r = run_phase(loss, "Dreg", D, batch, style)
        results.append((g, r))
        if use_nda:
            assert pipe.calls == 0
    assert_grads_close(results[0][0], results[1][0])
    assert_grads_close(results[0][1], results[1][1])


def test_all_negatives_masked_adds_nothing():
    G, D, aug, inner, kwargs = make_host("cur_nimg")
    loss = NDALoss(nda_inner_class_name=inner, nda_spec=FlipPipe([False] * 4), nda_lambda=0.25, **kwargs)
    batch = make_batch()
    got = run_phase(loss, "Dmain", D, batch, "cur_nimg")
    D.requires_grad_(True)
    # L_real + lambda * L_fake only: the masked negatives contribute nothing
    want = expected_d_grads(G, D, aug, batch, 0.25, [False] * 4)
    assert_grads_close(got, want)
    stats = loss.pop_stats()
    assert stats["Loss/NDA/masked"] == 1.0


def test_stats_and_pop_resets():
    G, D, aug, inner, kwargs = make_host("sync")
    loss = NDALoss(nda_inner_class_name=inner, nda_spec=FlipPipe([True, False, True, True]), **kwargs)
    batch = make_batch()
    run_phase(loss, "Dmain", D, batch, "sync")
    stats = loss.pop_stats()
    assert stats["Loss/NDA/masked"] == pytest.approx(0.25)
    real, real_c = batch[0], batch[1]
    with torch.no_grad():
        d = D(real.flip(2) * 0.9, real_c).squeeze(1)[[0, 2, 3]]
    assert stats["Loss/NDA/score"] == pytest.approx(float(d.mean()), rel=1e-5)
    assert stats["Loss/NDA/loss"] == pytest.approx(float(F.softplus(d).mean()), rel=1e-5)
    assert "Loss/NDA/score" not in loss.pop_stats()


def test_real_pipe_end_to_end_with_seed():
    from nda_stylegan.loss import step_seed
    from nda_stylegan.pipe import NDAPipe

    G, D, aug, inner, kwargs = make_host("cur_nimg", augment=False)
    loss = NDALoss(nda_inner_class_name=inner, nda_spec="jigsaw,stitch", nda_seed=7, **kwargs)
    real, real_c, gen_z, gen_c = batch = make_batch()
    D.inputs.clear()
    run_phase(loss, "Dmain", D, batch, "cur_nimg")
    # Step 0 of rank 0's stream: documented as step_seed(step_seed(nda_seed, -1 - rank), step).
    seed = step_seed(step_seed(7, -1), 0)
    want_neg, want_c, want_valid = NDAPipe("jigsaw,stitch")(real, real_c, generator=torch.Generator().manual_seed(seed))
    neg_img, neg_c = D.inputs[-1]
    assert torch.equal(neg_img, want_neg) and torch.equal(neg_c, real_c) and bool(want_valid.all())
    assert not torch.equal(neg_img, real)
    assert set(loss.pop_stats()) >= {"Loss/NDA/score", "Loss/NDA/loss", "Loss/NDA/masked"}
    shots = [loss.snapshot_images(real, real_c)["negatives"] for _ in range(2)]
    assert shots[0].shape == real.shape and torch.equal(shots[0], shots[1])


# ---- randomness: a function of (base seed, step), resumable ---------------------------------

class RecordingPipe(object):
    """Negatives = flips; records the first random number of every generator it is handed."""

    def __init__(self):
        self.draws = []

    def __call__(self, images, labels=None, generator=None):
        self.draws.append(torch.randint(1 << 30, [1], generator=generator).item())
        return images.flip(2), labels, torch.ones(images.shape[0], dtype=torch.bool)


def _nda_steps(loss, batch, style, seeds):
    """One D main step per seed, with torch reseeded before each (as our trainer does per round)."""
    D = loss.inner.D
    for seed in seeds:
        if seed is not None:
            torch.manual_seed(seed)
        run_phase(loss, "Dmain", D, batch, style)
    return list(loss.spec_pipe.draws)


def _recording_loss(style="cur_nimg", **extra):
    G, D, aug, inner, kwargs = make_host(style, augment=False)
    pipe = RecordingPipe()
    loss = NDALoss(nda_inner_class_name=inner, nda_spec=pipe, **dict(kwargs, **extra))
    loss.spec_pipe = pipe
    return loss


def test_negatives_follow_the_step_seed_not_the_construction_time():
    batch = make_batch()
    a = _nda_steps(_recording_loss(), batch, "cur_nimg", [11, 12, 13])
    torch.manual_seed(999)  # a different seed when the loss is built changes nothing
    b = _nda_steps(_recording_loss(), batch, "cur_nimg", [11, 12, 13])
    assert a == b and len(set(a)) == 3
    # A step's negatives depend on its seed only, not on the steps before it.
    c = _nda_steps(_recording_loss(), batch, "cur_nimg", [12, 11, 14])
    assert c[:2] == [a[1], a[0]] and c[2] not in a
    # The same seed twice in a row (a host that never reseeds) still moves on to a new step.
    d = _nda_steps(_recording_loss(), batch, "cur_nimg", [12, None])
    assert d[0] == a[1] and d[1] != d[0]


def test_a_host_that_seeds_once_gets_a_stream_per_step_that_resumes_from_state_dict():
    batch = make_batch()
    torch.manual_seed(5)
    straight = _nda_steps(_recording_loss("sync"), batch, "sync", [None] * 4)
    assert len(set(straight)) == 4  # one seed for the whole run, yet every step differs
    torch.manual_seed(5)
    first = _recording_loss("sync")
    _nda_steps(first, batch, "sync", [None] * 2)
    state = first.state_dict()
    torch.manual_seed(5)  # a restarted process seeds torch as before
    second = _recording_loss("sync")
    second.load_state_dict(state)
    assert _nda_steps(second, batch, "sync", [None] * 2) == straight[2:]


def test_explicit_nda_seed_gives_each_rank_its_own_stream(monkeypatch):
    import nda_stylegan.loss as loss_mod

    batch = make_batch()
    draws = []
    for rank in (0, 1):
        monkeypatch.setattr(loss_mod, "_world_and_rank", lambda rank=rank: (2, rank))
        draws.append(_nda_steps(_recording_loss(nda_seed=3), batch, "cur_nimg", [1, 2]))
    assert draws[0] != draws[1]
    assert draws[0][0] != draws[0][1]


class StatefulHost(NimgHostLoss):
    """A host loss with state of its own (as ours has pl_mean)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.value = 0.0

    def state_dict(self):
        return {"value": self.value}

    def load_state_dict(self, state):
        self.value = state["value"]


def test_state_dict_wraps_the_host_state_and_accepts_a_bare_one():
    G, D, aug, inner, kwargs = make_host("cur_nimg")
    loss = NDALoss(nda_inner_class_name=HERE + ".StatefulHost", nda_spec=FlipPipe([True] * 4), **kwargs)
    loss.inner.value = 2.5
    state = loss.state_dict()
    assert state["host"] == {"value": 2.5} and set(state["nda"]) == {"seed_base", "seed_steps", "seen_nimg"}
    loss.inner.value = 0
    loss.load_state_dict(state)
    assert loss.inner.value == 2.5
    loss.load_state_dict({"value": 1.5})  # a snapshot written before NDA had counters
    assert loss.inner.value == 1.5


# ---- warm-up and the reweighting-only control --------------------------------------------

@pytest.mark.parametrize("style", STYLES)
def test_nda_starts_after_the_warm_up(style):
    G, D, aug, inner, kwargs = make_host(style)
    pipe = FlipPipe([True] * 4)
    loss = NDALoss(nda_inner_class_name=inner, nda_spec=pipe, nda_start_kimg=0.008, **kwargs)
    batch = make_batch()
    # 4 images per step: steps at images 0 and 4 are warm-up, the one at image 8 has NDA (a
    # sync-style host passes no cur_nimg: NDALoss counts the images itself).
    for step in range(3):
        kw = step_kwargs(style)
        if style == "cur_nimg":
            kw["cur_nimg"] = 4 * step
        D.requires_grad_(True)
        loss.accumulate_gradients("Dmain", *batch, **kw)
        assert pipe.calls == (1 if step == 2 else 0)


def test_warm_up_gradient_equals_the_hosts_then_the_papers():
    batch = make_batch()
    G, D, aug, inner, kwargs = make_host("cur_nimg")
    loss = NDALoss(nda_inner_class_name=inner, nda_spec=FlipPipe([True] * 4), nda_lambda=0.3, nda_start_kimg=1, **kwargs)
    before = run_phase(loss, "Dmain", D, batch, "cur_nimg")  # cur_nimg 0 < 1000
    D.requires_grad_(True)
    assert_grads_close(before, expected_d_grads(G, D, aug, batch, 1.0, [False] * 4))
    D.requires_grad_(False)
    D.requires_grad_(True)
    for p in D.parameters():
        p.grad = None
    loss.accumulate_gradients("Dmain", *batch, gain=1.0, cur_nimg=1000)
    after = [p.grad.clone() for p in D.parameters()]
    assert_grads_close(after, expected_d_grads(G, D, aug, batch, 0.3, [True] * 4))


@pytest.mark.parametrize("style", STYLES)
def test_reweight_control_scales_fakes_and_makes_no_negatives(style):
    G, D, aug, inner, kwargs = make_host(style)
    loss = NDALoss(nda_inner_class_name=inner, nda_spec=None, nda_lambda=0.25, nda_mode="reweight", **kwargs)
    batch = make_batch()
    D.inputs.clear()
    got = run_phase(loss, "Dmain", D, batch, style)
    assert len(D.inputs) == 2  # fakes and reals only
    real, real_c, gen_z, gen_c = batch
    D.requires_grad_(True)
    D.zero_grad(set_to_none=True)
    with torch.no_grad():
        gen = G.synthesis(G.mapping(gen_z, gen_c))
    (F.softplus(-D(real * 0.9, real_c)).mean() + 0.25 * F.softplus(D(gen * 0.9, gen_c)).mean()).backward()
    assert_grads_close(got, d_grads(D))
    with pytest.raises(ValueError, match="reweight"):
        NDALoss(nda_inner_class_name=inner, nda_spec="jigsaw", nda_mode="reweight", **kwargs)


class CastingHostLoss(NimgHostLoss):
    """A host that casts G's images before run_D: the tensor identity is lost."""

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg):
        if phase in ("Dmain", "Dboth"):
            gen_img, _ = self.run_G(gen_z, gen_c)
            F.softplus(self.run_D(gen_img.to(torch.float64).float(), gen_c)).mean().mul(gain).backward()
            F.softplus(-self.run_D(real_img, real_c)).mean().mul(gain).backward()


def test_a_host_that_hides_gs_tensor_from_run_D_gets_one_warning():
    G, D, aug, inner, kwargs = make_host("cur_nimg")
    loss = NDALoss(nda_inner_class_name=HERE + ".CastingHostLoss", nda_spec=FlipPipe([True] * 4), **kwargs)
    with pytest.warns(RuntimeWarning, match="run_D on run_G's output"):
        run_phase(loss, "Dmain", D, make_batch(), "cur_nimg")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_phase(loss, "Dmain", D, make_batch(), "cur_nimg")  # once only


def test_nothing_of_ours_in_host_pickles():
    G, D, aug, inner, kwargs = make_host("sync")
    loss = NDALoss(nda_inner_class_name=inner, nda_spec="jigsaw", **kwargs)
    run_phase(loss, "Dmain", D, make_batch(), "sync")
    D.inputs.clear()
    for module in (G, D, aug):
        assert b"nda_stylegan" not in pickle.dumps(module)


# ---- mixture mode -------------------------------------------------------------------------

@pytest.mark.parametrize("style", STYLES)
def test_mixture_replaces_whole_groups_without_extra_pass(style):
    G, D, aug, inner, kwargs = make_host(style, group_size=2, augment=False)
    loss = NDALoss(nda_inner_class_name=inner, nda_spec=FlipPipe([True] * 8), nda_lambda=0.5, nda_mode="mixture", **kwargs)
    real, real_c, gen_z, gen_c = batch = make_batch(n=8)
    with torch.no_grad():
        gen = G.synthesis(G.mapping(gen_z, gen_c))
    for _ in range(3):
        D.inputs.clear()
        run_phase(loss, "Dmain", D, batch, style)
        assert len(D.inputs) == 2  # fakes (partly negatives) and reals: no extra D pass
        img, c = D.inputs[0]
        replaced = torch.tensor([not torch.allclose(img[i], gen[i]) for i in range(8)])
        assert torch.equal(img[replaced], real.flip(2)[replaced]) and torch.equal(c[replaced], real_c[replaced])
        assert torch.equal(c[~replaced], gen_c[~replaced])
        groups = set((torch.arange(8)[replaced] % 4).tolist())  # 4 groups of 2: sample i in group i % 4
        assert len(groups) == 2  # (1 - 0.5) * 4 groups, whole groups only
        assert torch.equal(replaced, torch.tensor([i % 4 in groups for i in range(8)]))


def test_mixture_masked_negatives_get_no_gradient():
    G, D, aug, inner, kwargs = make_host("cur_nimg", group_size=2, augment=False)
    valid = [True, False, True, True, False, True, True, True]
    loss = NDALoss(nda_inner_class_name=inner, nda_spec=FlipPipe(valid), nda_lambda=0.5, nda_mode="mixture", **kwargs)
    real, real_c, gen_z, gen_c = batch = make_batch(n=8)
    D.inputs.clear()
    got = run_phase(loss, "Dmain", D, batch, "cur_nimg")
    mixed_img, mixed_c = D.inputs[0]
    with torch.no_grad():
        gen = G.synthesis(G.mapping(gen_z, gen_c))
    replaced = torch.tensor([not torch.allclose(mixed_img[i], gen[i]) for i in range(8)])
    keep = (~(replaced & ~torch.tensor(valid))).float()
    D.requires_grad_(True)
    D.zero_grad(set_to_none=True)
    fake = (F.softplus(D(mixed_img, mixed_c)).squeeze(1) * keep).mean()  # host's mean, masked ones zeroed
    (fake + F.softplus(-D(real, real_c)).mean()).backward()
    assert_grads_close(got, d_grads(D))


class RecordingStats(object):
    def __init__(self):
        self.names = []

    def report(self, name, value):
        self.names.append(name)


def test_mixture_reports_the_same_names_when_nothing_is_replaced():
    G, D, aug, inner, kwargs = make_host("cur_nimg", group_size=4, augment=False)
    loss = NDALoss(nda_inner_class_name=inner, nda_spec=FlipPipe([True] * 4), nda_lambda=0.5, nda_mode="mixture", **kwargs)
    loss._training_stats = stats = RecordingStats()
    batch = make_batch()
    seen = {}
    for seed in range(40):  # one group of 4: replaced in about half of the steps
        torch.manual_seed(seed)
        before = len(D.inputs)
        stats.names.clear()
        run_phase(loss, "Dmain", D, batch, "cur_nimg")
        fakes = D.inputs[before][0]
        replaced = not torch.equal(fakes, G.synthesis(G.mapping(batch[2], batch[3])).detach())
        seen.setdefault(replaced, stats.names[:])
    assert set(seen) == {True, False}
    assert seen[True] == seen[False] == list(("Loss/NDA/score", "Loss/NDA/loss", "Loss/NDA/masked"))


def test_mixture_share_is_exact_in_expectation():
    G, D, aug, inner, kwargs = make_host("cur_nimg", group_size=4)
    loss = NDALoss(nda_inner_class_name=inner, nda_spec=FlipPipe([True] * 4), nda_lambda=0.25, nda_mode="mixture", **kwargs)
    draws = torch.stack([loss.mixture_groups(4) for _ in range(600)])  # one group: all or nothing
    assert bool(((draws.sum(1) == 0) | (draws.sum(1) == 4)).all())
    assert draws.float().mean().item() == pytest.approx(0.75, abs=0.06)


# ---- construction -------------------------------------------------------------------------

def test_group_size_discovery():
    assert mbstd_group_size(TinyD(group_size=4)) == 4
    assert mbstd_group_size(TinyD(group_size=None)) is None
    assert mbstd_group_size(torch.nn.Linear(2, 2)) == 1
    assert effective_group_size(None, 6) == 6 and effective_group_size(4, 2) == 2


def test_attributes_fall_through_to_host_loss():
    G, D, aug, inner, kwargs = make_host("sync")
    loss = NDALoss(nda_inner_class_name=inner, nda_spec=None, r1_gamma=3.0, **kwargs)
    assert loss.r1_gamma == 3.0 and isinstance(loss.inner, SyncHostLoss)


@pytest.mark.parametrize("bad, match", [
    (dict(nda_lambda=0), "nda_lambda"),
    (dict(nda_lambda=1.5), "nda_lambda"),
    (dict(nda_mode="both"), "nda_mode"),
    (dict(nda_loss="wgan"), "nda_loss"),
    (dict(nda_mode="mixture", nda_loss="hinge"), "weighted"),
    (dict(nda_inner_class_name="nowhere.Loss"), "cannot import"),
    (dict(nda_inner_class_name="Loss"), "dotted"),
    (dict(nda_spec=""), "spec"),
])
def test_bad_arguments_are_one_line_value_errors(bad, match):
    G, D, aug, inner, kwargs = make_host("sync")
    args = dict(nda_inner_class_name=inner, nda_spec=FlipPipe([True] * 4))
    args.update(bad)
    with pytest.raises(ValueError, match=match) as info:
        NDALoss(**args, **kwargs)
    assert "\n" not in str(info.value)


class OddLoss(object):
    def __init__(self, device, D):
        pass

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c):
        pass


def test_unknown_host_signature_is_refused():
    with pytest.raises(ValueError, match="neither"):
        NDALoss(nda_inner_class_name=HERE + ".OddLoss", nda_spec=None, device="cpu", D=TinyD())

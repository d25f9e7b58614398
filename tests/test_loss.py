"""training.loss.StyleGAN2Loss against hand computations on tiny linear networks."""

import pytest
import torch
import torch.nn.functional as F

from trainer_helpers import one_thread
from training import training_stats
from training.loss import StyleGAN2Loss

RES, Z, W, NUM_WS = 4, 6, 5, 3


single_thread = pytest.fixture(autouse=True)(one_thread)


class LinearMapping(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(Z, W)
        self.register_buffer("w_avg", torch.zeros(W))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        w = self.fc(z)
        if update_emas:
            self.w_avg.copy_(w.detach().mean(0).lerp(self.w_avg, 0.9))
        return w.unsqueeze(1).repeat(1, NUM_WS, 1)


class LinearSynthesis(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(W * NUM_WS, 3 * RES * RES)

    def forward(self, ws, update_emas=False, noise_mode="random"):
        return torch.tanh(self.fc(ws.flatten(1))).view(-1, 3, RES, RES)  # non-linear: path lengths vary


class TinyG(torch.nn.Module):
    z_dim, c_dim, w_dim, num_ws = Z, 0, W, NUM_WS

    def __init__(self):
        super().__init__()
        self.mapping = LinearMapping()
        self.synthesis = LinearSynthesis()


class LinearD(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3 * RES * RES, 1)

    def forward(self, img, c, update_emas=False):
        return self.fc(img.flatten(1))


def make(**kwargs):
    torch.manual_seed(0)
    G, D = TinyG().requires_grad_(False), LinearD().requires_grad_(False)  # as the loop hands them over
    return G, D, StyleGAN2Loss("cpu", G, D, **kwargs)


def batch(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn([n, 3, RES, RES], generator=g), torch.zeros([n, 0]), torch.randn([n, Z], generator=g), torch.zeros([n, 0])


def grads(module):
    return [None if p.grad is None else p.grad.clone() for p in module.parameters()]


def test_gmain_is_nonsaturating_logistic_and_only_touches_G():
    G, D, loss = make(style_mixing_prob=0)
    real, rc, z, c = batch()
    G.requires_grad_(True)
    loss.accumulate_gradients("Gmain", real, rc, z, c, gain=1, cur_nimg=0)
    got = grads(G)
    assert all(p.grad is None for p in D.parameters())
    G.zero_grad(set_to_none=True)
    D.requires_grad_(True)
    F.softplus(-D(G.synthesis(G.mapping(z, c)), c)).mean().backward()
    for a, b in zip(got, grads(G)):
        torch.testing.assert_close(a, b)


def test_dmain_loss_and_gain_scale_gradients():
    G, D, loss = make(style_mixing_prob=0)
    real, rc, z, c = batch()
    D.requires_grad_(True)
    loss.accumulate_gradients("Dmain", real, rc, z, c, gain=3, cur_nimg=0)
    got = grads(D)
    D.zero_grad(set_to_none=True)
    G.requires_grad_(True)
    with torch.no_grad():
        fake = G.synthesis(G.mapping(z, c))
    (3 * (F.softplus(D(fake, c)).mean() + F.softplus(-D(real, rc)).mean())).backward()
    for a, b in zip(got, grads(D)):
        torch.testing.assert_close(a, b)
    assert all(p.grad is None for p in G.parameters())


def test_r1_penalty_of_a_linear_D_is_its_squared_weight_norm():
    G, D, loss = make(r1_gamma=4)
    real, rc, z, c = batch()
    collector = training_stats.Collector("Loss/.*")
    D.requires_grad_(True)
    loss.accumulate_gradients("Dreg", real, rc, z, c, gain=1, cur_nimg=0)
    collector.update()
    w = D.fc.weight.detach()
    assert collector.mean("Loss/r1_penalty") == pytest.approx(float(w.square().sum()), rel=1e-5)
    # d/dw of (gamma/2 * |w|^2) = gamma * w (the real-logit term of Dreg has no loss).
    torch.testing.assert_close(D.fc.weight.grad, 4 * w)


def test_zero_weights_switch_regularisation_off():
    G, D, loss = make(r1_gamma=0, pl_weight=0)
    real, rc, z, c = batch()
    G.requires_grad_(True)
    D.requires_grad_(True)
    loss.accumulate_gradients("Greg", real, rc, z, c, gain=4, cur_nimg=0)
    loss.accumulate_gradients("Dreg", real, rc, z, c, gain=16, cur_nimg=0)
    assert all(p.grad is None for p in list(G.parameters()) + list(D.parameters()))


def test_style_mixing_replaces_trailing_layers():
    G, D, loss = make(style_mixing_prob=1)
    _, _, z, c = batch()
    torch.manual_seed(5)
    _, ws = loss.run_G(z, c)
    plain = G.mapping(z, c)
    same = (ws == plain).all(dim=2).all(dim=0)  # per layer
    assert same[0] and not same.all()
    assert not (same[1:].int().diff() > 0).any()  # once mixed, all later layers are mixed
    _, _, loss0 = make(style_mixing_prob=0)
    _, ws0 = loss0.run_G(z, c)
    torch.testing.assert_close(ws0, plain)


def test_run_D_applies_the_augment_pipe():
    calls = []

    def pipe(img):
        calls.append(img.shape)
        return img * 0

    G, D, loss = make(augment_pipe=pipe)
    real, rc, _, _ = batch()
    logits = loss.run_D(real, rc)
    assert calls == [real.shape]
    torch.testing.assert_close(logits, D.fc.bias.expand(len(real), 1))


def _pl_mean_after(chunks):
    G, D, loss = make(pl_weight=2, pl_batch_shrink=1, pl_decay=0.5, style_mixing_prob=0)
    G.requires_grad_(True)
    for zs, cs in chunks:
        torch.manual_seed(0)
        loss.accumulate_gradients("Greg", None, None, zs, cs, gain=4, cur_nimg=0)
    assert float(loss.pl_mean) == 0  # the step's update is applied once the step is over
    return float(loss.state_dict()["pl_mean"])


def test_path_length_mean_moves_once_per_step_by_the_mean_over_rounds():
    """Two rounds in one step move pl_mean by the mean of the rounds' lengths (not twice in a
    row, as stylegan3 does per round), so splitting a batch into rounds/processes is neutral."""
    _, _, z, c = batch(4)
    halves = list(zip(z.chunk(2), c.chunk(2)))
    alone = [_pl_mean_after([h]) for h in halves]  # 0.5 * mean length of each half
    assert min(alone) > 0 and alone[0] != alone[1]
    assert _pl_mean_after(halves) == pytest.approx(sum(alone) / 2, rel=1e-6)
    # A later step flushes the pending update by itself.
    G, D, loss = make(pl_weight=2, style_mixing_prob=0)
    G.requires_grad_(True)
    loss.accumulate_gradients("Greg", None, None, z, c, gain=4, cur_nimg=0)
    loss.accumulate_gradients("Greg", None, None, z, c, gain=4, cur_nimg=32)
    assert float(loss.pl_mean) > 0


def test_state_dict_round_trip_and_bad_phase():
    G, D, loss = make()
    loss.load_state_dict({"pl_mean": torch.tensor(1.5)})
    assert float(loss.state_dict()["pl_mean"]) == 1.5
    with pytest.raises(ValueError, match="unknown phase"):
        loss.accumulate_gradients("Gfoo", None, None, None, None, gain=1, cur_nimg=0)
    with pytest.raises(ValueError, match="r1_gamma"):
        StyleGAN2Loss("cpu", G, D, r1_gamma=-1)


class SkipStyleMapping(LinearMapping):
    """stylegan2-ada's keyword: skip_w_avg_update."""

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False):
        return super().forward(z, c, update_emas=not skip_w_avg_update)


@pytest.mark.parametrize("mapping_class", [LinearMapping, SkipStyleMapping])
def test_w_avg_moves_only_in_D_phases(mapping_class):
    G, D, _ = make(style_mixing_prob=1)
    G.mapping = mapping_class().requires_grad_(False)
    loss = StyleGAN2Loss("cpu", G, D, style_mixing_prob=1)
    real, rc, z, c = batch()
    G.requires_grad_(True)
    loss.accumulate_gradients("Gboth", real, rc, z, c, gain=1, cur_nimg=0)
    assert float(G.mapping.w_avg.abs().sum()) == 0
    G.requires_grad_(False)
    D.requires_grad_(True)
    loss.accumulate_gradients("Dmain", real, rc, z, c, gain=1, cur_nimg=0)
    assert float(G.mapping.w_avg.abs().sum()) > 0

"""NDA for contrastive learning: the loss against a direct computation, bad input, a tiny run."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nda_stylegan.contrastive import NDAContrastiveLoss, info_nce_with_nda
from nda_stylegan.sample_data import make_faces


def direct_info_nce(anchor, positive, nda, temperature):
    """One anchor at a time, straight from the definition."""
    a = F.normalize(anchor, dim=1)
    p = F.normalize(positive, dim=1)
    v = F.normalize(nda, dim=2).reshape(-1, anchor.shape[1])
    total = 0.0
    for i in range(len(a)):
        pos = math.exp(float(a[i] @ p[i]) / temperature)
        others = sum(math.exp(float(a[i] @ p[j]) / temperature) for j in range(len(a)) if j != i)
        negs = sum(math.exp(float(a[i] @ v[k]) / temperature) for k in range(len(v)))
        total += -math.log(pos / (pos + others + negs))
    return total / len(a)


def test_info_nce_matches_definition():
    g = torch.Generator().manual_seed(0)
    anchor, positive = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    nda = torch.randn(5, 3, 8, generator=g)
    got = info_nce_with_nda(anchor, positive, nda, temperature=0.5)
    assert abs(float(got) - direct_info_nce(anchor, positive, nda, 0.5)) < 1e-5


def test_masked_views_are_dropped():
    g = torch.Generator().manual_seed(1)
    anchor, positive = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    nda = torch.randn(4, 2, 6, generator=g)
    mask = torch.tensor([[True, False]] * 4)
    got = info_nce_with_nda(anchor, positive, nda, 0.2, nda_mask=mask)
    assert abs(float(got) - direct_info_nce(anchor, positive, nda[:, :1], 0.2)) < 1e-5


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="num_views"):
        NDAContrastiveLoss("jigsaw", num_views=0)
    with pytest.raises(ValueError, match="temperature"):
        NDAContrastiveLoss("jigsaw", temperature=0)
    with pytest.raises(ValueError, match="nda must be"):
        info_nce_with_nda(torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8))


class TinyEncoder(nn.Module):
    def __init__(self, dim=32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * 4 * 4, dim),
        )

    def forward(self, x):
        return self.net(x)


def positive_view(images, gen):
    """A mild, structure-keeping view: brightness jitter, horizontal flip, a little noise."""
    n = images.shape[0]
    flip = torch.rand(n, generator=gen) < 0.5
    out = torch.where(flip.view(n, 1, 1, 1), images.flip(3), images)
    out = out + 0.2 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)
    return out + 0.05 * torch.randn(out.shape, generator=gen)


def test_encoder_learns_to_separate_positives_from_nda_views():
    torch.manual_seed(0)
    images, _ = make_faces(512, resolution=16, seed=0)
    data = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    held_out = torch.from_numpy(make_faces(64, resolution=16, seed=1)[0]).permute(0, 3, 1, 2).float() / 127.5 - 1
    encoder = TinyEncoder()
    loss_fn = NDAContrastiveLoss("jigsaw", num_views=2, temperature=0.2, seed=0)
    opt = torch.optim.Adam(encoder.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        _, before = loss_fn(encoder, held_out, positive_view(held_out, gen))
    for _ in range(200):
        anchors = data[torch.randint(0, len(data), (32,), generator=gen)]
        loss, stats = loss_fn(encoder, anchors, positive_view(anchors, gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        _, after = loss_fn(encoder, held_out, positive_view(held_out, gen))
    # A random encoder already maps jigsaw views close to their source (local statistics
    # match); training must open a clear gap between positives and NDA views.
    gap_before = before["sim_positive"] - before["sim_nda"]
    gap_after = after["sim_positive"] - after["sim_nda"]
    assert after["sim_positive"] > 0.8
    assert gap_after > gap_before + 0.4

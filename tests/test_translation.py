"""NDA for paired translation: loss composition, bad input, and a tiny Pix2Pix-style run."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nda_stylegan.sample_data import make_faces
from nda_stylegan.translation import TranslationNDA, fake_loss, real_loss


def paired_faces(n, resolution=16, seed=0):
    """Edge maps (inputs, 1 channel) -> face images (targets, 3 channels), both in [-1, 1]."""
    images, _ = make_faces(n, resolution=resolution, seed=seed)
    targets = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    grey = targets.mean(1, keepdim=True)
    gx = F.pad(grey[..., :, 1:] - grey[..., :, :-1], (0, 1, 0, 0))
    gy = F.pad(grey[..., 1:, :] - grey[..., :-1, :], (0, 0, 0, 1))
    edges = (gx.abs() + gy.abs()).clamp(0, 1) * 2 - 1
    return edges, targets


class TinyUNet(nn.Module):
    def __init__(self, ch=16):
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(1, ch, 4, 2, 1), nn.LeakyReLU(0.2))
        self.mid = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1), nn.LeakyReLU(0.2))
        self.up = nn.ConvTranspose2d(ch, 3, 4, 2, 1)

    def forward(self, x):
        return torch.tanh(self.up(self.mid(self.down(x))))


class TinyPatchGAN(nn.Module):
    """D(input, target) -> an [N, 1, h, w] score map."""

    def __init__(self, ch=16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(4, ch, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(ch, ch * 2, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(ch * 2, 1, 3, 1, 1),
        )

    def forward(self, inputs, targets):
        return self.net(torch.cat([inputs, targets], 1))


@pytest.mark.parametrize("kind", ["lsgan", "logistic", "hinge"])
def test_discriminator_loss_is_the_weighted_sum(kind):
    torch.manual_seed(0)
    inputs, targets = paired_faces(8)
    D, G = TinyPatchGAN(), TinyUNet()
    fakes = G(inputs).detach()
    nda = TranslationNDA("jigsaw,stitch", nda_lambda=0.3, loss=kind)
    loss, stats = nda.discriminator_loss(D, inputs, targets, fakes, generator=torch.Generator().manual_seed(5))

    # Independent computation with the same negatives.
    negatives, _ = nda.negative_targets(targets, torch.Generator().manual_seed(5))
    expected = (real_loss(D(inputs, targets), kind).mean()
                + 0.3 * fake_loss(D(inputs, fakes), kind).mean()
                + 0.7 * fake_loss(D(inputs, negatives), kind).mean())
    assert torch.allclose(loss, expected, atol=1e-6)
    assert stats["share_masked"] == 0
    # lambda = 1 turns NDA off: the plain GAN loss.
    plain = TranslationNDA("jigsaw", nda_lambda=1.0, loss=kind)
    loss1, _ = plain.discriminator_loss(D, inputs, targets, fakes)
    expected1 = real_loss(D(inputs, targets), kind).mean() + fake_loss(D(inputs, fakes), kind).mean()
    assert torch.allclose(loss1, expected1, atol=1e-6)


@pytest.mark.parametrize("kind", ["lsgan", "logistic", "hinge"])
def test_one_score_per_image_works_like_a_score_map(kind):
    torch.manual_seed(0)
    inputs, targets = paired_faces(8)
    patch_d, G = TinyPatchGAN(), TinyUNet()

    def D(x, y):  # [N, 1]: one score per image
        return patch_d(x, y).mean((2, 3))

    fakes = G(inputs).detach()
    nda = TranslationNDA("jigsaw", nda_lambda=0.4, loss=kind)
    loss, _ = nda.discriminator_loss(D, inputs, targets, fakes, generator=torch.Generator().manual_seed(2))
    negatives, _ = nda.negative_targets(targets, torch.Generator().manual_seed(2))
    assert D(inputs, targets).shape == (8, 1)
    expected = (real_loss(D(inputs, targets), kind).mean() + 0.4 * fake_loss(D(inputs, fakes), kind).mean()
                + 0.6 * fake_loss(D(inputs, negatives), kind).mean())
    assert torch.allclose(loss, expected, atol=1e-6)
    generated = G(inputs)
    scores = D(inputs, generated)
    want = -scores.mean() if kind == "hinge" else real_loss(scores, kind).mean()
    assert torch.allclose(nda.generator_loss(D, inputs, generated), want, atol=1e-6)


def test_generator_loss_never_sees_negatives():
    inputs, targets = paired_faces(4)
    D, G = TinyPatchGAN(), TinyUNet()
    nda = TranslationNDA("jigsaw")
    calls = []
    nda.pipe.register_forward_hook(lambda *a: calls.append(1))
    nda.generator_loss(D, inputs, G(inputs)).backward()
    assert not calls
    nda.discriminator_loss(D, inputs, targets, G(inputs).detach())
    assert calls == [1]


def test_bad_input_is_a_clear_error():
    inputs, targets = paired_faces(4)
    D = TinyPatchGAN()
    nda = TranslationNDA("jigsaw")
    with pytest.raises(ValueError, match="same batch size"):
        nda.discriminator_loss(D, inputs, targets[:3], targets[:3])
    with pytest.raises(ValueError, match="score map"):
        nda.discriminator_loss(lambda x, y: D(x, y)[:, 0], inputs, targets, targets)
    with pytest.raises(ValueError, match="unknown loss"):
        TranslationNDA("jigsaw", loss="wgan")
    with pytest.raises(ValueError, match="nda_lambda"):
        TranslationNDA("jigsaw", nda_lambda=0)


def test_tiny_pix2pix_learns_that_negative_pairs_are_fake():
    torch.manual_seed(0)
    inputs, targets = paired_faces(96, seed=1)
    test_in, test_tg = paired_faces(32, seed=2)
    G, D = TinyUNet(), TinyPatchGAN()
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.5, 0.999))
    nda = TranslationNDA("jigsaw,stitch", nda_lambda=0.25, loss="lsgan", seed=0)
    gen = torch.Generator().manual_seed(0)
    for step in range(60):
        idx = torch.randint(0, len(inputs), (16,), generator=gen)
        x, y = inputs[idx], targets[idx]
        fake = G(x)
        d_loss, _ = nda.discriminator_loss(D, x, y, fake.detach())
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = nda.generator_loss(D, x, fake) + 10 * (fake - y).abs().mean()  # Pix2Pix's L1 term
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
    with torch.no_grad():
        negatives, valid = nda.negative_targets(test_tg, torch.Generator().manual_seed(9))
        real_score = D(test_in, test_tg).flatten(1).mean(1)
        neg_score = D(test_in, negatives).flatten(1).mean(1)[valid]
    assert real_score.mean() > neg_score.mean() + 0.1

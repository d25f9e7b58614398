"""Test stand-ins for the published detectors: the same call interface, random fixed weights.

Their numbers are NOT comparable with real FID/KID/PR/IS values, so they can never pass for the
real files: they are written as ``standin-inception-2015-12-05.pt`` / ``standin-vgg16.pt`` with a
marker inside the archive, metrics read them only while ``NDA_STYLEGAN_STANDIN_DETECTORS=1``, the
detector check refuses them under the published names, and every result records the stand-in's
file name.

    save_standin_detectors(folder)          # then, in a test:
    monkeypatch.setenv(detectors.ENV_STANDINS, "1")   # (use_standins) and --detectors folder
"""

import os
import warnings

import torch
import torch.nn.functional as F

from metrics import detectors


class StandinInception(torch.nn.Module):
    """``net(uint8 NCHW, return_features=True)`` -> [N, 2048]; otherwise class probabilities [N, 1008]
    (``no_output_bias=True`` leaves the last layer's bias out, as the real file does)."""

    def __init__(self, seed=0, num_features=2048, num_classes=1008, pooled=8):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        d_in = 3 * pooled * pooled
        self.pooled = pooled
        self.register_buffer("w1", torch.randn([d_in, num_features], generator=g) / d_in ** 0.5)
        self.register_buffer("w2", torch.randn([num_features, num_classes], generator=g) / num_features ** 0.5)
        self.register_buffer("b2", torch.randn([num_classes], generator=g))

    def forward(self, img: torch.Tensor, return_features: bool = False, use_fp16: bool = False,
                no_output_bias: bool = False) -> torch.Tensor:
        x = img.to(torch.float32) / 127.5 - 1
        x = F.adaptive_avg_pool2d(x, [self.pooled, self.pooled]).flatten(1)
        features = torch.relu(x @ self.w1)
        if return_features:
            return features
        logits = features @ self.w2
        if not no_output_bias:
            logits = logits + self.b2
        return torch.softmax(logits, dim=1)


class StandinVGG16(torch.nn.Module):
    """``net(x, return_features=True)`` -> [N, 4096]; ``net(x, resize_images=False, return_lpips=True)``
    -> unit-normalised multi-scale features (LPIPS-style)."""

    def __init__(self, seed=1, num_features=4096, pooled=8):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        d_in = 3 * pooled * pooled
        self.pooled = pooled
        self.register_buffer("w1", torch.randn([d_in, num_features], generator=g) / d_in ** 0.5)
        self.register_buffer("w_lpips", torch.randn([3 * 4 * 4, 256], generator=g) / 48 ** 0.5)

    def forward(self, img: torch.Tensor, resize_images: bool = True, return_features: bool = False,
                return_lpips: bool = False) -> torch.Tensor:
        x = img.to(torch.float32) / 127.5 - 1
        if return_lpips:
            fine = F.adaptive_avg_pool2d(x, [self.pooled, self.pooled]).flatten(1)
            coarse = F.adaptive_avg_pool2d(x, [4, 4]).flatten(1) @ self.w_lpips
            fine = fine / (fine * fine).sum(dim=1, keepdim=True).sqrt().clamp_min(1e-8)
            coarse = coarse / (coarse * coarse).sum(dim=1, keepdim=True).sqrt().clamp_min(1e-8)
            return torch.cat([fine, coarse], dim=1)
        x = F.adaptive_avg_pool2d(x, [self.pooled, self.pooled]).flatten(1)
        return torch.relu(x @ self.w1)


def save_torchscript(module, path, standin=True):
    """Script ``module`` into ``path``; ``standin`` adds the marker the detector check looks for."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    extra = {detectors.STANDIN_MARKER: b"random weights, for tests only"} if standin else {}
    with warnings.catch_warnings():
        # torch >= 2.6 flags TorchScript as deprecated; the host's detector files are TorchScript
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(module), path, _extra_files=extra)
    return path


def save_standin_detectors(folder, seed=0, inception_features=2048, vgg_features=4096):
    """Write the Inception and VGG16 stand-ins into ``folder`` under their stand-in names; returns
    ``{name: path}``.

    The real widths are the defaults; tests pass smaller ones, since FID's ``sqrtm`` of a 2048 x 2048
    matrix takes about a minute on a small CPU.
    """
    modules = ((detectors.INCEPTION, StandinInception(seed, num_features=inception_features)),
               (detectors.VGG16, StandinVGG16(seed + 1, num_features=vgg_features)))
    return {spec.name: save_torchscript(module.eval(), os.path.join(folder, detectors.standin_spec(spec).filename))
            for spec, module in modules}


def use_standins(monkeypatch):
    """Fixture body: metrics in this test read the stand-ins (``pytest.fixture(autouse=True)(use_standins)``)."""
    monkeypatch.setenv(detectors.ENV_STANDINS, "1")

"""Common image corruptions (in the spirit of ImageNet-C / CIFAR-10-C) computed on the fly, used as
out-of-distribution sets for anomaly detection with D.

Each corruption: ``params = c.sample(images, generator)`` then ``out = c.apply(images, params)``,
images float NCHW in [-1, 1] (any channel count); outputs stay in [-1, 1]. Strengths are fixed
(about ImageNet-C severity 3) and sizes scale with the resolution (given for 32 px).
"""

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


class GaussianNoise:
    """Additive Gaussian noise, std ``sigma`` in [0, 1] pixel units (0.08 = severity 3)."""

    def __init__(self, sigma=0.08):
        self.sigma = sigma

    def sample(self, images, generator=None):
        return torch.randn(images.shape, generator=generator)

    def apply(self, images, params):
        return (images + 2 * self.sigma * params.to(images)).clamp(-1, 1)


class GaussianBlur:
    """Gaussian blur with std ``sigma`` pixels at 32 px (scaled with the image size)."""

    def __init__(self, sigma=1.0):
        self.sigma = sigma

    def sample(self, images, generator=None):
        return None

    def apply(self, images, params):
        sigma = self.sigma * images.shape[-1] / 32
        radius = max(int(np.ceil(3 * sigma)), 1)
        t = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
        k = torch.exp(-0.5 * (t / sigma) ** 2)
        k = k / k.sum()
        c = images.shape[1]
        pad = min(radius, images.shape[-1] - 1)
        x = F.pad(images, [pad, pad, pad, pad], mode="reflect")
        if pad < radius:  # a tiny image: clip the kernel to the padding we could afford
            k = k[radius - pad:radius + pad + 1] / k[radius - pad:radius + pad + 1].sum()
        x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


class Pixelate:
    """Average over ``factor`` x ``factor`` blocks (at 32 px; scaled), then nearest upsampling."""

    def __init__(self, factor=4):
        self.factor = factor

    def sample(self, images, generator=None):
        return None

    def apply(self, images, params):
        f = max(int(round(self.factor * images.shape[-1] / 32)), 2)
        small = F.adaptive_avg_pool2d(images, [max(images.shape[-2] // f, 1), max(images.shape[-1] // f, 1)])
        return F.interpolate(small, size=images.shape[-2:], mode="nearest")


class Contrast:
    """Pull every pixel towards its image's mean: ``mean + factor * (x - mean)``."""

    def __init__(self, factor=0.3):
        self.factor = factor

    def sample(self, images, generator=None):
        return None

    def apply(self, images, params):
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        return mean + self.factor * (images - mean)


class Brightness:
    """Shift towards white by ``shift`` in [0, 1] pixel units."""

    def __init__(self, shift=0.3):
        self.shift = shift

    def sample(self, images, generator=None):
        return None

    def apply(self, images, params):
        return (images + 2 * self.shift).clamp(-1, 1)


class Jpeg:
    """JPEG round trip through PIL at ``quality`` (per image; grey or RGB)."""

    def __init__(self, quality=10):
        self.quality = quality

    def sample(self, images, generator=None):
        return None

    def apply(self, images, params):
        u8 = ((images.detach().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        out = []
        for img in u8.permute(0, 2, 3, 1).numpy():
            if img.shape[2] not in (1, 3):
                raise ValueError("JPEG corruption needs 1 or 3 channels, got %d" % img.shape[2])
            pil = Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img)
            buf = io.BytesIO()
            pil.save(buf, format="JPEG", quality=self.quality)
            buf.seek(0)
            back = np.asarray(Image.open(buf).convert("L" if img.shape[2] == 1 else "RGB"))
            out.append(back.reshape(img.shape))
        out = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)
        return (out.to(images.dtype) / 127.5 - 1).to(images.device)


CORRUPTIONS = {
    "gaussian_noise": GaussianNoise,
    "gaussian_blur": GaussianBlur,
    "pixelate": Pixelate,
    "contrast": Contrast,
    "brightness": Brightness,
    "jpeg": Jpeg,
}


def make_corruption(name, **params):
    if name not in CORRUPTIONS:
        raise ValueError("unknown corruption %r; known: %s" % (name, ", ".join(CORRUPTIONS)))
    return CORRUPTIONS[name](**params)

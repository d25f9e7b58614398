"""Building blocks shared by the generator and the discriminator.

Equalised learning rate: weights are stored as N(0, 1) / lr_multiplier and scaled at run time
by lr_multiplier / sqrt(fan_in), so every layer learns at the same speed under Adam.
"""

import copy
import math

import numpy as np
import torch

from training.ops import bias_act as bias_act_op
from training.ops.bias_act import bias_act
from training.ops.conv2d_resample import conv2d_resample
from training.ops.upfirdn2d import setup_filter

DEFAULT_RESAMPLE_FILTER = (1, 3, 3, 1)


def plain_kwargs(obj):
    """A deep copy made of plain dicts / lists / numbers / strings, so that init kwargs can be
    saved beside a state dict and read back with ``torch.load(weights_only=True)``."""
    if isinstance(obj, dict):
        return {str(k): plain_kwargs(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_kwargs(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return copy.copy(obj)
    raise ValueError("network kwargs must be plain values (dict, list, number, str, None); got %s"
                     % type(obj).__name__)


def normalize_2nd_moment(x, dim=1, eps=1e-8):
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def compute_dtype(use_fp16, force_fp32, device):
    """fp16 only where asked for and only on CUDA: on CPU half precision is slow and lossy."""
    if use_fp16 and not force_fp32 and device.type == "cuda":
        return torch.float16
    return torch.float32


class FullyConnectedLayer(torch.nn.Module):
    def __init__(self, in_features, out_features, bias=True, activation="linear",
                 lr_multiplier=1.0, bias_init=0.0):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)

    def extra_repr(self):
        return "in=%d, out=%d, act=%s" % (self.in_features, self.out_features, self.activation)


class Conv2dLayer(torch.nn.Module):
    """Convolution with optional FIR up/downsampling, bias, activation and clamp.

    ``trainable=False`` stores the weights as buffers (frozen layers of the discriminator).
    """

    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation="linear",
                 up=1, down=1, resample_filter=DEFAULT_RESAMPLE_FILTER, conv_clamp=None,
                 channels_last=False, trainable=True):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = bias_act_op.default_gain(activation)
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(
            memory_format=memory_format)
        bias_value = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = torch.nn.Parameter(weight)
            self.bias = torch.nn.Parameter(bias_value) if bias else None
        else:
            self.register_buffer("weight", weight)
            self.register_buffer("bias", bias_value)

    def forward(self, x, gain=1):
        w = self.weight * self.weight_gain
        x = conv2d_resample(x, w.to(x.dtype), f=self.resample_filter, up=self.up, down=self.down,
                            padding=self.padding, flip_weight=(self.up == 1))
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        b = self.bias.to(x.dtype) if self.bias is not None else None
        return bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp)

    def extra_repr(self):
        return "in=%d, out=%d, act=%s, up=%d, down=%d" % (
            self.in_channels, self.out_channels, self.activation, self.up, self.down)


def modulated_conv2d(x, weight, styles, noise=None, up=1, down=1, padding=0, resample_filter=None,
                     demodulate=True, flip_weight=True, fused_modconv=True):
    """StyleGAN2's modulated convolution: scale the input channels of ``weight`` per sample by
    ``styles`` ``[N, I]``, optionally normalise each output channel to unit norm (demodulation),
    then convolve; ``noise`` (broadcastable to the output) is added after demodulation.

    ``fused_modconv`` folds the batch into the groups of one grouped convolution; otherwise the
    styles scale the activations instead of the weights (cheaper in training, same result).
    """
    n = x.shape[0]
    out_c, in_c, kh, kw = weight.shape
    if styles.shape != (n, in_c):
        raise ValueError("modulated_conv2d: styles must be [N=%d, I=%d], got %s"
                         % (n, in_c, list(styles.shape)))
    if x.dtype == torch.float16 and demodulate:
        # Pre-normalise so the products below stay within fp16 range.
        weight = weight * (1 / math.sqrt(in_c * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    w = None
    dcoefs = None
    if demodulate or fused_modconv:
        w = weight.unsqueeze(0) * styles.reshape(n, 1, in_c, 1, 1)
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
    if demodulate and fused_modconv:
        w = w * dcoefs.reshape(n, out_c, 1, 1, 1)

    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, down=down,
                            padding=padding, flip_weight=flip_weight)
        if demodulate and noise is not None:
            return torch.addcmul(noise.to(x.dtype), x, dcoefs.to(x.dtype).reshape(n, -1, 1, 1))
        if demodulate:
            x = x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
        elif noise is not None:
            x = x.add_(noise.to(x.dtype))
        return x

    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_c, kh, kw)
    x = conv2d_resample(x, w.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding,
                        groups=n, flip_weight=flip_weight)
    x = x.reshape(n, -1, *x.shape[2:])
    if noise is not None:
        x = x.add_(noise.to(x.dtype))
    return x

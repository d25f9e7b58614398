"""StyleGAN2 generator: a mapping network z -> w and a synthesis network w -> image."""

import math

import numpy as np
import torch

from training.networks_layers import (DEFAULT_RESAMPLE_FILTER, Conv2dLayer, FullyConnectedLayer,
                                      compute_dtype, modulated_conv2d, normalize_2nd_moment,
                                      plain_kwargs)
from training.ops import bias_act as bias_act_op
from training.ops.bias_act import bias_act
from training.ops.upfirdn2d import setup_filter, upsample2d

NOISE_MODES = ("random", "const", "none")
ARCHITECTURES = ("orig", "skip", "resnet")


def _check_choice(value, choices, name):
    if value not in choices:
        raise ValueError("%s=%r is not known; use one of: %s" % (name, value, ", ".join(choices)))


def _check_resolution(img_resolution):
    if not isinstance(img_resolution, int) or img_resolution < 4 or img_resolution & (img_resolution - 1):
        raise ValueError("img_resolution must be a power of two >= 4, got %r" % (img_resolution,))


class MappingNetwork(torch.nn.Module):
    """z (and an embedded label c) -> w, broadcast to ``num_ws`` copies.

    Keeps ``w_avg``, the running mean of w (updated when ``update_emas``), the centre of the
    truncation trick: ``w = w_avg + psi * (w - w_avg)`` for the first ``truncation_cutoff`` ws.
    ``z_dim=0`` maps the label alone (the discriminator's projection embedding).
    """

    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=8, embed_features=None,
                 layer_features=None, activation="lrelu", lr_multiplier=0.01, w_avg_beta=0.995):
        super().__init__()
        if z_dim == 0 and c_dim == 0:
            raise ValueError("MappingNetwork needs z_dim > 0 or c_dim > 0")
        if num_layers < 1:
            raise ValueError("mapping num_layers must be >= 1, got %r" % (num_layers,))
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation=activation,
                                        lr_multiplier=lr_multiplier)
            setattr(self, "fc%d" % idx, layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        x = None
        if self.z_dim > 0:
            if z is None or z.dim() != 2 or z.shape[1] != self.z_dim:
                raise ValueError("mapping: z must be [N, %d], got %s"
                                 % (self.z_dim, None if z is None else list(z.shape)))
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if c is None or c.dim() != 2 or c.shape[1] != self.c_dim:
                raise ValueError("mapping: c must be [N, %d] labels, got %s"
                                 % (self.c_dim, None if c is None else list(c.shape)))
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for idx in range(self.num_layers):
            x = getattr(self, "fc%d" % idx)(x)
        if update_emas and self.num_ws is not None and self.w_avg_beta is not None:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is None:
            return x
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if self.w_avg_beta is None:
                raise ValueError("truncation needs w_avg; this mapping has w_avg_beta=None")
            if truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x = x.clone()
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x

    def extra_repr(self):
        return "z_dim=%d, c_dim=%d, w_dim=%d, num_ws=%s" % (self.z_dim, self.c_dim, self.w_dim, self.num_ws)


class SynthesisLayer(torch.nn.Module):
    """Modulated 3x3 convolution (optionally upsampling x2), per-pixel noise with a learned
    strength, bias and activation."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, kernel_size=3, up=1,
                 use_noise=True, activation="lrelu", resample_filter=DEFAULT_RESAMPLE_FILTER,
                 conv_clamp=None, channels_last=False):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.act_gain = bias_act_op.default_gain(activation)
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(
            memory_format=memory_format))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x, w, noise_mode="random", fused_modconv=True, gain=1):
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter, flip_weight=(self.up == 1),
                             fused_modconv=fused_modconv)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain, clamp=clamp)

    def extra_repr(self):
        return "in=%d, out=%d, resolution=%d, up=%d" % (self.in_channels, self.out_channels, self.resolution, self.up)


class ToRGBLayer(torch.nn.Module):
    """Modulated 1x1 convolution without demodulation: features -> image channels."""

    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None, channels_last=False):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(
            memory_format=memory_format))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x, w, fused_modconv=True):
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


class SynthesisBlock(torch.nn.Module):
    """One resolution of the synthesis network: (const input or x2 upsampling conv), conv,
    and the ToRGB output added to the upsampled image of the previous block ('skip')."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, is_last,
                 architecture="skip", resample_filter=DEFAULT_RESAMPLE_FILTER, conv_clamp=None,
                 use_fp16=False, fp16_channels_last=False, **layer_kwargs):
        super().__init__()
        _check_choice(architecture, ARCHITECTURES, "architecture")
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp,
                                        channels_last=self.channels_last, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution,
                                    conv_clamp=conv_clamp, channels_last=self.channels_last, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp,
                                    channels_last=self.channels_last)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter, channels_last=self.channels_last)

    def forward(self, x, img, ws, force_fp32=False, fused_modconv=None, noise_mode="random"):
        w_iter = iter(ws.unbind(dim=1))
        dtype = compute_dtype(self.use_fp16, force_fp32, ws.device)
        memory_format = torch.channels_last if (self.channels_last and dtype == torch.float16) else torch.contiguous_format
        if fused_modconv is None:
            # Fused is faster for inference; the split form is faster to train.
            fused_modconv = (not self.training) and (dtype == torch.float32 or ws.shape[0] == 1)
        layer_kwargs = dict(noise_mode=noise_mode, fused_modconv=fused_modconv)
        if self.in_channels == 0:
            x = self.const.to(dtype=dtype, memory_format=memory_format)
            x = x.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
        else:
            x = x.to(dtype=dtype, memory_format=memory_format)
        if self.in_channels == 0:
            x = self.conv1(x, next(w_iter), **layer_kwargs)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x, next(w_iter), **layer_kwargs)
            x = self.conv1(x, next(w_iter), gain=np.sqrt(0.5), **layer_kwargs)
            x = y.add_(x)
        else:
            x = self.conv0(x, next(w_iter), **layer_kwargs)
            x = self.conv1(x, next(w_iter), **layer_kwargs)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = img.add_(y) if img is not None else y
        return x, img

    def extra_repr(self):
        return "resolution=%d, architecture=%s, use_fp16=%s" % (self.resolution, self.architecture, self.use_fp16)


def channels_per_resolution(resolutions, channel_base, channel_max):
    return {res: min(channel_base // res, channel_max) for res in resolutions}


def fp16_resolution(img_resolution, num_fp16_res):
    """Lowest resolution computed in fp16 (on CUDA): the ``num_fp16_res`` highest ones, never below 8."""
    log2 = int(np.log2(img_resolution))
    return max(2 ** (log2 + 1 - num_fp16_res), 8)


class SynthesisNetwork(torch.nn.Module):
    """ws ``[N, num_ws, w_dim]`` -> image ``[N, img_channels, img_resolution, img_resolution]``."""

    def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512,
                 num_fp16_res=0, **block_kwargs):
        super().__init__()
        _check_resolution(img_resolution)
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.block_resolutions = [2 ** i for i in range(2, int(np.log2(img_resolution)) + 1)]
        channels = channels_per_resolution(self.block_resolutions, channel_base, channel_max)
        if min(channels.values()) < 1:
            raise ValueError("channel_base=%d gives no channels at %d px; raise channel_base"
                             % (channel_base, img_resolution))
        fp16_res = fp16_resolution(img_resolution, num_fp16_res)
        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = channels[res // 2] if res > 4 else 0
            is_last = res == img_resolution
            block = SynthesisBlock(in_channels, channels[res], w_dim=w_dim, resolution=res,
                                   img_channels=img_channels, is_last=is_last,
                                   use_fp16=(num_fp16_res > 0 and res >= fp16_res), **block_kwargs)
            self.num_ws += block.num_conv
            if is_last:
                self.num_ws += block.num_torgb
            setattr(self, "b%d" % res, block)

    def forward(self, ws, **block_kwargs):
        if ws.dim() != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError("synthesis: ws must be [N, %d, %d], got %s" % (self.num_ws, self.w_dim, list(ws.shape)))
        if "noise_mode" in block_kwargs:
            _check_choice(block_kwargs["noise_mode"], NOISE_MODES, "noise_mode")
        block_kwargs.pop("update_emas", None)  # nothing to update here; accepted for the loss's sake
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, "b%d" % res)
            # Consecutive blocks share one w: a block's ToRGB uses the next block's first w.
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, block_ws, **block_kwargs)
        return img


class Generator(torch.nn.Module):
    """StyleGAN2 generator (stylegan2-ada-pytorch's interface).

    ``Generator(z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs={},
    synthesis_kwargs={})``; synthesis kwargs may also be given flat (stylegan3's style).
    ``G(z, c)`` -> images in about [-1, 1], ``[N, img_channels, img_resolution, img_resolution]``.
    ``init_kwargs`` rebuild an identical network: ``Generator(**G.init_kwargs)``.

    Example:
        >>> G = Generator(z_dim=32, c_dim=0, w_dim=32, img_resolution=16, img_channels=3,
        ...               synthesis_kwargs=dict(channel_base=256, channel_max=32))
        >>> img = G(torch.randn(4, 32), None)
    """

    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs=None,
                 synthesis_kwargs=None, **more_synthesis_kwargs):
        super().__init__()
        mapping_kwargs = dict(mapping_kwargs or {})
        synthesis_kwargs = dict(synthesis_kwargs or {}, **more_synthesis_kwargs)
        self.init_kwargs = plain_kwargs(dict(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
            img_channels=img_channels, mapping_kwargs=mapping_kwargs, synthesis_kwargs=synthesis_kwargs))
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution,
                                          img_channels=img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws,
                                      **mapping_kwargs)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False,
                noise_mode="random", **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, noise_mode=noise_mode, **synthesis_kwargs)

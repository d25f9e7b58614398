"""StyleGAN2 discriminator: residual blocks from img_resolution down to 4x4, then an epilogue
with minibatch standard deviation and (when conditional) a projection onto an embedded label."""

import numpy as np
import torch

from training.networks_generator import (ARCHITECTURES, MappingNetwork, _check_choice,
                                         _check_resolution, channels_per_resolution, fp16_resolution)
from training.networks_layers import (DEFAULT_RESAMPLE_FILTER, Conv2dLayer, FullyConnectedLayer,
                                      compute_dtype, plain_kwargs)
from training.ops.upfirdn2d import downsample2d, setup_filter


class DiscriminatorBlock(torch.nn.Module):
    """3x3 conv, 3x3 conv with x2 downsampling; 'resnet' adds a downsampled 1x1 skip path and
    'skip' feeds the downsampled image again at every block."""

    def __init__(self, in_channels, tmp_channels, out_channels, resolution, img_channels,
                 first_layer_idx, architecture="resnet", activation="lrelu",
                 resample_filter=DEFAULT_RESAMPLE_FILTER, conv_clamp=None, use_fp16=False,
                 fp16_channels_last=False, freeze_layers=0):
        super().__init__()
        _check_choice(architecture, ARCHITECTURES, "architecture")
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.num_layers = 0
        layer_idx = [first_layer_idx]

        def trainable():
            # Layers below freeze_layers keep their weights as buffers (transfer learning).
            idx = layer_idx[0]
            layer_idx[0] += 1
            self.num_layers += 1
            return idx >= freeze_layers

        common = dict(activation=activation, conv_clamp=conv_clamp, channels_last=self.channels_last)
        if in_channels == 0 or architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, trainable=trainable(), **common)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, trainable=trainable(), **common)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, down=2,
                                 resample_filter=resample_filter, trainable=trainable(), **common)
        if architecture == "resnet":
            self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                                    resample_filter=resample_filter, trainable=trainable(),
                                    channels_last=self.channels_last)

    def forward(self, x, img, force_fp32=False):
        dtype = compute_dtype(self.use_fp16, force_fp32, img.device if img is not None else x.device)
        memory_format = torch.channels_last if (self.channels_last and dtype == torch.float16) else torch.contiguous_format
        if x is not None:
            x = x.to(dtype=dtype, memory_format=memory_format)
        if self.in_channels == 0 or self.architecture == "skip":
            img = img.to(dtype=dtype, memory_format=memory_format)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = downsample2d(img, self.resample_filter) if self.architecture == "skip" else None
        if self.architecture == "resnet":
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=np.sqrt(0.5))
            x = y.add_(x)
        else:
            x = self.conv0(x)
            x = self.conv1(x)
        return x, img

    def extra_repr(self):
        return "resolution=%d, architecture=%s, use_fp16=%s" % (self.resolution, self.architecture, self.use_fp16)


class MinibatchStdLayer(torch.nn.Module):
    """Appends ``num_channels`` feature maps holding the standard deviation of the features
    over groups of ``G = min(group_size, N)`` samples. Groups are strided: sample ``i`` is in
    group ``i % (N // G)``, so N must be a multiple of G. ``group_size=None`` = whole batch."""

    def __init__(self, group_size, num_channels=1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x):
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        f = self.num_channels
        if n % g != 0:
            raise ValueError("minibatch-stddev: batch size %d is not a multiple of the group size %d; "
                             "use a batch divisible by mbstd_group_size" % (n, g))
        if c % f != 0:
            raise ValueError("minibatch-stddev: %d channels cannot be split into num_channels=%d groups" % (c, f))
        y = x.reshape(g, n // g, f, c // f, h, w)     # [G, M, F, c, H, W]; sample = g*M + m
        y = y - y.mean(dim=0)                        # deviations within each group
        y = (y.square().mean(dim=0) + 1e-8).sqrt()   # [M, F, c, H, W] standard deviations
        y = y.mean(dim=[2, 3, 4])                    # [M, F]
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)  # back to [N, F, H, W], same grouping
        return torch.cat([x, y], dim=1)

    def extra_repr(self):
        return "group_size=%s, num_channels=%d" % (self.group_size, self.num_channels)


class DiscriminatorEpilogue(torch.nn.Module):
    """4x4 features -> logits ``[N, 1]`` (projected onto ``cmap`` when conditional)."""

    def __init__(self, in_channels, cmap_dim, resolution, img_channels, architecture="resnet",
                 mbstd_group_size=4, mbstd_num_channels=1, activation="lrelu", conv_clamp=None):
        super().__init__()
        _check_choice(architecture, ARCHITECTURES, "architecture")
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.architecture = architecture
        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3,
                                activation=activation, conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x, img, cmap, force_fp32=False):
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        if self.architecture == "skip":
            x = x + self.fromrgb(img.to(torch.float32))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)
        if self.cmap_dim > 0:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))
        return x


class Discriminator(torch.nn.Module):
    """StyleGAN2 discriminator (stylegan2-ada-pytorch's interface): ``D(img, c)`` -> logits
    ``[N, 1]``. The minibatch-stddev layer is ``D.b4.mbstd`` (attribute ``group_size``);
    ``epilogue_kwargs`` values win over the ``mbstd_*`` arguments.
    ``init_kwargs`` rebuild an identical network: ``Discriminator(**D.init_kwargs)``.
    """

    def __init__(self, c_dim, img_resolution, img_channels, architecture="resnet", channel_base=32768,
                 channel_max=512, num_fp16_res=0, conv_clamp=None, cmap_dim=None, mbstd_group_size=4,
                 mbstd_num_channels=1, block_kwargs=None, mapping_kwargs=None, epilogue_kwargs=None):
        super().__init__()
        _check_resolution(img_resolution)
        _check_choice(architecture, ARCHITECTURES, "architecture")
        block_kwargs = dict(block_kwargs or {})
        mapping_kwargs = dict(mapping_kwargs or {})
        epilogue_kwargs = dict(dict(mbstd_group_size=mbstd_group_size, mbstd_num_channels=mbstd_num_channels),
                               **(epilogue_kwargs or {}))
        self.init_kwargs = plain_kwargs(dict(
            c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels,
            architecture=architecture, channel_base=channel_base, channel_max=channel_max,
            num_fp16_res=num_fp16_res, conv_clamp=conv_clamp, cmap_dim=cmap_dim,
            mbstd_group_size=epilogue_kwargs["mbstd_group_size"],
            mbstd_num_channels=epilogue_kwargs["mbstd_num_channels"], block_kwargs=block_kwargs,
            mapping_kwargs=mapping_kwargs, epilogue_kwargs=epilogue_kwargs))
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.block_resolutions = [2 ** i for i in range(int(np.log2(img_resolution)), 2, -1)]
        channels = channels_per_resolution(self.block_resolutions + [4], channel_base, channel_max)
        if min(channels.values()) < 1:
            raise ValueError("channel_base=%d gives no channels at %d px; raise channel_base"
                             % (channel_base, img_resolution))
        fp16_res = fp16_resolution(img_resolution, num_fp16_res)
        if cmap_dim is None:
            cmap_dim = channels[4]
        if c_dim == 0:
            cmap_dim = 0
        common = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        cur_layer_idx = 0
        for res in self.block_resolutions:
            in_channels = channels[res] if res < img_resolution else 0
            block = DiscriminatorBlock(in_channels, channels[res], channels[res // 2], resolution=res,
                                       first_layer_idx=cur_layer_idx,
                                       use_fp16=(num_fp16_res > 0 and res >= fp16_res),
                                       **block_kwargs, **common)
            setattr(self, "b%d" % res, block)
            cur_layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None,
                                          w_avg_beta=None, **mapping_kwargs)
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, resolution=4, **epilogue_kwargs, **common)

    def forward(self, img, c, update_emas=False, **block_kwargs):
        expected = (self.img_channels, self.img_resolution, self.img_resolution)
        if img.dim() != 4 or tuple(img.shape[1:]) != expected:
            raise ValueError("D: img must be [N, %d, %d, %d], got %s" % (expected + (list(img.shape),)))
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, "b%d" % res)(x, img, **block_kwargs)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        return self.b4(x, img, cmap)

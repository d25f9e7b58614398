"""Negative Data Augmentation (Sinha et al., ICLR 2021) for StyleGAN2-ADA-style GAN training.

The public names are loaded on first use (PEP 562), so ``import nda_stylegan`` stays cheap
(no torch import) and works while an optional part, such as the loss, is missing.
"""

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "available_negatives": "nda_stylegan.negatives.registry",
    "make_negative": "nda_stylegan.negatives.registry",
    "parse_spec": "nda_stylegan.spec",
    "format_spec": "nda_stylegan.spec",
    "spec_slug": "nda_stylegan.spec",
    "NDAPipe": "nda_stylegan.pipe",
    "NDALoss": "nda_stylegan.loss",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError("module 'nda_stylegan' has no attribute %r" % name)
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value  # later look-ups skip this hook
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))

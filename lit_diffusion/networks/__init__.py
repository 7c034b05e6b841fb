"""Denoising networks."""

from lit_diffusion.networks.unet import UNet

__all__ = ["UNet"]

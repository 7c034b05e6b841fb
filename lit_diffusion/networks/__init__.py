"""Denoising networks."""

from lit_diffusion.networks.classifier import EncoderClassifier
from lit_diffusion.networks.unet import UNet

__all__ = ["EncoderClassifier", "UNet"]

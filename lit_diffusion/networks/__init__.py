"""Denoising networks."""

from lit_diffusion.networks.classifier import EncoderClassifier
from lit_diffusion.networks.unet import UNet
from lit_diffusion.networks.video_unet import VideoUNet

__all__ = ["EncoderClassifier", "UNet", "VideoUNet"]

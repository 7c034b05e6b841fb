"""Image DataModules: batches are ``{"image": (B, C, H, W) float in [-1, 1], "label": (B,) long}``, plus the
keys of the pair transforms configured in ``data.pairs`` (:mod:`lit_diffusion.datamodules.pairs`)."""

from lit_diffusion.datamodules.base import EpochShuffleSampler, ImageDataModule
from lit_diffusion.datamodules.captioned_folder import CaptionedFolderDataModule
from lit_diffusion.datamodules.captioned_mnist import (FashionMNISTCaptionsDataModule, MNISTCaptionsDataModule,
                                                       MNISTPairsDataModule)
from lit_diffusion.datamodules.cifar10 import CIFAR10DataModule
from lit_diffusion.datamodules.elpv import ELPVDataModule
from lit_diffusion.datamodules.fashion_mnist import FashionMNISTDataModule
from lit_diffusion.datamodules.image_folder import ImageFolderDataModule
from lit_diffusion.datamodules.mnist import MNISTDataModule
from lit_diffusion.datamodules.shards import WebDatasetDataModule

__all__ = [
    "CIFAR10DataModule",
    "CaptionedFolderDataModule",
    "ELPVDataModule",
    "EpochShuffleSampler",
    "FashionMNISTCaptionsDataModule",
    "FashionMNISTDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "MNISTCaptionsDataModule",
    "MNISTDataModule",
    "MNISTPairsDataModule",
    "WebDatasetDataModule",
]

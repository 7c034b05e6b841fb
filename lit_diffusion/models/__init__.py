"""LightningModules: one small class per framework, all sharing :class:`DiffusionModule`."""

from lit_diffusion.models.base import DiffusionModule, TrainingDiverged
from lit_diffusion.models.ddpm import DDPM

__all__ = ["DDPM", "DiffusionModule", "TrainingDiverged"]

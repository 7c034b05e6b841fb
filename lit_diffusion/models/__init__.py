"""LightningModules: one small class per framework, all sharing :class:`DiffusionModule`."""

from lit_diffusion.models.autoencoder import Autoencoder
from lit_diffusion.models.base import DiffusionModule, TrainingDiverged
from lit_diffusion.models.classifier import NoisyClassifier
from lit_diffusion.models.ddpm import DDPM
from lit_diffusion.models.edm import EDM
from lit_diffusion.models.iddpm import IDDPM
from lit_diffusion.models.ncsn import NCSN
from lit_diffusion.models.score_sde import ScoreSDE
from lit_diffusion.models.sr3 import Regression, SR3

__all__ = ["Autoencoder", "DDPM", "EDM", "IDDPM", "NCSN", "NoisyClassifier", "DiffusionModule", "Regression", "SR3", "ScoreSDE",
           "TrainingDiverged"]

"""Training callbacks: weight EMA and periodic sample grids."""

from lit_diffusion.callbacks.ema import EMA
from lit_diffusion.callbacks.evaluation import Evaluation
from lit_diffusion.callbacks.sample_grid import SampleGrid

__all__ = ["EMA", "Evaluation", "SampleGrid"]

"""Training callbacks: weight EMA, periodic sample grids, in-training evaluation, a step-counting progress bar."""

from lit_diffusion.callbacks.ema import EMA
from lit_diffusion.callbacks.evaluation import Evaluation
from lit_diffusion.callbacks.progress import StepProgressBar
from lit_diffusion.callbacks.sample_grid import SampleGrid

__all__ = ["EMA", "Evaluation", "SampleGrid", "StepProgressBar"]

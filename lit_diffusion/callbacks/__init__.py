"""Training callbacks: weight EMA, periodic sample grids, in-training evaluation, a step-counting progress bar,
checkpoints that resume exactly after the end of a fit."""

from lit_diffusion.callbacks.checkpoint import ResumableCheckpoint
from lit_diffusion.callbacks.ema import EMA
from lit_diffusion.callbacks.evaluation import Evaluation
from lit_diffusion.callbacks.progress import StepProgressBar
from lit_diffusion.callbacks.reconstructions import ReconstructionGrid
from lit_diffusion.callbacks.sample_grid import SampleGrid
from lit_diffusion.callbacks.video_grid import VideoGrid

__all__ = ["EMA", "Evaluation", "ReconstructionGrid", "ResumableCheckpoint", "SampleGrid", "StepProgressBar",
           "VideoGrid"]

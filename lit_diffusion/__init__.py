"""lit_diffusion: a PyTorch Lightning + Hydra framework for diffusion models in vision."""

__version__ = "0.1.0"

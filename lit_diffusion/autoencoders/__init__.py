"""First-stage autoencoders for latent diffusion: diffusers' ``AutoencoderKL`` / ``VQModel`` as networks
(:mod:`.networks`), the taming / LDM training objective (:mod:`.losses`, :mod:`.discriminator`), reconstruction
metrics (:mod:`.metrics`) and pretrained first stages from lit_diffusion, diffusers and CompVis files
(:mod:`.sources`).  The training LightningModule is :class:`lit_diffusion.models.Autoencoder`."""

from lit_diffusion.autoencoders.metrics import codebook_stats, reconstruction_metrics
from lit_diffusion.autoencoders.networks import (KINDS, build_autoencoder, decode, downsampling_factor, encode,
                                                 full_config, latent_shape, reconstruct)
from lit_diffusion.autoencoders.sources import FirstStageSpec, load_first_stage

__all__ = ["KINDS", "FirstStageSpec", "build_autoencoder", "codebook_stats", "decode", "downsampling_factor",
           "encode", "full_config", "latent_shape", "load_first_stage", "reconstruct", "reconstruction_metrics"]

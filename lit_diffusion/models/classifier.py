"""Noise-conditional classifier for classifier guidance (Dhariwal & Nichol 2021, §4).

p_φ(y | x_σ) is trained with cross-entropy on images noised by the same process as the diffusion model it
will guide, σ drawn uniformly from the process's default sampling grid (DDPM: its T timesteps, ADM's
uniform t).  It sees x/√(1 + σ²) (DDPM's x_t for VP processes; unit-scale input for VE) and 250·log σ.

A classifier run can show what it is for: given ``diffusion_checkpoint`` its sample grids are that
model's samples guided towards the grid's labels by the classifier being trained.  That diffusion model is a
:class:`~lit_diffusion.frozen.Frozen` part: out of the optimizer and the EMA, stored once in the classifier's
checkpoints, rebuilt from its class and hyper-parameters (kept in ``diffusion``, with the source file's
SHA-256) so a classifier checkpoint loads without the original file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_diffusion.checkpoint import checkpoint_spec, load_checkpoint, model_from_spec, model_state
from lit_diffusion.errors import UserError
from lit_diffusion.frozen import Frozen
from lit_diffusion.guidance import ClassifierGuidance
from lit_diffusion.metrics.features import file_sha256
from lit_diffusion.models.base import DiffusionModule
from lit_diffusion.processes.base import expand_like
from lit_diffusion.sampling import SampleResult


class NoisyClassifier(DiffusionModule):
    """Classifier of noisy images on a diffusion process.

    Args:
        diffusion_checkpoint: a diffusion model checkpoint on the same process, sampled with this classifier's
            guidance for sample grids (optional).
        diffusion: the class, hyper-parameters and file hash of that model (filled in from the file).
        guidance_scale: default classifier-guidance scale s for those grids.
        noise_cond_scale: the network's noise input is this times log σ.
        Others: see :class:`~lit_diffusion.models.base.DiffusionModule` (``sampler``: for the grids).
    """

    def __init__(self, *args, diffusion_checkpoint: str | None = None, diffusion: dict | None = None,
                 guidance_scale: float = 1.0, noise_cond_scale: float = 250.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.diffusion = None
        if diffusion is None and diffusion_checkpoint is not None:
            checkpoint = load_checkpoint(diffusion_checkpoint)
            diffusion = {**checkpoint_spec(checkpoint), "sha256": file_sha256(Path(diffusion_checkpoint))}
            self.diffusion = Frozen(model_from_spec(diffusion, model_state(checkpoint, "ema", diffusion_checkpoint)))
        elif diffusion is not None:  # weights come with this module's state dict
            self.diffusion = Frozen(model_from_spec(diffusion))
        self.save_hyperparameters(ignore=["run_config"])

    def logits(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Class logits of x = x_0 + σ ε (scaled coordinates), σ of shape (B,)."""
        x_in = x / expand_like((1 + sigma.to(torch.float64) ** 2).sqrt(), x)
        return self.network(x_in, (self.hparams.noise_cond_scale * sigma.log()).to(x.dtype))

    def log_prob(self, x: Tensor, sigma: Tensor, class_labels: Tensor) -> Tensor:
        """log p_φ(y | x, σ) per sample."""
        return F.log_softmax(self.logits(x, sigma), dim=-1).gather(1, class_labels[:, None]).squeeze(1)

    def batch_loss(self, batch: Mapping[str, Any], train: bool) -> Tensor:
        x0, labels = batch["image"], batch["label"]
        levels = self.process.sigma_grid(None)[:-1].to(x0.device)
        sigma = levels[torch.randint(0, len(levels), (x0.shape[0],), device=x0.device)].to(x0.dtype)
        logits = self.logits(x0 + expand_like(sigma, x0) * torch.randn_like(x0), sigma)
        accuracy = (logits.argmax(-1) == labels).float().mean()
        self.log(f"{'train' if train else 'val'}/accuracy", accuracy, prog_bar=True)
        return F.cross_entropy(logits, labels)

    def predict(self, x: Tensor, sigma: Tensor, cond=None):
        raise UserError("this checkpoint is a noise-conditional classifier, not a diffusion model: sample from "
                        "the diffusion model and pass the classifier for guidance (classifier=PATH)")

    @torch.no_grad()
    def sample(self, num_samples: int, sampler: dict | None = None, seed: int = 0,
               conditions: Mapping[str, Tensor] | None = None, guider: Any = None, first_index: int = 0,
               **options) -> SampleResult:
        """Samples of ``diffusion_checkpoint`` guided by this classifier towards ``conditions["label"]``
        (default: cycling through the classes), at ``guidance_scale`` unless a guider is given."""
        if self.diffusion is None:
            raise UserError("a classifier run draws guided sample grids only with "
                            "model.diffusion_checkpoint=PATH to a diffusion model on the same process")
        conditions = dict(conditions or {})
        if "label" not in conditions:
            index = torch.arange(first_index, first_index + num_samples, device=self.device)
            conditions["label"] = index % self.network.num_classes
        guider = guider or ClassifierGuidance(self, self.hparams.guidance_scale)
        was_training = self.training
        self.eval()
        try:
            return self.diffusion.module.sample(num_samples, sampler or self.diffusion.module.hparams.sampler, seed,
                                                conditions, guider, first_index, **options)
        finally:
            self.train(was_training)

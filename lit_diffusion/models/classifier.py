"""Noise-conditional classifier for classifier guidance (Dhariwal & Nichol 2021, §4).

p_φ(y | x_σ) is trained with cross-entropy on images noised by the same process as the diffusion model it
will guide, σ drawn uniformly from the process's default sampling grid (DDPM: its T timesteps, ADM's
uniform t).  It sees x/√(1 + σ²) (DDPM's x_t for VP processes; unit-scale input for VE) and 250·log σ.

A classifier run can show what it is for: given ``diffusion_checkpoint`` its sample grids are that
model's samples guided towards the grid's labels by the classifier being trained.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_diffusion.errors import UserError
from lit_diffusion.models.base import DiffusionModule
from lit_diffusion.processes.base import expand_like
from lit_diffusion.sampling import SampleResult


class NoisyClassifier(DiffusionModule):
    """Classifier of noisy images on a diffusion process.

    Args:
        diffusion_checkpoint: a diffusion model checkpoint on the same process, sampled with this classifier's
            guidance for sample grids (optional).
        guidance_scale: default classifier-guidance scale s for those grids.
        noise_cond_scale: the network's noise input is this times log σ.
        Others: see :class:`~lit_diffusion.models.base.DiffusionModule` (``sampler``: for the grids).
    """

    def __init__(self, *args, diffusion_checkpoint: str | None = None, guidance_scale: float = 1.0,
                 noise_cond_scale: float = 250.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.save_hyperparameters(ignore=["run_config"])
        self._diffusion: list = []  # a plain list keeps the diffusion model out of this module's state and EMA

    def on_fit_start(self) -> None:
        if self.hparams.diffusion_checkpoint is not None:  # a clear error now rather than at the first grid
            from lit_diffusion.checkpoint import load_checkpoint

            load_checkpoint(self.hparams.diffusion_checkpoint)

    def logits(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Class logits of x = x_0 + σ ε (scaled coordinates), σ of shape (B,)."""
        x_in = x / expand_like((1 + sigma.to(torch.float64) ** 2).sqrt(), x)
        return self.network(x_in, (self.hparams.noise_cond_scale * sigma.log()).to(x.dtype))

    def log_prob(self, x: Tensor, sigma: Tensor, class_labels: Tensor) -> Tensor:
        """log p_φ(y | x, σ) per sample."""
        return F.log_softmax(self.logits(x, sigma), dim=-1).gather(1, class_labels[:, None]).squeeze(1)

    def loss(self, x0: Tensor, class_labels: Tensor | None = None) -> Tensor:
        levels = self.process.sigma_grid(None)[:-1].to(x0.device)
        sigma = levels[torch.randint(0, len(levels), (x0.shape[0],), device=x0.device)].to(x0.dtype)
        logits = self.logits(x0 + expand_like(sigma, x0) * torch.randn_like(x0), sigma)
        accuracy = (logits.argmax(-1) == class_labels).float().mean()
        self.log(f"{'train' if self.training else 'val'}/accuracy", accuracy, prog_bar=True)
        return F.cross_entropy(logits, class_labels)

    def denoise(self, x: Tensor, sigma: Tensor, class_labels: Tensor | None = None) -> Tensor:
        raise UserError("this checkpoint is a noise-conditional classifier, not a diffusion model: sample from "
                        "the diffusion model and pass the classifier for guidance (classifier=PATH)")

    @torch.no_grad()
    def sample(self, num_samples: int, sampler: dict | None = None, seed: int = 0,
               class_labels: Tensor | None = None, guidance_scale: float | None = None, classifier=None,
               on_call=None) -> SampleResult:
        """Samples of ``diffusion_checkpoint`` guided by this classifier towards ``class_labels``."""
        from lit_diffusion.checkpoint import model_from_checkpoint

        if self.hparams.diffusion_checkpoint is None:
            raise UserError("a classifier run draws guided sample grids only with "
                            "model.diffusion_checkpoint=PATH to a diffusion model on the same process")
        if not self._diffusion:
            self._diffusion.append(model_from_checkpoint(self.hparams.diffusion_checkpoint, "ema", "cpu"))
        diffusion = self._diffusion[0].to(self.device)
        if class_labels is None:
            class_labels = torch.arange(num_samples, device=self.device) % self.network.num_classes
        was_training = self.training
        self.eval()
        try:
            return diffusion.sample(num_samples, sampler or diffusion.hparams.sampler, seed,
                                    class_labels=class_labels.to(self.device), classifier=self,
                                    guidance_scale=self.hparams.guidance_scale if guidance_scale is None else guidance_scale,
                                    on_call=on_call)
        finally:
            self.train(was_training)

"""The thin LightningModule every framework shares (sgm-style: glue around swappable parts).

A framework subclass supplies two things: its training objective (:meth:`DiffusionModule.loss`) and its
denoiser D(x, σ) (:meth:`DiffusionModule.denoise`), the one interface every sampler uses.  Everything
else — optimisation, deterministic per-step randomness, sampling, checkpoint metadata — lives here.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Callable

import lightning as L
import torch
from torch import Tensor

import lit_diffusion
from lit_diffusion.config import safe_instantiate
from lit_diffusion.errors import UserError
from lit_diffusion.guidance import classifier_free, classifier_guided
from lit_diffusion.sampling import SampleResult, generate

CHECKPOINT_KEY = "lit_diffusion"


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def step_seed(seed: int, step: int) -> int:
    """Seed for the training randomness (noise levels, ε, dropout) of one optimizer step."""
    return (seed * 1_000_003 + step) % (2**63)


class DiffusionModule(L.LightningModule):
    """Network + forward process + objective + optimizer.

    Args:
        network: config of the ``nn.Module`` (Hydra ``network`` group).
        process: config of the forward process (Hydra ``process`` group).
        optimizer: partial optimizer config, e.g. ``{_target_: torch.optim.Adam, _partial_: true, lr: 2e-4}``.
        sampler: default sampler config, used by sample grids and the ``sample`` entry.
        image_shape: (C, H, W) of the data.
        lr_warmup_steps: linear learning-rate warm-up (Ho et al. 2020 use 5000 steps).
        seed: base seed; the training randomness of step k is a function of (seed, k) only, which makes
            resuming from a checkpoint bit-exact.
        label_dropout: probability of replacing a training label by the null label (index ``num_classes``
            of a class-conditional network), which trains the unconditional model that classifier-free
            guidance needs (Ho & Salimans 2021, Alg. 1; they use 0.1–0.2).
    """

    def __init__(
        self,
        network: dict,
        process: dict,
        optimizer: dict,
        sampler: dict,
        image_shape: list[int],
        lr_warmup_steps: int = 0,
        seed: int = 0,
        label_dropout: float = 0.0,
        run_config: dict | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["run_config"])
        self.network = safe_instantiate(network)
        self.process = safe_instantiate(process)
        self.run_config = run_config
        self.class_conditional = network.get("num_classes") is not None
        if label_dropout and not self.class_conditional:
            raise UserError("model.label_dropout needs a class-conditional network: set network.num_classes")

    # --- what a framework defines --------------------------------------------------------------------
    @abstractmethod
    def loss(self, x0: Tensor, class_labels: Tensor | None = None) -> Tensor:
        """The training objective on a batch of clean images in [-1, 1]."""

    @abstractmethod
    def denoise(self, x: Tensor, sigma: Tensor, class_labels: Tensor | None = None) -> Tensor:
        """D(x, σ): the estimate of x_0 from x = x_0 + σ ε (scaled coordinates), σ of shape (B,)."""

    def denoise_with_variance(self, x: Tensor, sigma: Tensor, class_labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(D(x, σ), v) for models that learn the reverse variance (see :mod:`lit_diffusion.sampling`)."""
        raise UserError(f"sampler.variance=learned needs a model that learns its variance (model=iddpm); "
                        f"{type(self).__name__} does not: use sampler.variance=posterior or forward")

    # --- training ------------------------------------------------------------------------------------
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        torch.manual_seed(step_seed(self.hparams.seed, self.global_step))

    def _labels(self, batch: dict) -> Tensor | None:
        """Class labels of a batch, for class-conditional networks only."""
        if not self.class_conditional:
            return None
        if "label" not in batch:
            raise UserError("the network is class-conditional (network.num_classes is set) but the dataset "
                            "has no labels; set network.num_classes=null or use a labelled dataset")
        return batch["label"]

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        labels = self._labels(batch)
        if self.hparams.label_dropout > 0:
            dropped = torch.rand(labels.shape, device=labels.device) < self.hparams.label_dropout
            labels = labels.masked_fill(dropped, self.network.num_classes)
        loss = self.loss(batch["image"], labels)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"the training loss became {loss.item()} at step {self.global_step}. Checkpoints written "
                "before this step are kept in the run's checkpoints/ folder. Lower the learning rate "
                "(model.optimizer.lr=...), enable gradient clipping (trainer.gradient_clip_val=1.0) or use "
                "full precision (trainer.precision=32), then resume with ckpt_path=<last good checkpoint>."
            )
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # Validation noise is fixed per batch so that the curve only moves with the weights.
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(batch_idx)
            loss = self.loss(batch["image"], self._labels(batch))
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)

    def configure_optimizers(self) -> Any:
        optimizer = safe_instantiate(self.hparams.optimizer)(self.parameters())
        warmup = self.hparams.lr_warmup_steps
        if warmup <= 0:
            return optimizer
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # --- sampling ------------------------------------------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.hparams.image_shape)

    def denoiser(self, class_labels: Tensor | None = None) -> Callable[..., Any]:
        """The sampler-facing D(x, σ[, return_variance]) with the class labels bound."""

        def denoise(x: Tensor, sigma: Tensor, return_variance: bool = False):
            if return_variance:
                return self.denoise_with_variance(x, sigma, class_labels)
            return self.denoise(x, sigma, class_labels)

        return denoise

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        sampler: dict | None = None,
        seed: int = 0,
        class_labels: Tensor | None = None,
        guidance_scale: float | None = None,
        classifier: Any = None,
        on_call: Callable[[], None] | None = None,
    ) -> SampleResult:
        """Draw images in [-1, 1] with a sampler config (default: the model's), from a fixed seed.

        ``class_labels`` condition a class-conditional model; ``guidance_scale`` w applies classifier-free
        guidance (w = 1: plain conditional); with a noise-conditional ``classifier`` (a
        :class:`~lit_diffusion.models.NoisyClassifier` on the same process) it is the classifier-guidance
        scale s instead (:mod:`lit_diffusion.guidance`).
        """
        denoiser = self.denoiser(class_labels if self.class_conditional else None)
        if guidance_scale is not None or classifier is not None:
            if class_labels is None:
                raise UserError("guidance needs the classes to guide towards: pass class_labels=[...]")
            if classifier is not None:
                denoiser = classifier_guided(denoiser, classifier.log_prob, class_labels,
                                             1.0 if guidance_scale is None else guidance_scale)
            elif not self.class_conditional:
                raise UserError("classifier-free guidance (guidance_scale) needs a class-conditional model trained "
                                "with label dropout (network.num_classes, model.label_dropout); for an "
                                "unconditional model pass a noise-conditional classifier (classifier=PATH)")
            else:
                denoiser = classifier_free(denoiser, self.denoiser(None), guidance_scale)
        generator = torch.Generator(self.device).manual_seed(seed)
        was_training = self.training
        self.eval()
        try:
            result = generate(
                denoiser, self.process, (num_samples, *self.image_shape), sampler or self.hparams.sampler,
                generator=generator, on_call=on_call,
            )
        finally:
            self.train(was_training)
        result.images = result.images.clamp(-1, 1)
        return result

    # --- checkpoints ---------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        cls = type(self)
        checkpoint[CHECKPOINT_KEY] = {
            "version": lit_diffusion.__version__,
            "model_class": f"{cls.__module__}.{cls.__qualname__}",
            "config": self.run_config,
        }

"""The thin LightningModule every framework shares (sgm-style glue around swappable parts).

Every model's denoiser is its network under a preconditioning object (EDM's ``*Precond``, k-diffusion's
``external.py``; :mod:`lit_diffusion.preconditioning`):

    D(x, σ | c) = c_skip(σ) x + c_out(σ) F(c_in(σ) x, c_noise(σ) | c),

and every model is trained on EDM's loss in the network's units, E λ'(σ) ‖F − (x_0 − c_skip x)/c_out‖² with
λ' = λ c_out² (Karras et al. 2022, Eq. 8).  A framework subclass supplies only its preconditioning, its
training distribution of σ (:meth:`DiffusionModule.sample_sigma`) and λ' (:meth:`DiffusionModule.loss_weight`).
A network with a variance head (iDDPM) returns 2C channels; the second half is the learned variance
interpolation v = (out + 1)/2, an extra output of the same path (:class:`Prediction`).

Conditions come as named entries of the batch and reach the network through a
:class:`~lit_diffusion.conditioning.Conditioner`; guidance is a guider chosen at sampling time
(:mod:`lit_diffusion.guidance`); parts that are not trained are :class:`~lit_diffusion.frozen.Frozen`.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import lightning as L
import numpy as np
import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch import Tensor

import lit_diffusion
from lit_diffusion.checkpoint import CHECKPOINT_KEY
from lit_diffusion.conditioning import Conditioner, keep_known
from lit_diffusion.config import safe_instantiate
from lit_diffusion.datamodules.captions import training_captions
from lit_diffusion.errors import UserError
from lit_diffusion.frozen import Frozen
from lit_diffusion.guidance import NoGuidance
from lit_diffusion.latent import FirstStage
from lit_diffusion.noise import build_noise
from lit_diffusion.preconditioning import Preconditioning
from lit_diffusion.processes.base import expand_like
from lit_diffusion.randomness import PerImageGenerator
from lit_diffusion.samplers.callback import StepCallback
from lit_diffusion.sampling import SampleResult, generate

class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


class Prediction(NamedTuple):
    """One network evaluation under the preconditioning: x̂_0, and v ∈ [0, 1] for a variance head."""

    denoised: Tensor
    variance: Tensor | None
    raw: Tensor  # the network's (mean) output F, for losses in the network's units


BATCH_MULTIPLE = 8


def pad_batch(tensors: tuple[Tensor, ...], multiple: int) -> tuple[Tensor, ...]:
    """Each tensor with its batch padded (by repeating its last row) to a multiple of ``multiple``."""
    missing = -tensors[0].shape[0] % multiple if tensors else 0
    if not missing:
        return tensors
    return tuple(torch.cat([t, t[-1:].expand(missing, *t.shape[1:])]) for t in tensors)


def step_seed(seed: int, step: int, rank: int = 0, micro: int = 0) -> int:
    """Seed for the training randomness (noise levels, ε, dropout) of one optimizer step in process ``rank``, and
    of its ``micro``-th batch under gradient accumulation: rank 0's first batch keeps the one-process seeds; the
    others get mixed ones (torch's CPU generator reads 32 bits only)."""
    if rank == 0 and micro == 0:
        return (seed * 1_000_003 + step) % (2**63)
    entropy = [seed % 2**63, step, rank] + ([micro] if micro else [])
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] % (2**63))


class DiffusionModule(L.LightningModule):
    """Network + forward process + preconditioning + conditioner + objective + optimizer.

    Args:
        network: config of the ``nn.Module`` (Hydra ``network`` group); the conditioner's routes are added
            to it (``vector_dim``, ``concat_channels``, ``context_dim``).
        process: config of the forward process (Hydra ``process`` group).
        optimizer: partial optimizer config, e.g. ``{_target_: torch.optim.Adam, _partial_: true, lr: 2e-4}``.
        sampler: default sampler config, used by sample grids and the ``sample`` entry.
        image_shape: (C, H, W) of the data.
        conditioner: config of a :class:`~lit_diffusion.conditioning.Conditioner` (Hydra ``conditioner``
            group); None for an unconditional model.
        first_stage: config of a :class:`~lit_diffusion.latent.FirstStage`: diffuse the latents of this frozen
            autoencoder (latent diffusion, Rombach et al. 2022); None: pixel space.  The network then works
            at the latent shape.
        clip_denoised: clip x̂_0 to the data range [-1, 1] while sampling (DDPM's reference samplers do;
            EDM's do not); never in latent space.
        noise: the forward noise ε of training and sampling, ``{name: gaussian | simplex, <options>}``
            (:mod:`lit_diffusion.noise`; AnoDDPM's simplex noise, Wyatt et al. 2022); None: Gaussian.
        lr_warmup_steps: linear learning-rate warm-up (Ho et al. 2020 use 5000 steps).
        seed: base seed; the training randomness of step k is a function of (seed, k) only, which makes
            resuming from a checkpoint bit-exact.
        compile: train with the network compiled by ``torch.compile`` (in place, ``nn.Module.compile``: the
            state_dict keys and checkpoints stay those of the plain network); sampling and evaluation from a
            checkpoint, and the EMA copy (made before), run it uncompiled.
    """

    variance_head = False
    loss_norm = 2
    """p of the objective's ‖F − target‖_p^p: 2 (every framework's L2) or 1 (SR3 / Palette's L1 option)."""

    def __init__(
        self,
        network: dict,
        process: dict,
        optimizer: dict,
        sampler: dict,
        image_shape: list[int],
        conditioner: dict | None = None,
        first_stage: dict | None = None,
        clip_denoised: bool = False,
        noise: dict | None = None,
        lr_warmup_steps: int = 0,
        seed: int = 0,
        compile: bool = False,
        run_config: dict | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["run_config"])
        self.process = safe_instantiate(process)
        self.first_stage = None if first_stage is None else Frozen(FirstStage(image_shape, **first_stage))
        self.sample_shape = tuple(image_shape) if first_stage is None else self.first_stage.module.latent_shape
        self.clip = clip_denoised and first_stage is None
        self.noise = build_noise(noise)
        self.conditioner = Conditioner(**(conditioner or {}), image_size=self.sample_shape[-1])
        self.network = safe_instantiate(network, **self.conditioner.network_kwargs())
        self.run_config = run_config
        if self.variance_head:
            channels, out_channels = self.sample_shape[0], getattr(self.network, "out_channels", None)
            if out_channels != 2 * channels:
                raise UserError(f"{type(self).__name__} learns a variance per pixel, so its network needs "
                                f"out_channels = 2 × {channels} data channels = {2 * channels}, got {out_channels}; "
                                f"set network.out_channels={2 * channels}")

    # --- what a framework defines --------------------------------------------------------------------
    preconditioning: Preconditioning
    """(c_skip, c_out, c_in, c_noise) of the framework's network; set by the subclass."""

    def sample_sigma(self, batch: int) -> Tensor:
        """Training noise levels (float64, shape (B,))."""
        raise NotImplementedError

    def loss_weight(self, sigma: Tensor) -> Tensor | float:
        """λ'(σ): the loss weight in the network's units."""
        return 1.0

    # --- the one denoiser path -----------------------------------------------------------------------
    def predict(self, x: Tensor, sigma: Tensor, cond: Mapping[str, Tensor] | None = None) -> Prediction:
        """D(x, σ | c) for x = x_0 + σ ε in scaled coordinates, σ of shape (B,); ``cond`` is embedded."""
        c_skip, c_out, c_in, c_noise = self.preconditioning.coefficients(sigma.to(torch.float64))
        out = self.network(expand_like(c_in, x) * x, c_noise.to(x.dtype), cond or None)
        variance = None
        if self.variance_head:
            out, v = out.chunk(2, dim=1)
            variance = (v + 1) / 2  # unclamped, as in the reference code
        return Prediction(expand_like(c_skip, x) * x + expand_like(c_out, x) * out, variance, out)

    def denoise(self, x: Tensor, sigma: Tensor, cond: Mapping[str, Tensor] | None = None) -> Tensor:
        return self.predict(x, sigma, cond).denoised

    def sampling_denoiser(self, x: Tensor, sigma: Tensor, cond: Mapping[str, Tensor]):
        """What samplers see: x̂_0 clipped to the data range when the model says so, with v if learned.

        The batch is padded to a multiple of :data:`BATCH_MULTIPLE` rows: BLAS matrix products give row
        results that depend on the number of rows otherwise (seen with MKL/oneDNN on CPU), and padding makes
        image i bit-identical whatever batch it is drawn in."""
        n = x.shape[0]
        padded = pad_batch((x, sigma, *cond.values()), BATCH_MULTIPLE)
        prediction = self.predict(padded[0], padded[1], dict(zip(cond, padded[2:])))
        denoised = prediction.denoised[:n].clamp(-1, 1) if self.clip else prediction.denoised[:n]
        return denoised if prediction.variance is None else (denoised, prediction.variance[:n])

    # --- training ------------------------------------------------------------------------------------
    def conditions(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """The entries of a batch that the conditioner reads."""
        return {key: batch[key] for key in self.conditioner.input_keys if key in batch}

    def noisy(self, x0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(σ, ε, x_0 + σ ε) for a training batch."""
        sigma = self.sample_sigma(x0.shape[0])
        eps = self.noise.sample(x0.shape, None, x0.device, x0.dtype)
        return sigma, eps, x0 + expand_like(sigma, x0) * eps

    def loss(self, x0: Tensor, cond: Mapping[str, Tensor] | None = None) -> Tensor:
        """EDM's loss in the network's units: λ' ‖F − (x_0 − c_skip x)/c_out‖² (‖·‖₁ with :attr:`loss_norm` 1),
        mean over pixels and batch."""
        sigma, _, x = self.noisy(x0)
        prediction = self.predict(x, sigma, cond)
        return self.regression_loss(prediction, x0, x, sigma)

    def regression_loss(self, prediction: Prediction, x0: Tensor, x: Tensor, sigma: Tensor) -> Tensor:
        c_skip, c_out, _, _ = self.preconditioning.coefficients(sigma.to(torch.float64))
        target = (x0 - expand_like(c_skip, x0) * x) / expand_like(c_out, x0)
        diff = prediction.raw - target
        err = (diff**2 if self.loss_norm == 2 else diff.abs()).flatten(1).mean(1)
        weight = self.loss_weight(sigma)
        return (err * (weight.to(err.dtype) if isinstance(weight, Tensor) else weight)).mean()

    def setup(self, stage: str) -> None:
        """Before training, fit what is fitted to the training data: a trained text encoder's tokenizer, on the
        training captions (rank 0's fit in every process); compile the network with ``compile``."""
        if stage == "fit":
            if self.hparams.get("compile"):
                self.network.compile()
            self.conditioner.fit(lambda: training_captions(self.trainer.datamodule),
                                 lambda obj: self.trainer.strategy.broadcast(obj, src=0))

    def on_fit_start(self) -> None:
        """``first_stage.cache_latents``: encode the training views once (each process its own copy)."""
        if self.first_stage is not None and self.trainer.datamodule is not None:
            self.first_stage.module.fill_cache(self.trainer.datamodule.train_dataloader().dataset)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        micro = batch_idx % self.trainer.accumulate_grad_batches  # its place among the batches of one step
        torch.manual_seed(step_seed(self.hparams.seed, self.global_step, self.global_rank, micro))
        if self.first_stage is not None:  # scale_by_std: once, at the first step, rank 0's value everywhere
            self.first_stage.module.fit_scale(batch["image"], lambda t: self.trainer.strategy.broadcast(t, src=0))

    def batch_loss(self, batch: Mapping[str, Any], train: bool) -> Tensor:
        """The objective on a batch (its latents for a latent model); conditions are dropped per key only in
        training."""
        return self.loss(self.to_latent(batch["image"]), self.conditioner(self.conditions(batch), train_dropout=train))

    def to_latent(self, images: Tensor) -> Tensor:
        """What the diffusion runs on: the images, or their scaled first-stage latents."""
        return images if self.first_stage is None else self.first_stage.module.encode(images)

    def from_latent(self, latents: Tensor) -> Tensor:
        return latents if self.first_stage is None else self.first_stage.module.decode(latents)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = self.batch_loss(batch, train=True)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"the training loss became {loss.item()} at step {self.global_step}. Checkpoints written "
                "before this step are kept in the run's checkpoints/ folder. Lower the learning rate "
                "(model.optimizer.lr=...), enable gradient clipping (trainer.gradient_clip_val=1.0) or use "
                "full precision (trainer.precision=32), then resume with ckpt_path=<last good checkpoint>."
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["image"]))  # batches may hold caption lists
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # Validation noise is fixed per batch so that the curve only moves with the weights.
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(batch_idx)
            loss = self.batch_loss(batch, train=False)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=len(batch["image"]))

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Under FSDP the gradient norm is the norm over all ranks' shards: the wrapped root's ``clip_grad_norm_``
        computes it (Lightning's FSDP precision plugin refuses norm clipping); other strategies clip as usual."""
        if gradient_clip_val and gradient_clip_algorithm in (None, "norm") and isinstance(self.trainer.strategy,
                                                                                         FSDPStrategy):
            self.trainer.model.clip_grad_norm_(gradient_clip_val)
        else:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self) -> Any:
        trainable = [p for p in self.parameters() if p.requires_grad]  # frozen parts stay out
        optimizer = safe_instantiate(self.hparams.optimizer)(trainable)
        warmup = self.hparams.lr_warmup_steps
        if warmup <= 0:
            return optimizer
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # --- sampling ------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        sampler: dict | None = None,
        seed: int = 0,
        conditions: Mapping[str, Tensor] | None = None,
        guider: Any = None,
        first_index: int = 0,
        noise: Tensor | None = None,
        init: Tensor | None = None,
        sigma_start: float | None = None,
        callback: StepCallback | None = None,
    ) -> SampleResult:
        """Draw images ``first_index … first_index + num_samples − 1`` of the run with ``seed``, in [-1, 1]
        (a latent model samples latents and decodes them; ``init`` images are encoded).

        Image i depends only on (seed, i) (one generator per image), not on the batch it is drawn in.
        ``conditions`` are raw batch entries (e.g. ``{"label": labels}``); ``guider`` one of
        :mod:`lit_diffusion.guidance` (default: none); ``noise``, ``init``, ``sigma_start`` and ``callback``
        as in :func:`lit_diffusion.sampling.generate`.
        """
        conditions = dict(conditions or {})
        cond = self.conditioner(conditions)
        droppable = self.conditioner.droppable
        uncond = self.conditioner(conditions, drop=droppable) if droppable else None
        denoiser = (guider or NoGuidance()).denoiser(self.sampling_denoiser, cond, uncond, conditions)
        known = self.conditioner.known(conditions)  # given frames (MCVD) stay as given
        if known is not None:
            denoiser = keep_known(denoiser, *known)
        generator = self.noise.bind(PerImageGenerator(seed, first_index, num_samples, self.device))
        was_training = self.training
        self.eval()
        try:
            result = generate(denoiser, self.process, (num_samples, *self.sample_shape), sampler or self.hparams.sampler,
                              generator=generator, noise=noise, init=None if init is None else self.to_latent(init),
                              sigma_start=sigma_start, callback=callback)
            result.images = self.from_latent(result.images).clamp(-1, 1)
            if known is not None:  # exactly, whatever the sampler's last step
                result.images = torch.where(known[1].bool(), known[0].to(result.images.dtype), result.images)
        finally:
            self.train(was_training)
        return result

    # --- checkpoints ---------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.first_stage is not None:  # rebuilt from its config; weights come with the state dict
            checkpoint["hyper_parameters"]["first_stage"] = self.first_stage.module.spec
        if self.hparams.get("conditioner"):  # a pretrained text encoder, likewise
            checkpoint["hyper_parameters"]["conditioner"] = self.conditioner.spec(self.hparams.conditioner)
        cls = type(self)
        checkpoint[CHECKPOINT_KEY] = {
            "version": lit_diffusion.__version__,
            "model_class": f"{cls.__module__}.{cls.__qualname__}",
            "config": self.run_config,
        }

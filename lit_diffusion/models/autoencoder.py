"""First-stage training: a diffusers autoencoder (KL or VQ) + PatchGAN, the taming / LDM recipe, with two optimizers
under Lightning's manual optimization.

Each training batch is one autoencoder step and, from ``loss.disc_start`` on, one discriminator step on the same
reconstructions (:mod:`lit_diffusion.autoencoders.losses`).  ``trainer.global_step`` counts batches (autoencoder
steps): the discriminator's optimizer is stepped through the strategy (precision plugin included) but not through
``LightningOptimizer.step``, which would count a second step per batch from ``disc_start`` on and shift
``max_steps``, checkpoint intervals, the EMA and ``disc_start`` itself (Lightning 2 counts every optimizer step
in manual optimization).  Automatic gradient clipping is not available in manual optimization: experiments set
``trainer.gradient_clip_val: null``.

State-dict layout: ``autoencoder.*`` (the diffusers model, its own key layout), ``loss.discriminator.main.*``
(taming's layout) and, for KL, ``loss.logvar``.  The LPIPS network is not stored.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

import lit_diffusion
from lit_diffusion.autoencoders.losses import AutoencoderLoss, SharedModule, codebook_loss
from lit_diffusion.autoencoders.metrics import code_counts, codebook_stats, psnr_per_image, ssim_per_image
from lit_diffusion.autoencoders.networks import (build_autoencoder, check_kind, decode, decode_quantized, encode,
                                                 last_layer, latent_shape, quantize)
from lit_diffusion.checkpoint import CHECKPOINT_KEY
from lit_diffusion.config import safe_instantiate
from lit_diffusion.errors import UserError
from lit_diffusion.images import to_uint8
from lit_diffusion.metrics import build_extractor, feature_metrics
from lit_diffusion.models.base import TrainingDiverged, step_seed


class Autoencoder(L.LightningModule):
    """A first-stage autoencoder and its training.

    Args:
        kind: ``kl`` (diffusers ``AutoencoderKL``) or ``vq`` (``VQModel``).
        config: the diffusers config of the network (:mod:`lit_diffusion.autoencoders.networks`).
        optimizer: partial optimizer config of the autoencoder (and the log-variance), e.g.
            ``{_target_: torch.optim.Adam, _partial_: true, lr: 4.5e-6, betas: [0.5, 0.9]}``.
        image_shape: (C, H, W) of the data; H and W must be multiples of the downsampling factor.
        loss: keyword arguments of :class:`~lit_diffusion.autoencoders.losses.AutoencoderLoss`.
        disc_optimizer: partial optimizer config of the discriminator (None: the same as ``optimizer``).
        seed: base seed; step k's randomness (the KL posterior draw) depends on (seed, k) only.
        val_rfid: also log ``val/rfid``, FID between the validation images and their reconstructions, with the
            feature extractor ``rfid_extractor`` (:data:`lit_diffusion.metrics.EXTRACTORS`; the offline
            Inception by default); it is built on first use and kept out of checkpoints.
    """

    def __init__(self, kind: str, config: dict, optimizer: dict, image_shape: list[int], loss: dict | None = None,
                 disc_optimizer: dict | None = None, seed: int = 0, val_rfid: bool = False,
                 rfid_extractor: str = "inception", run_config: dict | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["run_config"])
        self.automatic_optimization = False
        check_kind(kind)
        channels = int(image_shape[0])
        self.autoencoder = build_autoencoder(kind, config)
        for key in ("in_channels", "out_channels"):
            if self.autoencoder.config[key] != channels:
                raise UserError(f"the data has {channels} channels but the autoencoder's {key} is "
                                f"{self.autoencoder.config[key]}; set model.config.{key}={channels}")
        self.latent_shape = latent_shape(kind, config, image_shape)
        try:
            self.loss = AutoencoderLoss(kind, channels, **(loss or {}))
        except TypeError as err:
            raise UserError(f"model.loss: {err}".replace("__init__() ", "")) from None
        self.run_config = run_config
        self._val_counts: Tensor | None = None
        self._val_features: dict[str, list[Tensor]] = {"real": [], "fake": []}
        self._extractor = SharedModule()

    @property
    def kind(self) -> str:
        return self.hparams.kind

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.hparams.image_shape)

    # --- the network ---------------------------------------------------------------------------------
    def encode(self, x: Tensor, sample: bool = True) -> Tensor:
        """:func:`lit_diffusion.autoencoders.encode` with this model's network."""
        return encode(self.autoencoder, x, sample)

    def decode(self, z: Tensor) -> Tensor:
        return decode(self.autoencoder, z)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, sample: bool = False) -> Tensor:
        """decode(encode(x)) clipped to [-1, 1], from the posterior's mode unless ``sample`` (KL)."""
        return self.decode(self.encode(x, sample=sample)).clamp(-1, 1)

    def forward_train(self, x: Tensor, sample: bool = True) -> tuple[Tensor, Tensor, Tensor | None]:
        """(reconstruction, regulariser, code indices): the regulariser is the per-image KL (KL) or the codebook
        loss (VQ, with gradients to the codebook and, through the straight-through estimator, to the encoder)."""
        if self.kind == "kl":
            posterior = self.autoencoder.encode(x).latent_dist
            z = posterior.sample() if sample else posterior.mode()
            return self.autoencoder.decode(z).sample, posterior.kl(), None
        z = self.autoencoder.encode(x).latents
        quantized, codes, indices = quantize(self.autoencoder, z)
        reg = codebook_loss(z, codes, self.loss.commitment_beta, self.loss.codebook_legacy)
        return decode_quantized(self.autoencoder, quantized), reg, indices

    # --- training ------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self.loss.setup_perceptual()  # a missing LPIPS backbone fails here, before the first step

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        torch.manual_seed(step_seed(self.hparams.seed, self.global_step))

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_ae, opt_disc = self.optimizers()
        x = batch["image"]
        step = self.global_step
        with self.toggled_optimizer(opt_ae):
            rec, reg, indices = self.forward_train(x)
            loss, logs = self.loss.generator_loss(x, rec, reg, step, last_layer(self.autoencoder))
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"the autoencoder loss became {loss.item()} at step {step}. Checkpoints written before this "
                    "step are kept in the run's checkpoints/ folder. Lower the learning rate "
                    "(model.optimizer.lr=...) or the discriminator weight (model.loss.disc_weight=...), then "
                    "resume with ckpt_path=<last good checkpoint>.")
            opt_ae.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            opt_ae.step()
        if self.loss.discriminator_active(step):
            with self.toggled_optimizer(opt_disc):
                d_loss, d_logs = self.loss.discriminator_loss(x, rec, step)
                opt_disc.zero_grad(set_to_none=True)
                self.manual_backward(d_loss)
                self.step_discriminator(opt_disc)
            logs |= d_logs
        if indices is not None:
            stats = codebook_stats(indices, self.autoencoder.quantize.n_e)
            logs |= {"perplexity": stats["perplexity"], "codebook_usage": stats["codebook_usage"]}
        self.log("train/loss", logs["total_loss"], prog_bar=True)
        self.log_dict({f"train/{k}": v for k, v in logs.items() if k != "total_loss"})

    def step_discriminator(self, optimizer) -> None:
        """One discriminator step through the strategy (precision plugin, scaler) without counting a global step
        (see the module docstring)."""
        self.trainer.strategy.optimizer_step(optimizer.optimizer, closure=lambda: None, model=self)

    def configure_optimizers(self) -> list:
        ae_params = list(self.autoencoder.parameters())
        if self.kind == "kl" and self.loss.learn_logvar:
            ae_params.append(self.loss.logvar)
        opt_ae = safe_instantiate(self.hparams.optimizer)(ae_params)
        opt_disc = safe_instantiate(self.hparams.disc_optimizer or self.hparams.optimizer)(
            self.loss.discriminator.parameters())
        return [opt_ae, opt_disc]

    # --- validation ----------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_counts = None
        self._val_features = {"real": [], "fake": []}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Deterministic (the KL posterior's mode): L1, PSNR, SSIM, the regulariser, and VQ code counts."""
        x = batch["image"]
        rec, reg, indices = self.forward_train(x, sample=False)
        clipped = rec.clamp(-1, 1)
        n = x.shape[0]
        values = {"val/l1": (x - rec).abs().mean(), "val/psnr": psnr_per_image(x, clipped).mean(),
                  "val/ssim": ssim_per_image(x, clipped).mean()}
        if self.kind == "kl":
            values["val/kl_loss"] = reg.mean()
        else:
            values["val/codebook_loss"] = reg
            counts = code_counts(indices, self.autoencoder.quantize.n_e)
            self._val_counts = counts if self._val_counts is None else self._val_counts + counts
        self.log_dict(values, batch_size=n, sync_dist=True)
        self.log("val/rec_loss", values["val/l1"], batch_size=n, sync_dist=True, prog_bar=True)
        if self.hparams.val_rfid:
            extractor = self.rfid_extractor()
            self._val_features["real"].append(extractor(to_uint8(x))[0].float())
            self._val_features["fake"].append(extractor(to_uint8(clipped))[0].float())

    def rfid_extractor(self):
        """The feature extractor of ``val/rfid`` (built once, on this module's device, outside the state dict)."""
        if self._extractor.module is None:
            self._extractor.module = build_extractor(self.hparams.rfid_extractor)
        return self._extractor.module.to(self.device)

    def on_validation_epoch_end(self) -> None:
        if self._val_features["real"]:
            real, fake = (torch.cat(self._val_features[k]) for k in ("real", "fake"))
            if self.trainer.world_size > 1:
                real, fake = (self.all_gather(f).flatten(0, 1) for f in (real, fake))
            if len(real) > 1:
                fid = feature_metrics(["fid"], fake, real, None)[0]["fid"]
                self.log("val/rfid", float(fid), rank_zero_only=True)
            self._val_features = {"real": [], "fake": []}
        if self._val_counts is None:
            return
        counts = self._val_counts
        if self.trainer.world_size > 1:
            counts = self.all_gather(counts).sum(0)
        stats = codebook_stats(counts)
        self.log_dict({"val/codebook_usage": stats["codebook_usage"], "val/perplexity": stats["perplexity"]})

    # --- checkpoints ---------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        cls = type(self)
        checkpoint[CHECKPOINT_KEY] = {
            "version": lit_diffusion.__version__,
            "model_class": f"{cls.__module__}.{cls.__qualname__}",
            "config": self.run_config,
        }

"""In-training evaluation: FID / KID (and IS when the classifier weights exist) every N steps, logged as curves.

Every ``every_n_steps`` optimizer steps, ``num_samples`` images are drawn from the EMA weights with a fixed
seed and sampler, and scored against the cached features of a dataset split (:mod:`lit_diffusion.metrics`).
Values go to every logger as ``eval/fid``, ``eval/kid`` …, and the time spent as ``eval/seconds`` (total so
far), so the overhead is on the dashboard too.

FID of a few dozen samples is strongly biased upwards (its bias shrinks like 1/M): this is a monitoring curve,
comparable only with itself; the reportable number comes from ``python -m lit_diffusion.evaluate``.  KID is
unbiased and the better small-sample curve.
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from lit_diffusion.callbacks.ema import ema_or_live
from lit_diffusion.errors import UserError
from lit_diffusion.metrics import Reference, build_extractor, dataset_reference, extract, feature_metrics
from lit_diffusion.generation import draw, model_classes
from lit_diffusion.images import to_uint8
from lit_diffusion.models.base import DiffusionModule
from lit_diffusion.sampling import resolve_sampler

LOGGED = {"fid": "fid", "kid_mean": "kid", "is_mean": "is", "precision": "precision", "recall": "recall"}


class Evaluation(Callback):
    """Periodic FID/KID of EMA samples against a dataset split.

    Args:
        every_n_steps: optimizer steps between evaluations (0: never).
        num_samples: generated images per evaluation (M).
        sampler: sampler config (default: the model's); without ``algorithm`` its keys override the model's,
            e.g. ``{steps: 20}``.
        seed: sampling seed, the same at every evaluation.
        metrics: any of fid, kid, is, pr.
        split, ref_n: reference dataset split of the run's data config and its number of images (None: all).
        extractor, extractor_options: feature extractor name in :data:`lit_diffusion.metrics.EXTRACTORS`.
        use_ema: sample from the EMA weights when an :class:`EMA` callback is present.
        prompts: text-to-image models: prompts cycled over the samples.
        best_checkpoint: when set, keep the checkpoint with the lowest FID at this path.
    """

    def __init__(self, every_n_steps: int = 10000, num_samples: int = 1000, sampler: dict | None = None,
                 seed: int = 0, metrics: list[str] = ("fid", "kid"), split: str = "val", ref_n: int | None = None,
                 extractor: str = "inception", extractor_options: dict | None = None, use_ema: bool = True,
                 batch_size: int = 250, best_checkpoint: str | None = None, prompts: list[str] | None = None):
        self.every_n_steps, self.num_samples, self.sampler, self.seed = every_n_steps, num_samples, sampler, seed
        self.metrics, self.split, self.ref_n = list(metrics), split, ref_n
        self.extractor_name, self.extractor_options = extractor, dict(extractor_options or {})
        self.use_ema, self.batch_size = use_ema, batch_size
        self.prompts = None if prompts is None else list(prompts)
        self.best_checkpoint = None if best_checkpoint is None else Path(best_checkpoint)
        self.best_fid = float("inf")
        self.seconds = 0.0
        self.reference_seconds = 0.0
        self.history: list[dict] = []
        self._extractor = self._reference = None

    def prepare(self, data_cfg: dict | None, device: torch.device | str = "cpu") -> Reference:
        """Build the extractor and load (or compute once and cache) the reference features of ``data_cfg``'s split;
        the first evaluation does it when nothing did before (``python -m lit_diffusion.prepare`` does it ahead)."""
        if data_cfg is None:
            raise UserError("the Evaluation callback needs the run's data config (train with lit_diffusion.run)")
        start = time.perf_counter()
        self._extractor = build_extractor(self.extractor_name, **self.extractor_options).to(device)
        self._reference = dataset_reference(self._extractor, data_cfg, self.split, self.ref_n, device)
        self.reference_seconds = time.perf_counter() - start
        return self._reference

    @torch.no_grad()
    def evaluate(self, trainer: L.Trainer, pl_module: DiffusionModule) -> dict:
        if self._reference is None:
            self.prepare((pl_module.run_config or {}).get("data"), pl_module.device)
        start = time.perf_counter()
        model = ema_or_live(trainer, pl_module, self.use_ema)
        sampler = resolve_sampler(model.hparams.sampler, self.sampler) if self.sampler else None
        batches = (to_uint8(result.images) for result in draw(model, self.num_samples, sampler=sampler, seed=self.seed,
                                                              batch_size=self.batch_size, class_labels=model_classes(model),
                                                              prompts=self.prompts))
        fake, logits = extract(self._extractor, batches, pl_module.device)
        values, _ = feature_metrics(self.metrics, fake, self._reference.features, logits,
                                    kid_subset_size=min(1000, self.num_samples))
        self.seconds += time.perf_counter() - start
        logged = {f"eval/{LOGGED[k]}": v for k, v in values.items() if k in LOGGED}
        logged["eval/seconds"] = self.seconds + self.reference_seconds
        for logger in trainer.loggers:
            logger.log_metrics(logged, step=trainer.global_step)
        self.history.append({"step": trainer.global_step, **logged})
        fid = values.get("fid")
        if self.best_checkpoint is not None and fid is not None and fid < self.best_fid:
            self.best_fid = fid
            trainer.save_checkpoint(self.best_checkpoint)
        return logged

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0 and trainer.is_global_zero:
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        """Every process gets rank 0's evaluations, so a run's result (a sweep's objective) is the same in each."""
        self.history = trainer.strategy.broadcast(self.history, src=0)

"""Latent diffusion (Rombach et al. 2022, §3): any framework of the project, diffusing the latents of a frozen
first-stage autoencoder (sgm's ``DiffusionEngine``: ``first_stage_model`` with encode/decode and a scale factor).

Training encodes each batch (KL: a sample of the posterior; VQ: the latent before quantization, quantized
inside decode, as LDM does) and multiplies by the scale factor; sampling runs in latent space (x̂_0 is never
clipped there) and decodes.  The scale factor is fixed (Stable Diffusion's 0.18215) or, with
``scale_by_std``, 1/std of the first training batch's latents (LDM App. D.1: unit-variance latents), computed
once at step 0 on rank 0 and broadcast, kept by checkpoints and therefore not refitted on resume.

With ``cache_latents`` the deterministic part of encoding (KL: the posterior's moments; VQ: the latent before
quantization) is computed once for every training view before the first step (:class:`LatentCache`), so a
training step only draws the posterior sample; what it saves is measured in ``benchmarks/latent_cache.py``.

The first stage is a :class:`~lit_diffusion.frozen.Frozen` part, stored once in the model's checkpoints.  Its
weights are read from their source (:func:`lit_diffusion.autoencoders.sources.load_first_stage`) when the model
is first built; the model's hyper-parameters then keep the autoencoder's kind, diffusers config, source and
SHA-256, so a checkpoint rebuilds it without the source file.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from lit_diffusion.autoencoders.networks import (build_autoencoder, decode, encode, encode_moments,
                                                 latent_from_moments, latent_shape)
from lit_diffusion.autoencoders.sources import load_first_stage
from lit_diffusion.errors import UserError


class LatentCache:
    """First-stage moments of a dataset's images, keyed by the images' bytes.

    Filled once, in a fixed order and batch size (:meth:`fill`), so a cached value does not depend on the batch
    an image later arrives in, and a resumed run refills the same values (resuming stays bit-exact).  Keying by
    content needs nothing from the data pipeline: every deterministic view (a mirrored copy is another view)
    is found, and images that were not cached (validation, new data) are encoded as usual.
    """

    def __init__(self):
        self.entries: dict[bytes, Tensor] = {}

    @staticmethod
    def key(image: Tensor) -> bytes:
        return hashlib.blake2b(image.detach().cpu().contiguous().numpy().tobytes(), digest_size=16).digest()

    @torch.no_grad()
    def fill(self, moments_of: Callable[[Tensor], Tensor], dataset: Dataset, device: torch.device,
             batch_size: int = 64) -> None:
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            images = batch["image"]
            for image, moments in zip(images, moments_of(images.to(device)).cpu()):
                self.entries[self.key(image)] = moments

    def moments(self, images: Tensor, moments_of: Callable[[Tensor], Tensor]) -> Tensor:
        """Cached moments of ``images``; the ones not in the cache are computed by ``moments_of``."""
        found = [self.entries.get(self.key(image)) for image in images]
        missing = [i for i, m in enumerate(found) if m is None]
        if missing:
            for i, moments in zip(missing, moments_of(images[missing]).cpu()):
                found[i] = moments
        return torch.stack(found).to(images.device)


class FirstStage(nn.Module):
    """A frozen autoencoder and its latent scale factor.

    Args:
        source: where the weights come from (``{ckpt: PATH}``, ``{pretrained: FOLDER_OR_ID, subfolder: …}``,
            ``{compvis: PATH, kind: …, config: …}``); read once, when ``config`` is not given yet.
        kind, config: the autoencoder's kind (``kl`` | ``vq``) and diffusers config (filled in from ``source``).
        source_sha256: hash of the source file(s), recorded for provenance.
        scale_factor: a fixed factor (e.g. 0.18215), or None with ``scale_by_std``.
        scale_by_std: fit 1/std of the first training batch's latents at step 0.
        sample_posterior: KL first stages: train on posterior samples (LDM) rather than its mode.
        cache_latents: encode every training view once before training (:class:`LatentCache`).
        image_shape: (C, H, W) of the data.
    """

    def __init__(self, image_shape: list[int], source: Mapping[str, Any] | None = None, kind: str | None = None,
                 config: dict | None = None, source_sha256: str | None = None, scale_factor: float | None = None,
                 scale_by_std: bool = False, sample_posterior: bool = True, cache_latents: bool = False):
        super().__init__()
        if (scale_factor is None) == (not scale_by_std):
            raise UserError("give the first stage exactly one of scale_factor=<number> (e.g. 0.18215) or "
                            "scale_by_std=true (1/std of the first batch's latents)")
        state = None
        if config is None:
            if source is None:
                raise UserError("the first stage needs a source: model.first_stage.source.ckpt=PATH (a lit_diffusion "
                                "autoencoder run), .pretrained=FOLDER_OR_HUB_ID or .compvis=PATH")
            loaded = load_first_stage(source)
            kind, config, state, source_sha256 = loaded.kind, loaded.config, loaded.state_dict, loaded.sha256
        self.spec = {"source": dict(source or {}), "kind": kind, "config": config, "source_sha256": source_sha256,
                     "scale_factor": scale_factor, "scale_by_std": scale_by_std, "sample_posterior": sample_posterior,
                     "cache_latents": cache_latents}
        self.kind, self.sample_posterior = kind, sample_posterior
        self.cache = LatentCache() if cache_latents else None
        self.autoencoder = build_autoencoder(kind, config)
        if state is not None:
            self.autoencoder.load_state_dict(state)
        self.latent_shape = latent_shape(kind, config, tuple(image_shape))
        self.register_buffer("scale_factor", torch.tensor(1.0 if scale_factor is None else float(scale_factor)))
        self.register_buffer("fitted", torch.tensor(not scale_by_std))

    @torch.no_grad()
    def encode(self, images: Tensor, sample: bool | None = None) -> Tensor:
        """Scaled latents of images in [-1, 1] (their cached moments where there are); KL: a posterior sample
        or its mode (``sample``; default ``sample_posterior``)."""
        sample = self.sample_posterior if sample is None else sample
        if self.cache is None:
            return self.scale_factor * encode(self.autoencoder, images, sample=sample)
        return self.scale_factor * latent_from_moments(self.kind, self.cache.moments(images, self.moments), sample)

    def moments(self, images: Tensor) -> Tensor:
        return encode_moments(self.autoencoder, images)

    def fill_cache(self, dataset: Dataset) -> None:
        """``cache_latents``: encode every image of ``dataset`` (the training views) once."""
        if self.cache is not None and not self.cache.entries:
            self.cache.fill(self.moments, dataset, self.scale_factor.device)

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Images of scaled latents."""
        return decode(self.autoencoder, latents / self.scale_factor)

    @torch.no_grad()
    def fit_scale(self, images: Tensor, broadcast=None) -> float:
        """``scale_by_std``: set the factor to 1/std of these images' latents, once; ``broadcast(tensor)`` makes
        every process use rank 0's value."""
        if bool(self.fitted):
            return float(self.scale_factor)
        factor = 1 / encode(self.autoencoder, images, sample=self.sample_posterior).flatten().std()
        if broadcast is not None:
            factor = broadcast(factor)
        self.scale_factor.fill_(float(factor))
        self.fitted.fill_(True)
        return float(self.scale_factor)

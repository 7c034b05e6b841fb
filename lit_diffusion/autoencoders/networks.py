"""First-stage networks: diffusers' ``AutoencoderKL`` (KL-regularised) and ``VQModel`` (vector-quantised).

diffusers is used on purpose rather than a local copy of LDM's ``Encoder``/``Decoder``: it is maintained, it
builds from a plain config dict with no hub access (``from_config``), and its key layout is the one in which
Stable Diffusion and LDM first stages are published, so pretrained weights load without a private mapping
(:mod:`lit_diffusion.autoencoders.sources` converts CompVis ``model.ckpt`` files with diffusers' own converter).

A ``config`` is the keyword arguments of the diffusers class (its ``config.json`` without the ``_`` keys).
``down_block_types``/``up_block_types`` may be left out: one ``DownEncoderBlock2D``/``UpDecoderBlock2D`` per
entry of ``block_out_channels`` is filled in.  LDM's names map as follows:

==========================  ==========================================================================
LDM ``ddconfig`` / model    diffusers
==========================  ==========================================================================
``ch`` × ``ch_mult``        ``block_out_channels``; downsampling factor f = 2^(len(block_out_channels) − 1)
``num_res_blocks``          ``layers_per_block``
``z_channels``              ``latent_channels``
``embed_dim``               VQ: ``vq_embed_dim`` (default ``latent_channels``); KL: must equal ``z_channels``
``n_embed``                 ``num_vq_embeddings``
``double_z``                always true in ``AutoencoderKL`` (mean and log-variance), false in ``VQModel``
``attn_resolutions: []``    the default blocks (no attention inside down/up blocks; the mid block has one)
==========================  ==========================================================================

diffusers is imported on first use: it adds seconds to every ``import lit_diffusion.models`` otherwise.
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from lit_diffusion.errors import UserError

KINDS = ("kl", "vq")
CLASS_NAMES = {"kl": "AutoencoderKL", "vq": "VQModel"}
BLOCK_TYPES = {"down_block_types": "DownEncoderBlock2D", "up_block_types": "UpDecoderBlock2D"}


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise UserError(f"unknown autoencoder kind '{kind}': choose one of {', '.join(KINDS)} "
                        "(kl: diffusers AutoencoderKL, vq: diffusers VQModel)")
    return kind


def autoencoder_class(kind: str) -> type:
    """diffusers' ``AutoencoderKL`` or ``VQModel`` (imported here, on first use)."""
    check_kind(kind)
    if kind == "kl":
        from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
        return AutoencoderKL
    from diffusers.models.autoencoders.vq_model import VQModel
    return VQModel


def constructor_defaults(kind: str) -> dict[str, Any]:
    parameters = inspect.signature(autoencoder_class(kind).__init__).parameters
    return {name: p.default for name, p in parameters.items() if name != "self"}


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def full_config(kind: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """Every constructor argument of the diffusers class, JSON-plain (lists, no tuples): ``config`` over the
    class defaults, block types filled in.  Unknown keys are a :class:`UserError` (a typo would otherwise be
    ignored by diffusers with a warning)."""
    defaults = constructor_defaults(kind)
    config = {k: v for k, v in dict(config).items() if not str(k).startswith("_")}
    if unknown := sorted(set(config) - set(defaults)):
        raise UserError(f"unknown {CLASS_NAMES[kind]} config keys {unknown}; valid keys: {', '.join(sorted(defaults))}")
    out = {**defaults, **config}
    for key, block in BLOCK_TYPES.items():
        if key not in config:
            out[key] = [block] * len(out["block_out_channels"])
    return _plain(out)


def build_autoencoder(kind: str, config: Mapping[str, Any]) -> nn.Module:
    """diffusers' ``AutoencoderKL.from_config(config)`` (kind ``kl``) or ``VQModel.from_config(config)`` (``vq``)."""
    full = full_config(kind, config)
    lengths = {key: len(full[key]) for key in ("block_out_channels", *BLOCK_TYPES)}
    if len(set(lengths.values())) != 1:
        raise UserError(f"{CLASS_NAMES[kind]} config: block_out_channels, down_block_types and up_block_types "
                        f"need the same length, got {lengths} (leave the block types out to fill them in)")
    bad_groups = [c for c in full["block_out_channels"] if c % full["norm_num_groups"]]
    if bad_groups:
        raise UserError(f"{CLASS_NAMES[kind]} config: norm_num_groups={full['norm_num_groups']} must divide every "
                        f"entry of block_out_channels={full['block_out_channels']}")
    return autoencoder_class(kind).from_config(full)


def kind_of(autoencoder: nn.Module) -> str:
    """``"kl"`` or ``"vq"`` for a diffusers autoencoder."""
    name = type(autoencoder).__name__
    for kind, class_name in CLASS_NAMES.items():
        if name == class_name:
            return kind
    raise UserError(f"{name} is not a supported first stage ({', '.join(CLASS_NAMES.values())})")


def downsampling_factor(kind: str, config: Mapping[str, Any]) -> int:
    """f = 2^(number of down blocks − 1): each down block but the last halves the resolution."""
    return 2 ** (len(full_config(kind, config)["block_out_channels"]) - 1)


def latent_channels(kind: str, config: Mapping[str, Any]) -> int:
    """Channels of :func:`encode`'s output: ``latent_channels`` (KL), ``vq_embed_dim`` or ``latent_channels`` (VQ)."""
    full = full_config(kind, config)
    if kind == "vq" and full.get("vq_embed_dim") is not None:
        return int(full["vq_embed_dim"])
    return int(full["latent_channels"])


def latent_shape(kind: str, config: Mapping[str, Any], image_shape) -> tuple[int, int, int]:
    """(C_z, H/f, W/f) of the latents of images of shape (C, H, W)."""
    f = downsampling_factor(kind, config)
    _, height, width = (int(s) for s in image_shape)
    if height % f or width % f:
        raise UserError(f"image size {height}x{width} is not divisible by the autoencoder's downsampling factor "
                        f"f={f}; resize the data (data.image_size) to a multiple of {f}")
    return latent_channels(kind, config), height // f, width // f


def encode(autoencoder: nn.Module, x: Tensor, sample: bool = True) -> Tensor:
    """Latents of images x in [-1, 1]: :func:`latent_from_moments` of :func:`encode_moments`."""
    return latent_from_moments(kind_of(autoencoder), encode_moments(autoencoder, x), sample)


def encode_moments(autoencoder: nn.Module, x: Tensor) -> Tensor:
    """The deterministic part of encoding images x in [-1, 1]: KL: the posterior's (μ, log σ²) stacked on the
    channel axis; VQ: the latent *before* quantization (as LDM does; :func:`decode` quantizes)."""
    if kind_of(autoencoder) == "kl":
        return autoencoder.encode(x).latent_dist.parameters
    return autoencoder.encode(x).latents


def latent_from_moments(kind: str, moments: Tensor, sample: bool = True) -> Tensor:
    """KL: a draw from the posterior N(μ, σ²) (torch's global RNG, which the trainer seeds per step), or its mode
    μ when ``sample=False``; VQ: the moments are the latent."""
    if kind == "vq":
        return moments
    mean, logvar = moments.chunk(2, dim=1)
    if not sample:
        return mean
    std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))  # diffusers' DiagonalGaussianDistribution
    return mean + std * torch.randn(mean.shape, dtype=mean.dtype, device=mean.device)


def decode(autoencoder: nn.Module, z: Tensor) -> Tensor:
    """Images (about [-1, 1], not clipped) from latents; a VQ model snaps z to its codebook first."""
    return autoencoder.decode(z).sample


def quantize(autoencoder: nn.Module, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """VQ only: (straight-through quantized z, codebook vectors e (with gradients to the codebook), code indices
    of shape (B, H, W))."""
    quantized, _, (_, _, indices) = autoencoder.quantize(z)
    indices = indices.reshape(z.shape[0], *z.shape[2:])
    codes = autoencoder.quantize.embedding(indices).permute(0, 3, 1, 2)
    return quantized, codes, indices


def decode_quantized(autoencoder: nn.Module, quantized: Tensor) -> Tensor:
    """VQ only: decode already-quantized latents (what ``VQModel.decode`` does after its quantizer)."""
    spatial = quantized if autoencoder.config.norm_type == "spatial" else None
    return autoencoder.decoder(autoencoder.post_quant_conv(quantized), spatial)


def last_layer(autoencoder: nn.Module) -> Tensor:
    """The decoder's output convolution weight (where the adaptive discriminator weight is measured)."""
    return autoencoder.decoder.conv_out.weight


@torch.no_grad()
def reconstruct(autoencoder: nn.Module, x: Tensor, sample: bool = False) -> Tensor:
    """decode(encode(x)), clipped to [-1, 1] (the KL posterior's mode unless ``sample``)."""
    return decode(autoencoder, encode(autoencoder, x, sample=sample)).clamp(-1, 1)

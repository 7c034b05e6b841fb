"""How well generated images follow their prompts: caption accuracy and CLIP score.

* **Caption accuracy**: the fraction of images that an independent judge (:mod:`lit_diffusion.metrics.judge`,
  trained on the real images of the model's dataset) assigns to what their prompt names, read back from the prompt
  by the dataset's caption generator (a class; both digits in their positions for digit pairs).  Reported against
  the guidance scale with FID, it is the fidelity/alignment trade-off curve of GLIDE (Nichol et al. 2022) and Imagen
  (Saharia et al. 2022).
* **CLIP score** (Hessel et al. 2021; torchmetrics' ``CLIPScore``): 100 × cosine similarity of CLIP's image and text
  embeddings, where CLIP's weights can be read (a hub id with network or cache, or a folder); skipped with a
  message otherwise.

Both take uint8 image batches with the prompt of each image (``update``) and return their values (``compute``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
import transformers
from torch import Tensor
from torchmetrics.multimodal.clip_score import CLIPScore

from lit_diffusion.config import safe_instantiate
from lit_diffusion.errors import UserError
from lit_diffusion.metrics.judge import Judge

TEXT_METRICS = ("caption_accuracy", "clip_score")


class MetricUnavailable(Exception):
    """A metric whose weights cannot be read here; its message says why and how to get them."""


class CaptionAccuracy:
    """Caption accuracy of images generated from ``prompts`` by a model of ``data_config``'s dataset."""

    def __init__(self, data_config: dict, prompts: Sequence[str]):
        captioner = getattr(safe_instantiate(data_config), "captioner", None)
        if captioner is None:
            raise UserError(f"caption_accuracy needs a dataset whose captions name what an image shows "
                            f"(data=fashion_mnist_captions, mnist_captions or mnist_pairs); "
                            f"{data_config.get('_target_')} has no caption generator")
        self.labels = {p: captioner.label_of(p) for p in prompts}
        if unread := [p for p, label in self.labels.items() if label is None]:
            raise UserError(f"caption_accuracy cannot tell what these prompts ask for: {unread[:3]}; write them as the "
                            f"dataset's captions do, e.g. {captioner.prompts()[:2]}")
        self.judge = Judge(data_config, captioner.heads)
        self.correct: dict[str, list[bool]] = defaultdict(list)

    def update(self, images: Tensor, prompts: Sequence[str]) -> None:
        labels = torch.tensor([self.labels[p] for p in prompts])
        for prompt, ok in zip(prompts, self.judge.correct(images.cpu(), labels).tolist()):
            self.correct[prompt].append(ok)

    def compute(self) -> dict:
        everything = [ok for oks in self.correct.values() for ok in oks]
        return {"caption_accuracy": sum(everything) / len(everything), "caption_accuracy_n": len(everything),
                "caption_accuracy_per_prompt": {p: sum(oks) / len(oks) for p, oks in self.correct.items()},
                **self.judge.protocol()}


class ClipScore:
    """torchmetrics' ``CLIPScore`` with CLIP read from ``model`` (hub id or folder); :class:`MetricUnavailable`
    when its weights cannot be read."""

    def __init__(self, model: str, device: torch.device | str = "cpu"):
        def load():
            return transformers.CLIPModel.from_pretrained(model), transformers.CLIPProcessor.from_pretrained(model)

        try:
            self.metric = CLIPScore(model_name_or_path=load).to(device)
        except (OSError, ValueError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise MetricUnavailable(
                f"clip_score skipped: the CLIP weights '{model}' cannot be read here ({reason}); run where the Hugging "
                "Face hub or its cache has them, or pass clip_model=/path/to/folder (a CLIPModel and CLIPProcessor "
                "saved with save_pretrained)") from None
        self.model = model

    def update(self, images: Tensor, prompts: Sequence[str]) -> None:
        rgb = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        self.metric.update(rgb.to(self.metric.device), list(prompts))

    def compute(self) -> dict:
        return {"clip_score": self.metric.compute().item(), "clip_model": self.model}


def build_text_metrics(names: Sequence[str], data_config: dict | None, prompts: Sequence[str] | None,
                       clip_model: str, device: torch.device | str = "cpu") -> tuple[list, list[str]]:
    """The text metrics among ``names`` (fresh accumulators) and the messages of those skipped here."""
    names = [n for n in names if n in TEXT_METRICS]
    if names and not prompts:
        raise UserError(f"{', '.join(names)} score images against their prompts: pass prompt=\"...\" or prompts=FILE "
                        "with a text-to-image checkpoint")
    metrics, skipped = [], []
    if "caption_accuracy" in names:
        if data_config is None:
            raise UserError("caption_accuracy needs the model's dataset (its checkpoint stores none): pass data=NAME")
        metrics.append(CaptionAccuracy(data_config, prompts))
    if "clip_score" in names:
        try:
            metrics.append(ClipScore(clip_model, device))
        except MetricUnavailable as err:
            skipped.append(str(err))
    return metrics, skipped

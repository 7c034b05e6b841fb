"""Captioned datasets made here, deterministically, from real images, and what every captioned DataModule shares.

A captioned DataModule's samples carry ``caption`` (a string) next to ``image``; its batches a list of B
captions.  Two offline sets are built from real images with captions that can be checked:

* class captions (:class:`ClassCaptions`): each image gets one of several templates around a name of its class,
  "a photo of a pullover", "a black and white picture of an ankle boot" (Fashion-MNIST; MNIST digits);
* positional captions (:class:`DigitPairCaptions`): two MNIST digits side by side on one canvas,
  "a 3 on the left and an 8 on the right", "an 8 to the right of a 3" — alignDRAW's two-digit task (Mansimov et al.
  2016), where the model must read word order, not only which digits are named.

Each caption generator also reads a caption back into its label (:meth:`ClassCaptions.label_of`), which is what
caption accuracy checks generated images against.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
from torch.utils.data import Subset

CAPTION_KEY = "caption"
"""The sample key of captions."""


class ClassCaptions:
    """Captions "``template`` around a name of the class", template and name drawn per image with a fixed seed.

    Args:
        names: per class, the names it is called by (with their article: "an ankle boot"); names of different
            classes must not contain one another as whole words.
        templates: caption templates with one ``{}``.
    """

    def __init__(self, names: Sequence[Sequence[str]], templates: Sequence[str]):
        self.names, self.templates = [list(n) for n in names], list(templates)
        self.heads = (len(self.names),)
        self._patterns = [[re.compile(rf"\b{re.escape(n)}\b", re.IGNORECASE) for n in ns] for ns in self.names]

    def captions(self, labels: Sequence[int], seed: int = 0) -> list[str]:
        rng = np.random.default_rng(seed)
        templates = rng.integers(len(self.templates), size=len(labels))
        picks = rng.integers(1 << 30, size=len(labels))
        return [self.templates[t].format(self.names[y][p % len(self.names[y])])
                for y, t, p in zip(np.asarray(labels).tolist(), templates.tolist(), picks.tolist())]

    def label_of(self, caption: str) -> int | None:
        """The class a caption names, or None when it names none or several."""
        found = {y for y, patterns in enumerate(self._patterns) if any(p.search(caption) for p in patterns)}
        return found.pop() if len(found) == 1 else None

    def prompts(self, template: int = 0) -> list[str]:
        """One caption per class (its first name in ``templates[template]``), in class order."""
        return [self.templates[template].format(names[0]) for names in self.names]


FASHION_MNIST = ClassCaptions(
    [["a top"], ["a pair of trousers", "trousers"], ["a pullover", "a sweater"], ["a dress"], ["a coat"],
     ["a sandal"], ["a shirt"], ["a sneaker"], ["a bag", "a handbag"], ["an ankle boot"]],
    ["a photo of {}", "a black and white picture of {}", "{} on a dark background", "a small grayscale image of {}",
     "a product photo of {}"])
"""Fashion-MNIST's ten classes in five templates."""

DIGIT_NAMES = ["a 0", "a 1", "a 2", "a 3", "a 4", "a 5", "a 6", "a 7", "an 8", "a 9"]
DIGIT_WORDS = ["a zero", "a one", "a two", "a three", "a four", "a five", "a six", "a seven", "an eight", "a nine"]

MNIST = ClassCaptions([[n, w] for n, w in zip(DIGIT_NAMES, DIGIT_WORDS)],
                      ["a photo of {}", "{} written by hand", "a black and white picture of {}", "a drawing of {}"])
"""MNIST digits, named by numeral or word, in four templates."""


class DigitPairCaptions:
    """Positional captions of two digits: templates with ``{left}`` and ``{right}`` (in either order), read back
    exactly; the label of a pair is 10 × left + right (two heads of 10 classes)."""

    heads = (10, 10)

    def __init__(self, templates: Sequence[str] = ("{left} on the left and {right} on the right",
                                                   "{right} on the right and {left} on the left",
                                                   "{left} to the left of {right}",
                                                   "{right} to the right of {left}")):
        self.templates = list(templates)
        digit = "an? (?P<{}>[0-9])"
        self._patterns = [re.compile("^" + re.escape(t).replace(r"\{left\}", digit.format("left"))
                                     .replace(r"\{right\}", digit.format("right")) + "$", re.IGNORECASE)
                          for t in self.templates]

    def caption(self, left: int, right: int, template: int = 0) -> str:
        return self.templates[template].format(left=DIGIT_NAMES[left], right=DIGIT_NAMES[right])

    def captions(self, labels: Sequence[int], seed: int = 0) -> list[str]:
        templates = np.random.default_rng(seed).integers(len(self.templates), size=len(labels))
        return [self.caption(y // 10, y % 10, t) for y, t in zip(np.asarray(labels).tolist(), templates.tolist())]

    def label_of(self, caption: str) -> int | None:
        """10 × left + right of a caption in one of the templates, else None."""
        for pattern in self._patterns:
            if match := pattern.match(caption.strip()):
                return 10 * int(match["left"]) + int(match["right"])
        return None

    def prompts(self, template: int = 0) -> list[str]:
        """Ten pairs covering every digit on each side: (0, 5), (1, 6), … (9, 4)."""
        return [self.caption(d, (d + 5) % 10, template) for d in range(10)]


def split_captions(dataset) -> list[str] | None:
    """The captions of a split's dataset (an ``ImageDataset`` or a ``Subset`` of one), or None."""
    indices = None
    if isinstance(dataset, Subset):
        dataset, indices = dataset.dataset, dataset.indices
    values = getattr(dataset, "labels", None)
    captions = values.get(CAPTION_KEY) if isinstance(values, Mapping) else None
    if captions is None:
        return None
    return [str(captions[i]) for i in (range(len(captions)) if indices is None else indices)]


def training_captions(datamodule) -> list[str] | None:
    """The training captions of a DataModule (what a trained text encoder's tokenizer is fitted on): its own
    ``captions()`` when it has one (streamed shards), else its training split's, or None."""
    if datamodule is None:
        return None
    if hasattr(datamodule, "captions"):
        return datamodule.captions()
    datamodule.setup("fit")
    return split_captions(datamodule.train_set.dataset)

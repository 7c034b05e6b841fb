"""Independent judges of generated images: a small CNN trained once on a dataset's real training images, cached.

Caption accuracy (text-to-image) asks such a judge whether a generated image shows what its caption names: the
class for class captions, both digits in their positions for digit pairs (one head per position).  The judge is
trained with a fixed seed on the training split of the model's own data config and cached by that config, so
every evaluation of a model judges with the same network; its accuracy on the held-out split (real images) is the
ceiling a generator can reach and is recorded with every number.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lit_diffusion.config import safe_instantiate
from lit_diffusion.errors import UserError
from lit_diffusion.files import atomic_write
from lit_diffusion.metrics.images import cache_fields
from lit_diffusion.metrics.reference import cache_dir, reference_id

VERSION = 2
"""2: initial weights seeded too (1 seeded the batches only)."""


class Classifier(nn.Module):
    """Two conv-ReLU-maxpool stages (32, 64 channels), a 64-d feature layer and a linear head (the MNIST judge of
    the benchmarks, for any square size divisible by 4, channel count and number of outputs)."""

    def __init__(self, image_size: int = 28, channels: int = 1, outputs: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * (image_size // 4) ** 2, 64), nn.ReLU())
        self.head = nn.Linear(64, outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def split_targets(labels: Tensor, heads: Sequence[int]) -> Tensor:
    """Labels as one class per head (B, len(heads)): the mixed-radix digits of the label (10 × left + right → (left,
    right) for heads (10, 10))."""
    digits = []
    for size in reversed(heads):
        digits.append(labels % size)
        labels = labels // size
    return torch.stack(digits[::-1], dim=1)


class Judge:
    """A :class:`Classifier` with one head per entry of ``heads`` on ``data_config``'s images, trained ``epochs``
    epochs (batch 128, Adam 1e-3, seed 0) on the training split or read from the cache."""

    def __init__(self, data_config: dict, heads: Sequence[int], epochs: int = 2):
        self.heads = tuple(heads)
        data = safe_instantiate({**data_config, "batch_size": 128})
        fields = {"judge": VERSION, "heads": list(self.heads), "epochs": epochs, **cache_fields(data_config)}
        self.path = cache_dir().parent / "judges" / f"{reference_id(fields)}.pt"
        with torch.random.fork_rng():  # initial weights and batches from seed 0, the caller's RNG untouched
            torch.manual_seed(0)
            self.net = Classifier(data.image_size, data.channels, sum(self.heads))
            if self.path.is_file():
                stored = torch.load(self.path, map_location="cpu", weights_only=True)
                self.net.load_state_dict(stored["state_dict"])
                self.held_out_accuracy, self.cached = stored["held_out_accuracy"], True
            else:
                self.held_out_accuracy, self.cached = self._train(data, epochs), False
                state = {"state_dict": self.net.state_dict(), "held_out_accuracy": self.held_out_accuracy,
                         "fields": json.dumps(fields, default=str)}
                atomic_write(self.path, lambda file: torch.save(state, file))
        self.net.eval()

    def _train(self, data, epochs: int) -> float | None:
        data.setup("fit")
        opt = torch.optim.Adam(self.net.parameters(), 1e-3)
        for _ in range(epochs):
            for batch in data.train_dataloader():
                logits = self.net(batch["image"]).split(self.heads, dim=1)
                targets = split_targets(batch["label"].long(), self.heads)
                loss = sum(nn.functional.cross_entropy(l, t) for l, t in zip(logits, targets.unbind(1)))
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.net.eval()
        if data.val_set is None:
            return None
        correct = [self.correct(b["image"], b["label"].long()) for b in
                   torch.utils.data.DataLoader(data.val_set, batch_size=500)]
        return torch.cat(correct).float().mean().item()

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        """One class per head (B, len(heads)) of images in [-1, 1] or uint8."""
        if images.dtype == torch.uint8:
            images = images.float() / 127.5 - 1
        return torch.stack([l.argmax(1) for l in self.net(images.float()).split(self.heads, dim=1)], dim=1)

    def correct(self, images: Tensor, labels: Tensor) -> Tensor:
        """Whether each image shows its label (every head right)."""
        return (self.predict(images) == split_targets(labels.to(images.device).long(), self.heads)).all(1)

    def protocol(self) -> dict:
        return {"judge": f"a small CNN ({sum(self.heads)} outputs in heads {list(self.heads)}) trained on the real "
                         "training split, seed 0", "judge_held_out_accuracy": self.held_out_accuracy,
                "judge_cache": str(self.path)}


def classification_accuracy(outputs: Tensor, labels: Tensor | None, data_cfg: dict) -> dict:
    """Classification accuracy as SR3 and Palette report it (a pretrained classifier's top-1 accuracy on the
    outputs), with this project's judge trained on the data's real training images standing in for their
    ImageNet ResNet-50; its accuracy on the held-out real images is recorded beside it."""
    classes = safe_instantiate(data_cfg).num_classes
    if labels is None or classes is None:
        raise UserError("metrics=[accuracy] needs class labels: the data has none (drop accuracy from metrics)")
    judge = Judge(data_cfg, heads=(classes,))
    return {"accuracy": judge.correct(outputs, labels).float().mean().item(),
            "judge_held_out_accuracy": judge.held_out_accuracy}

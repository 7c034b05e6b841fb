"""An independent MNIST judge for the benchmarks: a small CNN trained on the model's own training split.

It scores a batch of samples by the Fréchet distance between its 64-d penultimate features of the samples
and of the held-out digits ("classifier FD": FID's recipe with an MNIST network instead of Inception), the
unbiased KID on the same features (FD's small-n bias is large at a few hundred samples, KID has none), its
mean confidence, and, for guided sampling, its accuracy on the requested classes.  It is trained with a
fixed seed, so every benchmark run judges with the same network.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_diffusion.config import safe_instantiate
from lit_diffusion.metrics import judge
from lit_diffusion.metrics.scores import feature_metrics


class Judge:
    """The project's MNIST judge (:class:`lit_diffusion.metrics.judge.Judge`, one 10-class head, trained once on
    ``data_config``'s training split and cached); scores samples against the held-out split in its features."""

    def __init__(self, data_config: dict, epochs: int = 3):
        trained = judge.Judge(data_config, heads=(10,), epochs=epochs)
        self.net, self.epochs, self.held_out_accuracy = trained.net, epochs, trained.held_out_accuracy
        data = safe_instantiate({**data_config, "batch_size": 128})
        data.setup("fit")
        self.train_set = data.train_set
        val = next(iter(torch.utils.data.DataLoader(data.val_set, batch_size=len(data.val_set))))
        with torch.no_grad():
            self.real = self.net.features(val["image"])

    @torch.no_grad()
    def score(self, images: Tensor) -> dict:
        """Classifier FD, KID against the held-out digits, and mean confidence of ``images`` in [−1, 1]."""
        feats = self.net.features(images)
        values, _ = feature_metrics(["fid", "kid"], feats.double(), self.real.double(), None)
        confidence = self.net.head(feats).softmax(-1).max(-1).values.mean().item()
        return {"classifier_fd": round(values["fid"], 3), "classifier_kid": round(values["kid_mean"], 1),
                "confidence": round(confidence, 4)}

    @torch.no_grad()
    def accuracy(self, images: Tensor, labels: Tensor) -> float:
        return (self.net(images).argmax(-1) == labels).float().mean().item()

    def real_digits(self, n: int, repeats: int = 10) -> tuple[dict, dict]:
        """Scores of ``repeats`` random sets of ``n`` training digits: their mean (the metrics' floor at this n —
        real data the judge was trained on) and standard deviation (the metrics' sampling noise at this n)."""
        generator = torch.Generator().manual_seed(0)
        scores = [self.score(torch.stack([self.train_set[i]["image"] for i in
                                          torch.randperm(len(self.train_set), generator=generator)[:n].tolist()]))
                  for _ in range(repeats)]
        values = {k: torch.tensor([s[k] for s in scores], dtype=torch.float64) for k in scores[0]}
        return ({k: round(v.mean().item(), 3) for k, v in values.items()},
                {k: round(v.std().item(), 3) for k, v in values.items()})

    def protocol(self) -> str:
        return (f"judge: a small CNN trained {self.epochs} epochs on the model's training split (held-out accuracy "
                f"{self.held_out_accuracy:.3f}); FD and KID on its 64-d features vs {len(self.real)} held-out digits")

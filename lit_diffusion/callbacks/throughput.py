"""The batch size of a training batch, for Lightning's :class:`~lightning.pytorch.callbacks.ThroughputMonitor`.

``+callbacks@callbacks.throughput=throughput`` adds the monitor to a run (``configs/callbacks/throughput.yaml``):
batches/s, samples/s and elapsed time per step go to the loggers (``train|device/samples_per_sec`` …).
"""

from __future__ import annotations

from typing import Any

import torch


def batch_size(batch: Any) -> int:
    """Items in a batch: the first dimension of its ``image`` (a dict batch) or of the batch itself (a tensor)."""
    image = batch["image"] if isinstance(batch, dict) else batch
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"ThroughputMonitor: a batch must be a tensor or a dict with an 'image' tensor, got "
                        f"{type(batch).__name__}")
    return image.shape[0]

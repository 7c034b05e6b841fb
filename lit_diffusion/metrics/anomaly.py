"""Anomaly detection metrics, from torchmetrics.

- Image level: AUROC and AUPRC (average precision) of the per-image scores, anomalous images positive.
- Pixel level: AUROC and AUPRC of the anomaly maps against the masks, all pixels of all images pooled (the
  MVTec AD protocol, Bergmann et al. 2019), and Dice and IoU of the map thresholded at the threshold that
  maximises the pooled Dice (the "best possible Dice" ⌈Dice⌉ of Baur et al. 2021, AnoDDPM's Dice; an
  upper bound that needs the masks to choose the threshold).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.classification import (binary_auroc, binary_average_precision, binary_f1_score,
                                                    binary_jaccard_index, binary_precision_recall_curve)

EXACT_PIXELS = 20_000_000
"""Above this many pixels, pixel AUROC/AUPRC use 1,000 binned thresholds (torchmetrics' constant-memory mode)."""
THRESHOLDS = 256
"""Candidate thresholds for the best Dice: quantiles of the anomaly map's values."""


def image_metrics(scores: Tensor, targets: Tensor) -> dict:
    """AUROC and AUPRC of ``scores`` (higher = more anomalous) for binary ``targets`` (1 = anomalous); empty
    when only one class is present."""
    targets = targets.long().flatten()
    anomalous = int(targets.sum())
    counts = {"n_normal": len(targets) - anomalous, "n_anomalous": anomalous}
    if anomalous in (0, len(targets)):
        return counts
    scores = scores.double().flatten()
    return {"image_auroc": binary_auroc(scores, targets).item(),
            "image_auprc": binary_average_precision(scores, targets).item(), **counts}


def pixel_metrics(maps: Tensor, masks: Tensor) -> dict:
    """Pixel AUROC / AUPRC and the best Dice with its IoU and threshold, for anomaly ``maps`` in [0, 1] and
    binary ``masks`` of the same shape (pooled over images); empty when the masks are all 0 or all 1."""
    preds, target = maps.double().flatten(), masks.flatten().round().long()
    if preds.min() < 0 or preds.max() > 1:
        raise ValueError("anomaly maps must lie in [0, 1] (torchmetrics would read other values as logits)")
    positive = int(target.sum())
    counts = {"pixels": len(target), "anomalous_pixels": positive}
    if positive in (0, len(target)):
        return counts
    binned = None if len(preds) <= EXACT_PIXELS else 1000
    sample = preds[:: max(1, len(preds) // 1_000_000)]
    grid = torch.quantile(sample, torch.linspace(0, 1, THRESHOLDS, dtype=torch.float64)).unique()
    precision, recall, thresholds = binary_precision_recall_curve(preds, target, thresholds=grid)
    dice = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    threshold = float(thresholds[dice[:-1].argmax()])
    flagged = (preds >= threshold).long()  # the curve's convention (torchmetrics' `threshold=` uses >)
    return {"pixel_auroc": binary_auroc(preds, target, thresholds=binned).item(),
            "pixel_auprc": binary_average_precision(preds, target, thresholds=binned).item(),
            "dice": binary_f1_score(flagged, target).item(), "iou": binary_jaccard_index(flagged, target).item(),
            "threshold": threshold, **counts}

"""Semantic segmentation metrics, from torchmetrics: per-class IoU and Dice over all pixels pooled, their
means over the classes (mIoU, mean Dice; Baranchuk et al. 2022 average IoU over every class, background
included), and pixel accuracy."""

from __future__ import annotations

from torch import Tensor
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score, multiclass_jaccard_index


def segmentation_metrics(predicted: Tensor, target: Tensor, classes: int) -> dict:
    """mIoU, mean Dice, their per-class values and pixel accuracy of label maps ``predicted`` vs ``target``."""
    preds, labels = predicted.flatten().long(), target.flatten().long()
    iou = multiclass_jaccard_index(preds, labels, classes, average="none")
    dice = multiclass_f1_score(preds, labels, classes, average="none")
    return {"miou": iou.mean().item(), "dice": dice.mean().item(), "iou_per_class": iou.tolist(),
            "dice_per_class": dice.tolist(),
            "pixel_accuracy": multiclass_accuracy(preds, labels, classes, average="micro").item()}

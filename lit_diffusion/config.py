"""Instantiating configs safely.

Model configs travel inside checkpoints, so building objects from them must not run arbitrary code: a
``_target_`` is only followed when it lies under one of :data:`TRUSTED_PREFIXES`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

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


class Range(NamedTuple):
    """A config value's type and valid range (``valid`` as a test, ``words`` as the message says it)."""

    key: str
    kind: type
    valid: Callable[[Any], bool]
    words: str


def positive_int(key: str) -> Range:
    return Range(key, int, lambda v: v >= 1, "positive")


def positive(key: str) -> Range:
    return Range(key, float, lambda v: v > 0, "positive")


def check_ranges(cfg: DictConfig, ranges: Sequence[Range]) -> None:
    """One :class:`UserError` for the first of ``ranges`` whose value in ``cfg`` is of the wrong type or out of
    range (None: not given, not checked) — so that a bad value fails at once, not deep inside torch or Lightning."""
    for key, kind, valid, words in ranges:
        value = OmegaConf.select(cfg, key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) or not valid(value):
            raise UserError(f"{key}={value} must be {'an integer' if kind is int else 'a number'} {words}")

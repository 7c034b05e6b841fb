"""The one wrapper of every Hydra entry point (``run``, ``sample``, ``evaluate``, ``likelihood``, ``report``)."""

from __future__ import annotations

from typing import Callable

import hydra
import torch
from omegaconf import DictConfig

from lit_diffusion.config import to_plain
from lit_diffusion.errors import exit_on_user_error


def entry_point(config_name: str) -> Callable[[Callable[[DictConfig], object]], Callable[[], None]]:
    """``main = entry_point("sample")(sample)``: Hydra's main over ``configs/<config_name>.yaml``, a
    :class:`~lit_diffusion.errors.UserError` as one message and exit status 2 (every value the user must still
    give, ``???`` in the config, named in one message before anything starts), and flushed denormals.  The
    function's return value is the job's (what a sweeper such as Optuna reads in a multirun)."""

    def wrap(fn: Callable[[DictConfig], object]) -> Callable[[], None]:
        @hydra.main(version_base="1.3", config_path="configs", config_name=config_name)
        @exit_on_user_error
        def main(cfg: DictConfig) -> object:
            to_plain(cfg)
            torch.set_flush_denormal(True)  # subnormal floats slow CPU kernels by 4-10x (benchmarks/)
            return fn(cfg)

        return main

    return wrap

"""diffusers' ``UNet2DModel`` as a lit_diffusion network: the adapter behind converted published pipelines
(:mod:`lit_diffusion.conversion`).

Like k-diffusion's ``external.py``, a foreign network is adapted without touching its weights: its input is
the preconditioned x_t = c_in x and its time argument the preconditioning's c_noise, which for the discrete VP
process is the timestep index t ∈ [0, T − 1] that diffusers' schedulers pass (fractional t between grid
points interpolates the sinusoidal embedding).  The wrapped module keeps diffusers' key layout under
``unet.``, so published ``diffusion_pytorch_model.safetensors`` files load as they are.

This module is not imported by :mod:`lit_diffusion.networks` (importing diffusers costs seconds); configs name
it by its full path, ``lit_diffusion.networks.diffusers_unet.DiffusersUNet``.
"""

from __future__ import annotations

from typing import Any, Mapping

from diffusers import UNet2DModel
from torch import Tensor, nn

from lit_diffusion.errors import UserError


class DiffusersUNet(nn.Module):
    """``UNet2DModel.from_config(config)``, called as ``network(x_t, c_noise, cond)``.

    Args:
        config: the ``config.json`` of a diffusers ``UNet2DModel`` (``_`` keys allowed; unknown keys dropped by
            diffusers).  Unconditional: ``UNet2DModel`` has no vector / concat / cross-attention routes.
    """

    def __init__(self, config: Mapping[str, Any], vector_dim: int | None = None, concat_channels: int = 0,
                 context_dim: int | None = None):
        super().__init__()
        if vector_dim or concat_channels or context_dim:
            raise UserError("a diffusers UNet2DModel is unconditional here: it has no vector / concat / "
                            "cross-attention route for a conditioner; use conditioner=none")
        self.unet = UNet2DModel.from_config(dict(config))
        self.out_channels = self.unet.config.out_channels

    def forward(self, x: Tensor, c_noise: Tensor, cond: Mapping[str, Tensor] | None = None) -> Tensor:
        return self.unet(x, c_noise).sample

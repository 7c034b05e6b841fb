"""Lightning strategies whose arguments are classes, built from the names a Hydra config can hold.

``trainer=fsdp`` (configs/trainer/fsdp.yaml) builds its strategy with :func:`fsdp`: Fully Sharded Data Parallel
(Zhao et al. 2023, PyTorch FSDP) shards parameters, gradients and optimizer state over the GPUs, with one FSDP
unit per UNet block, so networks too large for DDP's per-GPU copy (LDM's 274M-parameter UNet and larger) train.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from lightning.pytorch.strategies import FSDPStrategy
from torch.distributed.fsdp import MixedPrecision

from lit_diffusion.config import trusted_class

UNET_BLOCKS = ("lit_diffusion.networks.unet.ResBlock", "lit_diffusion.networks.unet.AttentionBlock",
               "lit_diffusion.networks.unet.SpatialTransformer")


class DiffusionFSDPStrategy(FSDPStrategy):
    """Lightning's FSDP with every buffer left in its own dtype, under every precision.

    Lightning's FSDP precision plugin casts buffers to the compute dtype (bf16 under ``bf16-mixed``) for good. The
    noise schedule's tables are float64 buffers, and bf16's 8-bit mantissa rounds ᾱ_t = 0.9999 to 1 (σ_t to 0).
    ``buffer_dtype=None`` tells FSDP not to cast them. Found on an H200: the run stopped at the first EMA update,
    whose buffers were bf16 (then, with float32 forced, float32) against the average's float64.
    """

    @property
    def mixed_precision_config(self) -> MixedPrecision | None:
        config = super().mixed_precision_config
        return None if config is None else dataclasses.replace(config, buffer_dtype=None)


def fsdp(wrap: Sequence[str] = UNET_BLOCKS, activation_checkpointing: Sequence[str] = (),
         state_dict_type: str = "full", **kwargs) -> FSDPStrategy:
    """Lightning's :class:`FSDPStrategy` with every module of the ``wrap`` classes its own FSDP unit.

    Args:
        wrap: dotted names of the module classes to wrap (auto-wrap policy); trusted ``lit_diffusion.``/``torch.nn.``
            classes only, as everywhere in configs.
        activation_checkpointing: classes whose activations FSDP recomputes in the backward pass (an alternative
            to the UNet's own ``network.checkpoint``; do not use both).
        state_dict_type: "full": checkpoints are consolidated on rank 0 into the usual single file, which
            ``sample``/``evaluate``/resume read unchanged; "sharded": one file per rank (faster to write, but only
            FSDP reads it back).
        kwargs: other :class:`FSDPStrategy` arguments (``sharding_strategy``, ``cpu_offload``, …).
    """
    return DiffusionFSDPStrategy(auto_wrap_policy={trusted_class(name) for name in wrap},
                        activation_checkpointing_policy={trusted_class(n) for n in activation_checkpointing} or None,
                        state_dict_type=state_dict_type, **kwargs)

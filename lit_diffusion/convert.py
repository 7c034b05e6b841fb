"""Conversion entry point: a published diffusers pipeline → a lit_diffusion checkpoint
(:mod:`lit_diffusion.conversion`), on which ``sample``, ``evaluate`` and ``likelihood`` run unchanged.

    python -m lit_diffusion.convert source=diffusers:CompVis/ldm-celebahq-256 out=ldm_celebahq.ckpt
    python -m lit_diffusion.convert source=diffusers:google/ddpm-cifar10-32 out=ddpm_cifar10.ckpt
    python -m lit_diffusion.convert source=/path/to/pipeline_folder out=model.ckpt [scale_factor=1.0]
"""

from __future__ import annotations

from omegaconf import DictConfig

from lit_diffusion.cli import entry_point
from lit_diffusion.conversion import convert_pipeline, parameter_count, save_model


def convert(cfg: DictConfig) -> None:
    model = convert_pipeline(str(cfg.source), cfg.scale_factor, cfg.revision)
    out = save_model(model, cfg.out)
    info = model.run_config["conversion"]
    latent = "" if info["scale_factor"] is None else f", latents {tuple(model.sample_shape)} × scale {info['scale_factor']:g}"
    print(f"converted {info['pipeline']} from {info['source']}: UNet {parameter_count(model) / 1e6:.1f}M parameters"
          f"{latent}, default sampler {model.hparams.sampler['algorithm']}; wrote {out}\n"
          f"  python -m lit_diffusion.sample ckpt={out} n=16\n"
          f"  python -m lit_diffusion.evaluate ckpt={out} data=<its dataset> n=50000")


main = entry_point("convert")(convert)

if __name__ == "__main__":
    main()

"""Sampling entry point: ``python -m lit_diffusion.sample ckpt=PATH [n=64] [sampler=ddim] [sampler.steps=N]``.

Loads a checkpoint (EMA weights unless ``weights=raw``), draws ``n`` images (image i from seed (seed, i),
whatever the batch size) and writes ``grid.png`` plus the individual images (``format=png``) or
``samples.npz`` (``format=npz``).  Guidance: ``class_labels=[0,1,...] guidance_scale=W`` (classifier-free,
class-conditional models), ``class_labels=[...] classifier=CLASSIFIER.ckpt guidance_scale=S`` (classifier
guidance), or ``guider=cfg|classifier guider.scale=...``.  Text-to-image: ``prompt="a 3 on the left and an 8 on
the right" guidance_scale=4``, or ``prompts=FILE`` (one per line): the n images are split evenly over the prompts,
one prompt per grid row, and ``prompts.txt`` lists each image's prompt.
"""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.progress import Progress

from lit_diffusion.checkpoint import model_from_checkpoint
from lit_diffusion.cli import entry_point
from lit_diffusion.config import to_plain
from lit_diffusion.generation import build_guider, cycled_prompts, draw, guider_spec, model_classes, read_prompts
from lit_diffusion.images import check_format, write_samples
from lit_diffusion.sampling import num_sampler_steps, resolve_sampler


def sample(cfg: DictConfig) -> dict:
    check_format(cfg.format)
    model = model_from_checkpoint(cfg.ckpt, cfg.weights, cfg.device)
    sampler = resolve_sampler(model.hparams.sampler, to_plain(cfg.sampler))
    guider = build_guider(guider_spec(to_plain(cfg.guider), cfg.guidance_scale, cfg.classifier), cfg.weights, cfg.device)
    labels = list(cfg.class_labels) if cfg.class_labels is not None else model_classes(model)
    prompts = read_prompts(cfg.prompt, to_plain(cfg.prompts))
    per_prompt = -(-cfg.n // len(prompts)) if prompts else 1
    batches = []
    with Progress() as progress:
        results = draw(model, cfg.n, sampler=sampler, seed=cfg.seed, batch_size=cfg.batch_size,  # checks them now
                       class_labels=labels, prompts=prompts, per_prompt=per_prompt, guider=guider,
                       callback=lambda *_: progress.advance(task))
        steps = num_sampler_steps(model.process, sampler) * -(-cfg.n // cfg.batch_size)
        task = progress.add_task(f"sampling {cfg.n} images ({sampler['algorithm']})", total=steps)
        for result in results:
            batches.append(result.images)
    images = torch.cat(batches)
    out = Path(cfg.out) if cfg.out else Path(HydraConfig.get().runtime.output_dir)
    grid = write_samples(images, out, cfg.format, cfg.nrow or (per_prompt if prompts and len(prompts) > 1 else None))
    if prompts:
        (out / "prompts.txt").write_text("\n".join(cycled_prompts(prompts, 0, cfg.n, per_prompt)) + "\n")
    print(f"wrote {cfg.n} samples to {out} (grid: {grid}); sampler {sampler['algorithm']}, NFE per image {result.nfe}, "
          f"guider {guider.name}" + (f" (scale {guider.scale})" if guider.scale is not None else ""))
    return {"grid": str(grid), "nfe": result.nfe, "out": str(out)}


main = entry_point("sample")(sample)

if __name__ == "__main__":
    main()

"""Record pre-refactor samples (commit e1597fd) for tests/test_regression.py.

Tiny networks of ddpm_mnist / edm_mnist / iddpm_mnist, built from the experiment configs and perturbed with
seeded noise (so zero-initialised layers are not zero), sampled with the experiment's default sampler from a
stored standard-normal start z and a seeded generator for the per-step noise.
"""
import torch
from hydra import compose, initialize_config_module
from lit_diffusion.run import build_model
from lit_diffusion.sampling import generate
import lit_diffusion.processes.base as pb

TINY = ["network.base_channels=8", "network.channel_mult=[1,2]", "network.num_res_blocks=1",
        "network.attention_resolutions=[14]"]
out = {}
for key in ["ddpm_mnist", "ddpm_mnist_noclip", "edm_mnist", "iddpm_mnist"]:
    name = key.replace("_noclip", "")
    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={name}", *TINY], return_hydra_config=False)
    torch.manual_seed(0)
    cfg.paths.output_dir = "/tmp/x"; model = build_model(cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.network.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    z = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    sampler = dict(model.hparams.sampler)
    if key.endswith("noclip"): sampler["clip_denoised"] = False
    x_T = model.process.prior_std * z
    orig = pb.DiffusionProcess.prior_sample
    pb.DiffusionProcess.prior_sample = lambda self, shape, generator=None: x_T.clone()
    try:
        res = generate(model.denoiser(None), model.process, (4, 1, 28, 28), sampler,
                       generator=torch.Generator().manual_seed(3))
    finally:
        pb.DiffusionProcess.prior_sample = orig
    print(key, sampler, res.nfe, res.images.abs().mean())
    out[key] = {"network": {k: v.clone() for k, v in model.network.state_dict().items()}, "z": z,
                 "images": res.images.clone(), "nfe": res.nfe, "sampler": str(sampler)}
torch.save(out, "tests/data/regression_e1597fd.pt")

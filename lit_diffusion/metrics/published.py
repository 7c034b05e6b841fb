"""Published results that lit_diffusion's experiments are compared with (unconditional unless stated).

Each row cites its paper and table; ``family`` links it to our experiments (``ddpm_mnist`` → ``ddpm``) and
``experiment`` names the config that reproduces its setup, where one exists.  FID on CIFAR-10 is 50k samples
against the training set; numbers are as printed in the papers.
"""

from __future__ import annotations

PUBLISHED: list[dict] = [
    # family, model, dataset, metric, value, sampler, nfe, experiment, citation
    *[dict(family="ddpm", model="DDPM", dataset="CIFAR-10", metric=m, value=v, sampler="ancestral", nfe=1000,
           experiment="ddpm_cifar10", citation="Ho et al. 2020, Table 1") for m, v in (("fid", 3.17), ("is", 9.46))],
    *[dict(family="ddim", model="DDIM (η=0)", dataset="CIFAR-10", metric="fid", value=v, sampler="ddim", nfe=s,
           experiment="ddpm_cifar10", citation="Song, Meng & Ermon 2021, Table 1")
      for s, v in ((10, 13.36), (20, 6.84), (50, 4.67), (100, 4.16), (1000, 4.04))],
    *[dict(family="ncsn", model="NCSN", dataset="CIFAR-10", metric=m, value=v, sampler="langevin", nfe=1000,
           experiment="ncsn_cifar10", citation="Song & Ermon 2019, Table 1") for m, v in (("fid", 25.32), ("is", 8.87))],
    *[dict(family="ncsnv2", model="NCSNv2", dataset="CIFAR-10", metric=m, value=v, sampler="langevin", nfe=1160,
           experiment="ncsnv2_cifar10", citation="Song & Ermon 2020, Table 1") for m, v in (("fid", 10.87), ("is", 8.40))],
    *[dict(family="sde", model=model, dataset="CIFAR-10", metric=m, value=v, sampler="pc", nfe=2000,
           experiment=exp, citation="Song et al. 2021 (score SDE), Table 3")
      for model, exp, fid_, is_ in (("DDPM++ cont. (VP)", "sde_vp_cifar10", 2.55, 9.58),
                                    ("DDPM++ cont. (sub-VP)", "sde_subvp_cifar10", 2.61, 9.56),
                                    ("NCSN++ cont. (VE)", "sde_ve_cifar10", 2.38, 9.83),
                                    ("NCSN++ cont. (deep, VE)", None, 2.20, 9.89))
      for m, v in (("fid", fid_), ("is", is_))],
    dict(family="sde", model="DDPM++ cont. (deep, sub-VP)", dataset="CIFAR-10", metric="bpd", value=2.99,
         sampler="ode", nfe=None, experiment=None, citation="Song et al. 2021 (score SDE), Table 2"),
    dict(family="iddpm", model="iDDPM (L_vlb)", dataset="CIFAR-10", metric="bpd", value=2.94, sampler=None,
         nfe=None, experiment=None, citation="Nichol & Dhariwal 2021, comparison of likelihood-based models"),
    dict(family="iddpm", model="iDDPM (L_vlb)", dataset="ImageNet 64x64", metric="bpd", value=3.53, sampler=None,
         nfe=None, experiment=None, citation="Nichol & Dhariwal 2021, comparison of likelihood-based models"),
    dict(family="edm", model="EDM (VP)", dataset="CIFAR-10", metric="fid", value=1.97, sampler="heun", nfe=35,
         experiment=None, citation="Karras et al. 2022, Table 2"),
    dict(family="edm", model="EDM (VP), class-conditional", dataset="CIFAR-10", metric="fid", value=1.79,
         sampler="heun", nfe=35, experiment=None, citation="Karras et al. 2022, Table 2"),
    *[dict(family="ldm", model="LDM-VQ-4", dataset="CelebA-HQ 256", metric=m, value=v, sampler="ddim (η=0)", nfe=500,
           experiment="ldm_celebahq", citation="Rombach et al. 2022, Table 1 (50k samples vs the training set)")
      for m, v in (("fid", 5.11), ("precision", 0.72), ("recall", 0.49))],
    *[dict(family="ldm", model="LDM-KL-8", dataset="LSUN-Churches 256", metric=m, value=v, sampler="ddim (η=0)",
           nfe=400, experiment="ldm_kl8_churches", citation="Rombach et al. 2022, Table 1; CompVis README (400 DDIM steps)")
      for m, v in (("fid", 4.02), ("precision", 0.64), ("recall", 0.52))],
    *[dict(family="ldm_txt2img", model=f"LDM-KL-8-G text-to-image, {guidance}", dataset="MS-COCO 256 (val captions)",
           metric="fid", value=v, sampler="ddim (250 steps)", nfe=250, experiment="ldm_txt2img_laion",
           citation="Rombach et al. 2022, Table 2 (trained on LAION-400M, 30k samples)")
      for guidance, v in (("no guidance", 23.31), ("classifier-free guidance s = 1.5", 12.63))],
    *[dict(family="sr3", model=model, dataset="CelebA-HQ 16→128 (trained on FFHQ)", metric=m, value=v, sampler=sampler,
           nfe=nfe, experiment="sr3_celebahq_16_128",
           citation="Saharia et al. 2021 (SR3), Table 1 of arXiv:2104.07636; consistency printed ×1e-5 (stored as "
                    "MSE); checked 2026-11-27 against a text copy of the arXiv paper")
      for model, sampler, nfe, values in (("SR3", "ancestral (tuned 100-step schedule)", 100, (23.04, 0.65, 2.68e-5)),
                                          ("Regression (SR3's architecture, L2)", None, 1, (23.96, 0.69, 2.71e-5)))
      for m, v in zip(("psnr", "ssim", "consistency"), values)],
    # Anomaly detection (AnoDDPM's family; AnoDDPM itself reports no MVTec AD numbers, only leather samples)
    dict(family="anoddpm", model="DDAD (conditioned denoising + feature comparison)",
         dataset="MVTec AD (15 categories)", metric="image_auroc", value=0.998, sampler=None, nfe=None,
         experiment="anoddpm_mvtec",
         citation="Mousakhan et al. 2023 (DDAD), abstract"),
    *[dict(family="anoddpm", model="DiffusionAD (one-step denoising + segmentation sub-network)",
           dataset="MVTec AD (15 categories)", metric=m, value=v, sampler=None, nfe=1, experiment="anoddpm_mvtec",
           citation="Zhang et al. 2023 (DiffusionAD), Table I; values recalled: its tables were not reachable offline "
                    "(checked 2026-11-27), so unverified")
      for m, v in (("image_auroc", 0.997), ("pixel_auroc", 0.987))],
    *[dict(family="anoddpm", model=f"Deep SVDD (one-class, not a diffusion model), digit {digit} normal",
           dataset="MNIST one class vs the rest", metric="image_auroc", value=v, sampler=None, nfe=None,
           experiment="anoddpm_mnist_oneclass",
           citation="Ruff et al. 2018 (Deep SVDD), Table 1; checked 2026-11-27 against a later paper's table of the "
                    "original numbers, not the paper itself")
      for digit, v in enumerate((0.980, 0.997, 0.917, 0.919, 0.949, 0.885, 0.983, 0.946, 0.939, 0.965))],
    # Label-efficient segmentation with DDPM decoder features (20-50 labelled images per dataset)
    *[dict(family="ddpm_segmentation", model="DDPM features + MLP ensemble", dataset=dataset, metric="miou", value=v,
           sampler=None, nfe=3, experiment="segfeatures_mnist_canvas",
           citation="Baranchuk et al. 2022 (results table of the yandex-research/ddpm-segmentation README)")
      for dataset, v in (("Bedroom-28", 0.461), ("FFHQ-34", 0.570), ("Cat-15", 0.523), ("Horse-21", 0.631),
                         ("CelebA-19", 0.570), ("ADE-Bedroom-30", 0.323))],
    *[dict(family="palette", model="Palette (JPEG restoration)", dataset=f"ImageNet ctest10k 256, JPEG QF {q}",
           metric="fid", value=v, sampler="ancestral", nfe=1000, experiment="palette_imagenet_256",
           citation="Saharia et al. 2022 (Palette), Table 4, FID-5K; checked 2026-11-27 against a text copy of "
                    "arXiv:2111.05826")
      for q, v in ((5, 8.3), (10, 5.4), (20, 4.3))],
    *[dict(family="palette", model="Regression (Palette's architecture, L2; JPEG restoration)",
           dataset=f"ImageNet ctest10k 256, JPEG QF {q}", metric="fid", value=v, sampler=None, nfe=1,
           experiment="palette_imagenet_256",
           citation="Saharia et al. 2022 (Palette), Table 4, FID-5K; checked 2026-11-27 against a text copy of "
                    "arXiv:2111.05826")
      for q, v in ((5, 29.0), (10, 18.0), (20, 11.5))],
    # Video generation (unconditional UCF-101, 16 frames of 64 x 64; FVD's I3D features are not available here)
    *[dict(family="video_diffusion", model="Video Diffusion Models (factorized space-time UNet)",
           dataset="UCF-101 16x64x64 (unconditional)", metric=m, value=v, sampler="ancestral", nfe=None,
           experiment="video_ucf101",
           citation="Ho et al. 2022 (Video Diffusion Models), Table 1 (C3D features, 10k samples: FID 295 ± 3, IS "
                    "57 ± 0.62); checked 2026-11-27 against secondary sources (MAGVIT's Table 1), not the paper")
      for m, v in (("is", 57.00), ("fid", 295.0))],
    *[dict(family="dpm_solver", model="DPM-Solver (score SDE VP checkpoint)", dataset="CIFAR-10", metric="fid",
           value=v, sampler="dpm_solver", nfe=s, experiment=None, citation="Lu et al. 2022, Table 1")
      for s, v in ((10, 4.70), (20, 2.87))],
]

FAMILY_OF = {"ddpm": ("ddpm", "ddim", "iddpm", "dpm_solver"), "ncsn": ("ncsn",), "ncsnv2": ("ncsnv2",),
             "sde": ("sde", "dpm_solver"), "edm": ("edm",), "ldm": ("ldm", "ldm_txt2img"),
             "txt2img": ("ldm_txt2img",), "sr3": ("sr3",), "palette": ("palette",), "anoddpm": ("anoddpm",),
             "segfeatures": ("ddpm_segmentation",), "segdiff": ("ddpm_segmentation",),
             "video": ("video_diffusion",)}
"""Our experiment prefix → the published families it is compared with."""


def published_for(name: str) -> list[dict]:
    """The published rows relevant to our experiment ``name`` (e.g. ``ddpm_mnist`` → DDPM, DDIM, iDDPM, …)."""
    families = FAMILY_OF.get(str(name).split("_")[0], ())
    return [row for row in PUBLISHED if row["family"] in families]

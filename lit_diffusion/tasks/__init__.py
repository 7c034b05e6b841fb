"""Training-free image editing with any unconditional model, on the samplers' seams.

Every task here is a function over a denoiser D(x, σ) (a model's ``sampling_denoiser`` with no conditions),
its forward process, the inputs, a sampler config and the per-image generators, and runs the project's
samplers through :func:`lit_diffusion.sampling.generate` in scaled coordinates x = x_0 + σ ε:

- :func:`~lit_diffusion.tasks.repaint.repaint` (Lugmayr et al. 2022): inpainting by replacing the known
  region after every step (a step callback), with RePaint's resampling schedule (jump length j, r resamplings);
- :func:`~lit_diffusion.tasks.sdedit.sdedit` (Meng et al. 2022): noise a guide to t_0, sample from there;
- :func:`~lit_diffusion.tasks.ilvr.ilvr` (Choi et al. 2021): low-pass refinement after every step (a callback);
- :func:`~lit_diffusion.tasks.ddib.ddib` (Su et al. 2023): encode with one model's probability-flow ODE,
  decode with another's;
- :func:`~lit_diffusion.tasks.anomaly.reconstruct` (AnoDDPM, Wyatt et al. 2022): partial diffusion to λ with
  Gaussian or simplex noise and reconstruction; the error maps score anomalies (entry: :mod:`lit_diffusion.anomaly`).

The entry point is :mod:`lit_diffusion.edit`; the degradations it applies come from
:mod:`lit_diffusion.datamodules.pairs` by name (:mod:`lit_diffusion.tasks.degradations`).
:mod:`lit_diffusion.tasks.toy2d` runs DDIB between 2-D synthetic domains (moons, checkerboard, rings).
"""

from lit_diffusion.tasks.anomaly import anomaly_map, image_scores, reconstruct
from lit_diffusion.tasks.ddib import ddib, decode, encode
from lit_diffusion.tasks.ilvr import ilvr, low_pass
from lit_diffusion.tasks.repaint import jump_schedule, repaint
from lit_diffusion.tasks.sdedit import sdedit, sigma_at

__all__ = ["anomaly_map", "ddib", "decode", "encode", "ilvr", "image_scores", "jump_schedule", "low_pass",
           "reconstruct", "repaint", "sdedit", "sigma_at"]

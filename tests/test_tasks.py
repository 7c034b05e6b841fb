"""Training-free tasks (RePaint, SDEdit, ILVR, DDIB) against closed forms on Gaussian data, and the ``edit``
entry point end to end on a tiny checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli import run_cli, train_tiny
from gaussian import GaussianData
from PIL import Image

from lit_diffusion.errors import UserError
from lit_diffusion.processes.discrete_vp import DiscreteVP
from lit_diffusion.processes.edm import EDMProcess
from lit_diffusion.randomness import PerImageGenerator
from lit_diffusion.sampling import generate
from lit_diffusion.tasks import ddib, decode, encode, ilvr, jump_schedule, low_pass, repaint, sdedit, sigma_at
from lit_diffusion.tasks.common import run_on_grid
from lit_diffusion.tasks.degradations import guide_config, mask_config
from lit_diffusion.tasks.repaint import down_moves

ANCESTRAL = {"algorithm": "ancestral", "grid": {"spacing": "karras"}}


class FastGaussian(GaussianData):
    """:class:`GaussianData` whose exact denoiser (one σ per call, as samplers call it) uses the eigenbasis
    of Σ: D(x, σ) = μ + V diag(λ / (λ + σ²)) Vᵀ (x − μ)."""

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor):
        super().__init__(mean, cov)
        self.eigenvalues, self.eigenvectors = torch.linalg.eigh(self.cov)

    def denoiser(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if len(torch.unique(sigma)) > 1:
            return super().denoiser(x, sigma)
        shrink = self.eigenvalues / (self.eigenvalues + float(sigma[0]) ** 2)
        gain = self.eigenvectors @ torch.diag(shrink) @ self.eigenvectors.T
        flat = x.reshape(x.shape[0], -1).double() - self.mean
        return (self.mean + flat @ gain.T).to(x.dtype).reshape(x.shape)


# Well-conditioned 3-D Gaussian data: coordinates 0 and 2 known, 1 to inpaint.
DATA = FastGaussian(torch.tensor([0.2, -0.1, 0.3]),
                    0.3 * torch.tensor([[1.0, 0.8, 0.5], [0.8, 1.0, 0.6], [0.5, 0.6, 1.0]]))
KNOWN = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are tiny: one thread (two spin-waiting threads on a busy 2-core machine are 20x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def conditional(data: GaussianData, known: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of the unknown coordinates given the known ones equal to y's."""
    k, u = known.bool(), ~known.bool()
    cov, mean = data.cov, data.mean
    gain = cov[u][:, k] @ torch.linalg.inv(cov[k][:, k])
    return mean[u] + gain @ (y[k] - mean[k]), cov[u][:, u] - gain @ cov[k][:, u]


def moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.mean(0), torch.cov(x.T)


# ----------------------------------------------------------------------------------------------------- RePaint


def test_jump_schedule_is_the_official_one():
    # get_schedule_jump(t_T=6, n_sample=1, jump_length=2, jump_n_sample=3): jumps at t = 0 and 2, twice each.
    assert jump_schedule(6, 2, 3) == [0, 1, 2, 3, 2, 1, 2, 3, 2, 1, 2, 3, 4, 5, 4, 3, 4, 5, 4, 3, 4, 5, 6]
    assert jump_schedule(5, 10, 10) == [0, 1, 2, 3, 4, 5]  # no room to jump: plain descent
    assert down_moves(250, 10, 10) == 250 + 24 * 9 * 10  # the paper's setting: 2,410 sampler steps
    with pytest.raises(UserError, match="resamplings"):
        jump_schedule(10, 2, 0)


def test_repaint_samples_the_conditional_gaussian_and_keeps_the_known_region():
    y = torch.tensor([0.7, 0.0, -0.5], dtype=torch.float64)
    mean, cov = conditional(DATA, KNOWN, y)
    n, u = 4000, ~KNOWN.bool()
    images = y.expand(n, 3).clone()
    resampled = repaint(DATA.denoiser, EDMProcess(), images, KNOWN, {**ANCESTRAL, "steps": 40},
                        torch.Generator().manual_seed(0), jump_length=5, resamplings=10)
    assert resampled.nfe == down_moves(40, 5, 10) == 355
    assert torch.equal(resampled.images[:, KNOWN.bool()], images[:, KNOWN.bool()])  # exactly the input
    got_mean, got_cov = moments(resampled.images[:, u])
    assert (got_mean - mean).abs().max() < 0.035, (got_mean, mean)  # measured 0.026 (r = 1: 0.075)
    assert (got_cov - cov).abs().max() < 0.03, (got_cov, cov)
    # plain replacement (r = 1) at the same NFE misses the conditional mean: the resampling is what works
    plain = repaint(DATA.denoiser, EDMProcess(), images, KNOWN, {**ANCESTRAL, "steps": 355},
                    torch.Generator().manual_seed(0), jump_length=5, resamplings=1)
    assert plain.nfe == resampled.nfe
    assert (moments(plain.images[:, u])[0] - mean).abs().max() > 0.06


def test_repaint_images_depend_only_on_seed_and_index():
    data = GaussianData.example(4)
    process, sampler = DiscreteVP(100), {"algorithm": "ancestral", "steps": 12}
    images = torch.linspace(-1, 1, 6 * 4).reshape(6, 1, 2, 2)
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).expand(6, 1, 2, 2)
    whole = repaint(data.denoiser, process, images, mask, sampler, PerImageGenerator(3, 0, 6), jump_length=3,
                    resamplings=2).images
    tail = repaint(data.denoiser, process, images[2:], mask[2:], sampler, PerImageGenerator(3, 2, 4), jump_length=3,
                   resamplings=2).images
    torch.testing.assert_close(whole[2:], tail, rtol=0, atol=1e-6)
    assert torch.equal(whole * mask, images * mask)


# ------------------------------------------------------------------------------------------------------ SDEdit


def test_sdedit_at_small_t0_returns_the_guide_and_t0_maps_to_the_process_time():
    process = EDMProcess()
    guide = DATA.sample(64, torch.Generator().manual_seed(1)) + 1.5  # far from the data
    errors = []
    for sigma in (1.0, 0.1, 0.002):
        out = sdedit(DATA.denoiser, process, guide, {**ANCESTRAL, "steps": 40}, torch.Generator().manual_seed(0),
                     sigma_start=sigma)
        errors.append((out.images - guide).abs().max().item())
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.01, errors
    ddpm = DiscreteVP(1000)
    assert sigma_at(ddpm, 0.5) == float(ddpm.sigmas[499]) and sigma_at(ddpm, 1.0) == ddpm.sigma_max
    assert sigma_at(process, 1.0) == pytest.approx(80.0) and sigma_at(process, 0.0 + 1e-9) == pytest.approx(0.002)
    with pytest.raises(UserError, match="exactly one"):
        sdedit(DATA.denoiser, process, guide, ANCESTRAL, t0=0.5, sigma_start=1.0)
    with pytest.raises(UserError, match="below every level"):
        sdedit(DATA.denoiser, process, guide, {**ANCESTRAL, "steps": 10}, sigma_start=1e-4)


def test_sdedit_at_sigma_max_matches_unconditional_sampling():
    process, n, sampler = EDMProcess(), 3000, {**ANCESTRAL, "steps": 30}
    guide = torch.full((n, 3), 2.0, dtype=torch.float64)  # far from the data: it must be forgotten
    edited = sdedit(DATA.denoiser, process, guide, sampler, torch.Generator().manual_seed(0), t0=1.0).images
    free = generate(DATA.denoiser, process, (n, 3), sampler, torch.Generator().manual_seed(1)).images.double()
    (edit_mean, edit_cov), (free_mean, free_cov) = moments(edited), moments(free)
    assert (edit_mean - free_mean).abs().max() < 0.05 and (edit_cov - free_cov).abs().max() < 0.04
    halfway = sdedit(DATA.denoiser, process, guide, sampler, torch.Generator().manual_seed(0), t0=0.3).images
    assert (halfway.mean(0) - free_mean).abs().max() > 0.3  # a lower t0 keeps the guide's imprint


# -------------------------------------------------------------------------------------------------------- ILVR


def test_ilvr_with_n1_reproduces_the_reference_and_box_filters_match_exactly():
    data = GaussianData.example(16, seed=2)
    reference = torch.linspace(-0.8, 0.8, 3 * 16).reshape(3, 1, 4, 4)
    process, sampler = DiscreteVP(100), {"algorithm": "ancestral", "steps": 10}
    same = ilvr(data.denoiser, process, reference, sampler, torch.Generator().manual_seed(0), factor=1)
    assert torch.equal(same.images, reference) and same.nfe == 10
    box = ilvr(data.denoiser, process, reference, sampler, torch.Generator().manual_seed(0), factor=2, filter="box")
    torch.testing.assert_close(low_pass(box.images, 2, "box"), low_pass(reference, 2, "box"), rtol=0, atol=1e-6)
    assert (box.images - reference).abs().max() > 0.05  # only the low frequencies are fixed
    with pytest.raises(UserError, match="dividing"):
        ilvr(data.denoiser, process, reference, sampler, factor=3)


def test_low_pass_filters():
    x = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    for factor in (2, 4, 7):
        box = low_pass(x, factor, "box")
        torch.testing.assert_close(low_pass(box, factor, "box"), box)  # a projection
        assert torch.equal(box[..., :factor, :factor], box[..., :1, :1].expand(2, 3, factor, factor))
        smooth = low_pass(x, factor)
        assert smooth.shape == x.shape and smooth.std() < x.std()
    constant = torch.full((1, 1, 28, 28), 0.3)
    torch.testing.assert_close(low_pass(constant, 4), constant)
    assert torch.equal(low_pass(x, 1), x)


# -------------------------------------------------------------------------------------------------------- DDIB


@pytest.mark.parametrize("algorithm", ["ddim", "heun"])
def test_ddib_round_trip_through_one_model_returns_the_input(algorithm):
    process = DiscreteVP(1000)
    x0 = DATA.sample(200, torch.Generator().manual_seed(0))
    errors = []
    for steps in (10, 40, 160):
        sampler = {"algorithm": algorithm, "steps": steps}
        translated = ddib(DATA.denoiser, process, DATA.denoiser, process, x0, sampler)
        errors.append((translated.images - x0).abs().mean().item())
    # DDIM (Euler) is first order: 4x the steps, a quarter of the error; Heun faster (measured 0.19 → 0.055 →
    # 0.014 and 0.011 → 3e-4 → 5e-6)
    assert errors[1] < 0.35 * errors[0] and errors[2] < 0.35 * errors[1], errors
    assert errors[2] < (0.02 if algorithm == "ddim" else 1e-4), errors
    latents = encode(DATA.denoiser, process, x0, {"algorithm": algorithm, "steps": 80}).images
    assert 0.8 < latents.std().item() < 1.2  # the prior's units


def test_ddib_translates_between_gaussians():
    target = FastGaussian(torch.tensor([1.0, -1.0, 0.5]), 0.5 * torch.eye(3) + 0.1)
    source_process, target_process = DiscreteVP(1000), EDMProcess()  # two frameworks, one latent space
    x0 = DATA.sample(3000, torch.Generator().manual_seed(0))
    out = ddib(DATA.denoiser, source_process, target.denoiser, target_process, x0, {"algorithm": "heun", "steps": 30})
    mean, cov = moments(out.images)
    assert (mean - target.mean).abs().max() < 0.05 and (cov - target.cov).abs().max() < 0.06
    assert out.nfe == 1 + 2 * 29 + 2 * 30 - 1  # encode: the first step + Heun up; decode: Heun down


def test_ddib_needs_a_deterministic_sampler():
    x = torch.zeros(2, 3)
    for sampler, message in [({"algorithm": "ancestral"}, "deterministic"), ({"algorithm": "ddim", "eta": 1.0}, "eta"),
                             ({"algorithm": "heun", "s_churn": 10.0}, "s_churn")]:
        with pytest.raises(UserError, match=message):
            encode(DATA.denoiser, DiscreteVP(100), x, sampler)
        with pytest.raises(UserError, match=message):
            decode(DATA.denoiser, DiscreteVP(100), x, sampler)


def test_run_on_grid_continues_from_the_given_state():
    process, x = DiscreteVP(1000), DATA.sample(8, torch.Generator().manual_seed(0))
    grid = process.sigma_grid(20)
    whole = generate(DATA.denoiser, process, (8, 3), {"algorithm": "ddim", "steps": 20}, noise=x).images
    first = run_on_grid(DATA.denoiser, process, x * process.start_std(float(grid[0])), grid[:8], {"algorithm": "ddim"})
    rest = run_on_grid(DATA.denoiser, process, first.images, grid[7:], {"algorithm": "ddim", "steps": 3})
    torch.testing.assert_close(rest.images, whole)
    assert first.nfe + rest.nfe == 20


def test_degradation_names():
    assert mask_config("wide")["kind"] == "wide" and guide_config("clean") is None
    assert guide_config("blur1.5")["sigma"] == 1.5 and guide_config("jpeg5")["quality"] == 5
    assert guide_config("sr8")["factor"] == 8 and guide_config("quantize")["levels"] == 4
    assert guide_config("masked_lines")["masked_key"] == "guide"
    for bad, call in (("zigzag", mask_config), ("sepia3", guide_config), ("blur_2", guide_config)):
        with pytest.raises(UserError, match="unknown"):
            call(bad)


# ------------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("edit") / "run"
    train_tiny(run_dir, "trainer.max_steps=2", "logger=none", "callbacks.evaluation=null")
    return run_dir / "checkpoints" / "last.ckpt"


EDIT = ["n=4", "batch_size=3", "kid=true", "extractor=random_conv", "kid_subsets=2"]


@pytest.mark.slow
def test_edit_repaint_end_to_end(tiny_checkpoint, tmp_path):
    out = tmp_path / "repaint"
    run_cli("lit_diffusion.edit", "task=repaint", f"ckpt={tiny_checkpoint}", "mask=wide", "sampler.steps=6",
            "task.jump_length=2", "task.resamplings=2", f"out={out}", *EDIT, cwd=tmp_path)
    result = json.loads((out / "metrics.json").read_text())
    assert result["nfe"] == down_moves(6, 2, 2) and result["sampler"]["algorithm"] == "ancestral"
    assert result["metrics"]["known_max_abs_error"] == 0 and 0 < result["metrics"]["missing_fraction"] <= 0.5
    assert {"psnr", "ssim", "missing_psnr", "kid_mean"} <= set(result["metrics"])
    assert len(result["checkpoint_sha256"]) == 64 and result["pairs"]["degradation"]["kind"] == "wide"
    for key in ("input", "output", "reference"):
        assert (out / f"{key}.png").is_file() and len(list((out / key).glob("*.png"))) == 4
    output, reference = (np.stack([np.asarray(Image.open(out / key / f"{i:06d}.png")) for i in range(4)])
                         for key in ("output", "reference"))
    assert (output != reference).mean() <= result["metrics"]["missing_fraction"] + 1e-6  # only the hole changes
    # (missing_fraction is a float32 mean: 1e-6, not 1e-9, when every hole pixel differs)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["sdedit", "ilvr", "ddib"])
def test_edit_other_tasks_end_to_end(tiny_checkpoint, tmp_path, task):
    out = tmp_path / task
    options = {"sdedit": ["guide=quantize3", "task.t0=0.4", "sampler=ddim", "sampler.steps=5"],
               "ilvr": ["task.factor=7", "sampler=ddim", "sampler.steps=4", "sampler.eta=1.0"],
               "ddib": [f"target_ckpt={tiny_checkpoint}", "sampler.steps=4"]}[task]
    run_cli("lit_diffusion.edit", f"task={task}", f"ckpt={tiny_checkpoint}", f"out={out}", *options, *EDIT, cwd=tmp_path)
    result = json.loads((out / "metrics.json").read_text())
    metric = {"sdedit": "guide_l2", "ilvr": "diversity_mse", "ddib": "cycle_mse"}[task]
    assert metric in result["metrics"] and result["nfe"] > 0 and (out / "output.png").is_file()
    if task == "ddib":
        assert result["target_checkpoint_sha256"] == result["checkpoint_sha256"] and result["nfe"] == 1 + 3 + 4


@pytest.fixture(scope="module")
def class_checkpoint(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("edit_class") / "run"
    train_tiny(run_dir, "conditioner=class", "trainer.max_steps=2", "logger=none", "callbacks.evaluation=null",
               "callbacks.sample_grid=null")
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.mark.slow
def test_ddib_between_class_pairs(class_checkpoint, tiny_checkpoint, tmp_path):
    """Class-conditional DDIB (Su et al.'s ImageNet setting): source class k encoded under label k, decoded under
    class_pairs[k]; the target's judge scores whether the output shows the paired class."""
    out = tmp_path / "pairs"
    run_cli("lit_diffusion.edit", "task=ddib", f"ckpt={class_checkpoint}", f"target_ckpt={class_checkpoint}",
            "task.class_pairs=[9,8,7,6,5,4,3,2,1,0]", "sampler.steps=4", "n=4", "batch_size=3", f"out={out}",
            cwd=tmp_path)
    result = json.loads((out / "metrics.json").read_text())
    assert {"accuracy", "judge_held_out_accuracy", "cycle_mse"} <= set(result["metrics"])
    assert 0 <= result["metrics"]["accuracy"] <= 1 and result["task_options"]["class_pairs"][0] == 9
    assert result["nfe"] == 1 + 3 + 4 and len(list((out / "output").glob("*.png"))) == 4
    for overrides, message in [([f"target_ckpt={tiny_checkpoint}", "task.class_pairs=[0,1]"], "the target checkpoint"),
                               ([f"target_ckpt={class_checkpoint}"], "an unconditional model"),
                               ([f"target_ckpt={class_checkpoint}", "task.class_pairs=[0,1]"], "one target per")]:
        proc = run_cli("lit_diffusion.edit", "task=ddib", f"ckpt={class_checkpoint}", "n=4", "sampler.steps=2",
                       f"out={tmp_path / 'bad'}", *overrides, cwd=tmp_path, check=False)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.slow
def test_edit_bad_input_is_one_user_error(tiny_checkpoint, tmp_path):
    for overrides, message in [(["task=ddib"], "target_ckpt=PATH"), (["mask=zigzag"], "unknown mask 'zigzag'"),
                               (["task.name=inpaint"], "unknown task 'inpaint'")]:
        proc = run_cli("lit_diffusion.edit", f"ckpt={tiny_checkpoint}", f"out={tmp_path}", *overrides, cwd=tmp_path,
                       check=False)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr

"""GPU-scale training options, checked on CPU: the FSDP strategy config, activation checkpointing, torch.compile,
gradient accumulation."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.distributed as dist
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.precision import FSDPPrecision
from lightning.pytorch.strategies import FSDPStrategy
from torch.distributed.fsdp import FullyShardedDataParallel
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

from cli import TINY, run_cli, train_in_process
from lit_diffusion.callbacks import EMA
from lit_diffusion.config import safe_instantiate
from lit_diffusion.errors import UserError
from lit_diffusion.models.base import step_seed
from lit_diffusion.networks import UNet
from lit_diffusion.networks.unet import AttentionBlock, ResBlock, SpatialTransformer
from lit_diffusion.run import build_model
from lit_diffusion.strategies import DiffusionFSDPStrategy, fsdp


def training_config(*overrides: str):
    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
        return compose("config", overrides=[*TINY, "paths.output_dir=/tmp/unused", *overrides])


def test_fsdp_config_builds_the_strategy_with_one_unit_per_unet_block():
    cfg = training_config("trainer=fsdp")
    assert (cfg.trainer.accelerator, cfg.trainer.precision) == ("gpu", "bf16-mixed")
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDPStrategy)
    policy = strategy.kwargs["auto_wrap_policy"]
    assert isinstance(policy, ModuleWrapPolicy)
    assert policy._module_classes == {ResBlock, AttentionBlock, SpatialTransformer}
    assert strategy._state_dict_type == "full"  # one consolidated checkpoint file: sample/evaluate read it as is
    assert strategy.kwargs["use_orig_params"]  # parameter names and order as in the module (EMA, optimizer)
    assert not strategy._activation_checkpointing_kwargs
    checkpointed = fsdp(activation_checkpointing=["lit_diffusion.networks.unet.ResBlock"])
    assert checkpointed._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes == {ResBlock}
    with pytest.raises(UserError, match="refusing to build 'os.system'"):
        fsdp(wrap=["os.system"])


@pytest.mark.parametrize("precision, compute", [("bf16-mixed", torch.bfloat16), ("16-mixed", torch.float16),
                                                ("32-true", torch.float32)])
def test_fsdp_leaves_buffers_in_their_own_dtype(precision, compute):
    """Lightning's FSDP plugin would cast buffers (the noise schedule's float64 tables) to bf16: ᾱ_t = 0.9999
    becomes 1. FSDP casts no buffer whose buffer_dtype is None."""
    assert torch.tensor(0.9999, dtype=torch.bfloat16).item() == 1.0  # why it matters
    strategy = fsdp()
    strategy.precision_plugin = FSDPPrecision(precision)
    config = strategy.mixed_precision_config
    assert (config.param_dtype, config.reduce_dtype, config.buffer_dtype) == (compute, compute, None)


@pytest.fixture
def one_process_group(tmp_path):
    """A one-process gloo group: FSDP runs on CPU in it (NO_SHARD, but the same wrapping, mixed-precision casts
    and summon_full_params as on GPUs)."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_ema_updates_and_swaps_the_gathered_weights_under_fsdp_bf16(one_process_group):
    """On an H200 the first EMA update under trainer=fsdp failed twice (bf16, then float32 buffers against the
    average's float64 schedule tables). Here the tiny model is wrapped as the strategy wraps it, with its
    bf16-mixed config, takes an optimizer step, and the EMA callback updates from and swaps with its weights."""
    torch.manual_seed(0)
    model = build_model(training_config())
    strategy = fsdp()
    strategy.precision_plugin = FSDPPrecision("bf16-mixed")
    ema = EMA(decay=0.75, warmup=False)
    ema._device = torch.device("cpu")
    trainer = SimpleNamespace(strategy=strategy, global_step=0)
    ema.setup(trainer, model, "fit")
    model.forward = model.loss  # the wrapped root's forward: one training loss
    root = FullyShardedDataParallel(model, device_id=torch.device("cpu"), use_orig_params=True,
                                    auto_wrap_policy=strategy.kwargs["auto_wrap_policy"],
                                    mixed_precision=strategy.mixed_precision_config)
    strategy.model = root
    optimizer = torch.optim.SGD(root.parameters(), lr=0.5)
    average = ema.averaged_module
    for step in (1, 2):  # AveragedModel copies the weights at its first update, then averages
        with torch.autocast("cpu", dtype=torch.bfloat16):
            root(torch.rand(4, *model.sample_shape) * 2 - 1).backward()
        optimizer.step()
        trainer.global_step = step
        with FullyShardedDataParallel.summon_full_params(root):
            trained = [p.detach().clone() for p in model.parameters()]
            assert {b.dtype for b in model.buffers()} == {torch.float64}  # the schedule tables, not cast
        before = [p.detach().clone() for p in average.parameters()]
        assert any(not torch.equal(a, b) for a, b in zip(before, trained))  # the step changed the weights
        ema.on_train_batch_end(trainer, model, None, None, 0)
        for a, b, t in zip(average.parameters(), before, trained):
            torch.testing.assert_close(a, t if step == 1 else 0.75 * b + 0.25 * t)
    averaged = [a.detach().clone() for a in average.parameters()]
    ema.on_validation_epoch_start(trainer, model)  # validation sees the average, training resumes from its weights
    with FullyShardedDataParallel.summon_full_params(root):
        for p, a in zip(model.parameters(), averaged):
            torch.testing.assert_close(p, a)
    ema.on_validation_epoch_end(trainer, model)
    with FullyShardedDataParallel.summon_full_params(root):
        for p, t in zip(model.parameters(), trained):
            torch.testing.assert_close(p, t)


@pytest.fixture
def fsdp_on_cpu(monkeypatch):
    """Lightning builds FSDP with ``device_id=root_device.index``, None on a CPU, which FSDP refuses ("needs a
    non-CPU accelerator device"). This passes ``device_id=cpu`` and changes nothing else, so the rest of
    Lightning's FSDP path (wrapping, precision, consolidated checkpoints, resume) runs here in one gloo process."""
    def setup_model(self, model):
        return FullyShardedDataParallel(module=model, cpu_offload=self.cpu_offload, device_id=torch.device("cpu"),
                                        mixed_precision=self.mixed_precision_config,
                                        sharding_strategy=self.sharding_strategy, **self.kwargs)

    monkeypatch.setattr(DiffusionFSDPStrategy, "_setup_model", setup_model)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true"])
def test_fsdp_trains_resumes_exactly_and_its_checkpoint_samples(tmp_path, fsdp_on_cpu, precision):
    """trainer=fsdp end to end: on an H200 the first run stopped at its first step (norm clipping) and then at its
    first EMA update (buffer dtypes); here 4 steps + resume to 6 equal 6 straight steps bit for bit (raw and EMA
    weights), the checkpoint holds the plain module's full state dict, and ``sample`` reads it."""
    overrides = [*TINY, "trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=1", f"trainer.precision={precision}",
                 "data.num_workers=0", "callbacks.evaluation.every_n_steps=0"]
    straight = train_in_process(tmp_path / "straight", *[o for o in overrides if "max_steps" not in o],
                                "trainer.max_steps=6")
    first = train_in_process(tmp_path / "first", *overrides)
    resumed = train_in_process(tmp_path / "resumed", *[o for o in overrides if "max_steps" not in o],
                               "trainer.max_steps=6", f"ckpt_path={first}")
    a, b = (torch.load(path, map_location="cpu", weights_only=True) for path in (straight, resumed))
    assert a["global_step"] == b["global_step"] == 6
    plain = build_model(training_config()).state_dict()
    assert {k: v.shape for k, v in a["state_dict"].items()} == {k: v.shape for k, v in plain.items()}
    for key in ("state_dict", "current_model_state"):  # the EMA and the raw weights
        assert a[key].keys() == b[key].keys()
        for name, value in a[key].items():
            torch.testing.assert_close(b[key][name], value, rtol=0, atol=0)
    run_cli("lit_diffusion.sample", f"ckpt={resumed}", "n=4", "sampler.steps=3", f"out={tmp_path / 'samples'}",
            cwd=tmp_path)
    assert (tmp_path / "samples" / "grid.png").exists()


def saved_activations(net: UNet, x, sigma, cond) -> tuple[torch.Tensor, list[torch.Tensor], int]:
    """Loss, parameter gradients and the number of tensors autograd kept for the backward pass."""
    saved = []
    torch.manual_seed(1)  # dropout
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        loss = net(x, sigma, cond).square().mean()
    grads = torch.autograd.grad(loss, list(net.parameters()))
    return loss, grads, len(saved)


def test_activation_checkpointing_keeps_loss_and_gradients_and_saves_fewer_activations():
    torch.manual_seed(0)
    net = UNet(in_channels=2, image_size=8, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
               attention_resolutions=(8, 4), dropout=0.2, num_groups=4, context_dim=6, num_heads=2).train()
    for p in net.parameters():  # zero-initialised output convs would hide most gradients
        torch.nn.init.normal_(p, std=0.2)
    x, sigma, cond = torch.randn(3, 2, 8, 8), torch.rand(3), {"crossattn": torch.randn(3, 5, 6)}
    loss, grads, plain = saved_activations(net, x, sigma, cond)
    net.checkpoint = True
    loss_ckpt, grads_ckpt, checkpointed = saved_activations(net, x, sigma, cond)
    assert torch.equal(loss, loss_ckpt)
    for g, g_ckpt in zip(grads, grads_ckpt):
        torch.testing.assert_close(g_ckpt, g, rtol=1e-6, atol=1e-7)
    assert checkpointed < plain / 3  # only the blocks' inputs are kept
    net.eval()  # outside training (sampling, validation) the forward pass is the plain one
    evaluated = saved_activations(net, x, sigma, cond)[2]
    net.checkpoint = False
    assert saved_activations(net, x, sigma, cond)[2] == evaluated


@pytest.mark.parametrize("network", ["unet", "unet_ddpm_cifar10", "unet_iddpm_cifar10", "unet_ddpmpp_cifar10",
                                     "unet_ncsnpp_cifar10", "unet_edm_ddpmpp_cifar10"])
def test_network_checkpoint_is_a_config_option(network):
    """``network.checkpoint=true`` (the FSDP config's advice) is a key of every UNet config, the paper ones too."""
    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
        cfg = compose("config", overrides=[f"network={network}", "data.image_size=32", "network.checkpoint=true"])
    assert safe_instantiate(cfg.network).checkpoint


class RecordingRoot(torch.nn.Module):
    """Stands for the FSDP-wrapped root module: records the norm it is asked to clip to."""

    def __init__(self):
        super().__init__()
        self.clipped_to = []

    def clip_grad_norm_(self, max_norm):
        self.clipped_to.append(max_norm)


@pytest.mark.parametrize("strategy, algorithm, sharded_clip", [
    (fsdp(), "norm", [1.0]), (fsdp(), None, [1.0]), ("auto", "norm", []), ("auto", "value", [])])
def test_gradient_clipping_under_fsdp_uses_the_sharded_norm(strategy, algorithm, sharded_clip):
    """Lightning's FSDP precision plugin refuses norm clipping (the run stopped at its first step on a GPU):
    under FSDP the norm is clipped by the wrapped root, over all shards; elsewhere Lightning clips as before."""
    trainer = L.Trainer(strategy=strategy, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False) if strategy == "auto" else None
    model = build_model(training_config())
    root = RecordingRoot()
    if trainer is None:  # an FSDPStrategy needs a GPU to be part of a Trainer: attach what the hook reads
        model._trainer = type("FSDPTrainer", (), {"strategy": strategy, "model": root})()
    else:
        model.trainer = trainer
    for p in model.parameters():
        p.grad = torch.full_like(p, 10.0)
    optimizer = torch.optim.SGD(model.parameters())
    model.configure_gradient_clipping(optimizer, gradient_clip_val=1.0, gradient_clip_algorithm=algorithm)
    assert root.clipped_to == sharded_clip
    if not sharded_clip:  # clipped here, by Lightning: the gradient norm is now 1 or each value within ±1
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        assert (grads.abs().max() <= 1.0 + 1e-6) if algorithm == "value" else abs(grads.norm() - 1.0) < 1e-3


def test_compile_flag_compiles_the_network_in_place_for_training_only():
    """``model.compile=true`` compiles at fit's setup, in place: the state_dict keys (checkpoints) do not change.
    (Compiling the tiny UNet takes minutes on this CPU, so the compiled forward pass itself is not run here.)"""
    plain = build_model(training_config())
    model = build_model(training_config("model.compile=true"))
    assert model.network._compiled_call_impl is None  # built (and loaded by sample/evaluate) uncompiled
    model.setup("fit")
    assert model.network._compiled_call_impl is not None
    assert list(model.state_dict()) == list(plain.state_dict())
    plain.load_state_dict(model.state_dict())
    plain.setup("fit")
    assert plain.network._compiled_call_impl is None


class SeedRecorder(Callback):
    def __init__(self):
        self.seeds = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seeds.append((trainer.global_step, torch.initial_seed()))


def test_gradient_accumulation_draws_new_noise_for_every_batch_of_a_step():
    """trainer.accumulate_grad_batches=2: the two batches of one optimizer step get their own σ and ε (the first
    one the seed it has without accumulation)."""
    cfg = training_config("trainer.max_steps=2", "data.batch_size=4")
    recorder = SeedRecorder()
    trainer = L.Trainer(max_steps=2, accumulate_grad_batches=2, callbacks=[recorder], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(build_model(cfg), datamodule=safe_instantiate(cfg.data))
    seeds = [seed for _, seed in recorder.seeds]
    assert len(seeds) == 4 and len(set(seeds)) == 4
    assert seeds[0] == step_seed(cfg.seed, 0) and seeds[2] == step_seed(cfg.seed, 1)

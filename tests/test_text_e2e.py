"""Text-to-image end to end through the real entry points (run, sample, evaluate), with tiny text encoders."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from cli import run_cli, train_tiny
from lit_diffusion.checkpoint import load_checkpoint
from test_text import tiny_clip

pytestmark = pytest.mark.slow

PAIRS = ["experiment=txt2img_mnist_pairs", "data.num_pairs=256", "data.num_val_pairs=64", "network.attention_resolutions=[16]",
         "text_encoder.width=16", "text_encoder.depth=1", "callbacks.sample_grid.nrow=2"]
PROMPT = "a 3 on the left and an 8 on the right"


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIT_DIFFUSION_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("t2i") / "run"
    train_tiny(run_dir, *PAIRS)
    return run_dir


def test_a_trained_encoder_keeps_its_tokenizer_and_samples_from_prompts(trained, tmp_path):
    checkpoint = load_checkpoint(trained / "checkpoints" / "last.ckpt")
    tokenizer = json.loads(checkpoint["state_dict"]["conditioner.embedders.caption.encoder._extra_state"]["tokenizer"])
    assert {"left", "right"} <= set(tokenizer["model"]["vocab"])  # fitted on the training captions
    assert (trained / "samples" / "final.png").is_file()
    ckpt = f"ckpt={trained / 'checkpoints' / 'last.ckpt'}"
    run_cli("lit_diffusion.sample", ckpt, f"prompt={PROMPT}", "n=2", "guidance_scale=4", "sampler.steps=2",
            f"out={tmp_path / 'one'}", cwd=tmp_path)
    assert (tmp_path / "one" / "prompts.txt").read_text().splitlines() == [PROMPT] * 2
    (tmp_path / "prompts.txt").write_text(f"{PROMPT}\n\nan 8 to the right of a 3\n")
    run_cli("lit_diffusion.sample", ckpt, f"prompts={tmp_path / 'prompts.txt'}", "n=4", "sampler.steps=2",
            f"out={tmp_path / 'file'}", cwd=tmp_path)
    assert (tmp_path / "file" / "prompts.txt").read_text().splitlines() == [PROMPT] * 2 + ["an 8 to the right of a 3"] * 2
    assert (tmp_path / "file" / "grid.png").is_file() and (tmp_path / "file" / "000003.png").is_file()


def test_evaluate_records_prompts_guidance_and_encoder_with_caption_accuracy(trained, tmp_path):
    out = tmp_path / "result.json"
    run_cli("lit_diffusion.evaluate", f"ckpt={trained / 'checkpoints' / 'last.ckpt'}", "metrics=[fid,kid,caption_accuracy]",
            f"prompt={PROMPT}", "n=8", "batch_size=8", "guidance_scale=2", "extractor=random_conv", "split=val",
            "ref_n=16", "kid_subset_size=4", "sampler.steps=2", f"out={out}", "csv=null", cwd=tmp_path)
    result = json.loads(out.read_text())
    assert result["prompts"] == [PROMPT] and result["guidance_scale"] == 2 and result["guider"] == "cfg"
    assert result["text_encoder"][0]["kind"] == "trained" and result["text_encoder"][0]["caption_dropout"] == 0.1
    run = result["runs"][0]
    assert 0 <= run["caption_accuracy"] <= 1 and run["caption_accuracy_n"] == 8
    assert run["judge_held_out_accuracy"] is not None and "fid" in result["summary"]
    proc = run_cli("lit_diffusion.evaluate", f"ckpt={trained / 'checkpoints' / 'last.ckpt'}", "metrics=[caption_accuracy]",
                   "prompt=a photo of a zebra", "n=2", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "cannot tell what these prompts ask for" in proc.stderr


def test_a_frozen_encoder_is_unchanged_by_training_not_in_the_ema_and_not_needed_to_sample(tmp_path):
    source = tiny_clip(tmp_path / "clip")
    original = load_file(tmp_path / "clip" / "model.safetensors")
    run_dir = tmp_path / "run"
    train_tiny(run_dir, *PAIRS[:4], "text_encoder=minilm", f"text_encoder.source={source}", "callbacks.sample_grid.nrow=2")
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    prefix = "conditioner.embedders.caption.encoder.module.model."
    stored = {k.removeprefix(prefix): v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    assert stored.keys() == original.keys()
    assert all(torch.equal(stored[k], original[k]) for k in original)  # trained 4 steps: unchanged
    assert not any(k.startswith("conditioner.embedders.caption.encoder") for k in checkpoint["current_model_state"])
    shutil.rmtree(tmp_path / "clip")  # the checkpoint alone samples
    run_cli("lit_diffusion.sample", f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}", f"prompt={PROMPT}", "n=2",
            "sampler.steps=2", f"out={tmp_path / 'samples'}", cwd=tmp_path)


def test_an_unreachable_encoder_is_one_message_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    proc = train_tiny(tmp_path / "run", *PAIRS[:4], "text_encoder=clip", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "text encoder 'openai/clip-vit-large-patch14' could not be loaded" in proc.stderr

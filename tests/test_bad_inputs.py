"""A battery of bad inputs across the entry points: each ends with one message, exit status 2 (1 for Hydra's own
override errors), no traceback, and nothing written half (no checkpoint, image, result or CSV row).

The entry points run in this process (their real Hydra ``main``, with ``sys.argv`` set), so the battery is fast.
Cases already in tests/test_errors.py (unknown experiment or key, missing/foreign/corrupt checkpoint for sample,
missing dataset, NaN loss) are not repeated.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from PIL import Image

from cli import TINY
from lit_diffusion.datamodules.base import read_image
from lit_diffusion.run import train

WRITTEN = {".ckpt", ".png", ".npz", ".json", ".csv", ".md", ".tmp", ".pt", ".safetensors"}
"""Suffixes of what the entry points write: none may appear after a rejected input (Hydra's .yaml/.log may)."""


def write_png(path: Path, mode: str, size: int, seed: int = 0) -> None:
    """Random pixels in PIL ``mode``; "I;16": 16-bit grayscale using the whole 0 … 65535 range."""
    array = np.random.default_rng(seed).integers(0, 256, (size, size, len(mode) if mode in ("RGB", "RGBA") else 1),
                                                 dtype=np.uint8)
    array = array.squeeze(-1) if array.shape[-1] == 1 else array
    image = Image.fromarray(array.astype(np.uint16) * 257) if mode == "I;16" else Image.fromarray(array).convert(mode)
    image.save(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> SimpleNamespace:
    """Inputs shared by the cases: a tiny trained checkpoint, broken files and image folders."""
    root = tmp_path_factory.mktemp("inputs")
    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
        cfg = compose("config", overrides=[*TINY, "trainer.max_steps=1", "callbacks.sample_grid.every_n_steps=0",
                                           "logger=none", f"paths.output_dir={root / 'run'}"])
    ckpt = train(cfg)["checkpoint"]
    (root / "empty.ckpt").touch()
    (root / "garbage.ckpt").write_bytes(b"\x00garbage" * 10)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    del state["state_dict"]  # a checkpoint with its weights missing
    torch.save(state, root / "no_weights.ckpt")
    for name in ("empty", "corrupt", "truncated", "mixed", "good", "cmyk_sized"):
        (root / name).mkdir()
    for i in range(6):
        for name in ("corrupt", "truncated", "good"):
            write_png(root / name / f"{i}.png", "L", 28, seed=i)
    (root / "corrupt" / "3.png").write_bytes(b"not an image at all")
    png = (root / "good" / "0.png").read_bytes()
    (root / "truncated" / "3.png").write_bytes(png[: len(png) // 2])
    for i, (mode, size) in enumerate([("L", 28), ("RGB", 28), ("RGBA", 32), ("P", 20), ("I;16", 28)]):
        write_png(root / "mixed" / f"{i}.png", mode, size, seed=i)
    (root / "bad.csv").write_bytes(b"\xff\xfe\x00garbage\x00\n\x00")
    (root / "header_only.csv").write_text("name,fid\n")
    (root / "pipeline").mkdir()
    (root / "pipeline" / "model_index.json").write_text('{"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"]')
    return SimpleNamespace(root=root, ckpt=ckpt, **{name: root / name for name in (
        "empty", "corrupt", "truncated", "mixed", "good", "pipeline")})


# (id, entry point, arguments with {placeholders}, exit status, a fragment of the message)
CASES = [
    # training: values out of range, inconsistent networks, broken data folders and checkpoints
    ("run batch_size=0", "run", ["data.batch_size=0"], 2, "data.batch_size"),
    ("run max_steps=0", "run", ["trainer.max_steps=0"], 2, "trainer.max_steps"),
    ("run negative lr", "run", ["model.optimizer.lr=-1e-3"], 2, "lr"),
    ("run EMA decay 1.5", "run", ["callbacks.ema.decay=1.5"], 2, "decay"),
    ("run negative seed", "run", ["seed=-1"], 2, "seed"),
    ("run unknown prediction", "run", ["model.prediction=noise"], 2, "prediction"),
    ("run image size vs levels", "run", ["data.image_size=27"], 2, "image_size"),
    ("run heads do not divide", "run", ["network.num_heads=3"], 2, "num_heads"),
    ("run unknown precision", "run", ["trainer.precision=13-bit"], 2, "precision"),
    ("run zero devices", "run", ["trainer.devices=0"], 2, "devices"),
    ("run sampler steps 0", "run", ["sampler.steps=0"], 2, "steps"),
    ("run empty image folder", "run", ["data=image_folder", "data.root={empty}", "data.image_size=28"], 2, "no .png"),
    ("run corrupt image", "run", ["data=image_folder", "data.root={corrupt}", "data.image_size=28",
                                  "data.channels=1", "data.batch_size=6", "data.val_fraction=0"], 2, "3.png"),
    ("run truncated image, worker", "run", ["data=image_folder", "data.root={truncated}", "data.image_size=28",
                                            "data.channels=1", "data.batch_size=6", "data.val_fraction=0",
                                            "data.num_workers=1"], 2, "3.png"),
    ("run empty checkpoint", "run", ["ckpt_path={root}/empty.ckpt"], 2, "empty.ckpt"),
    ("run checkpoint is a folder", "run", ["ckpt_path={root}"], 2, "is a folder"),
    ("run override syntax", "run", ["model.optimizer.lr=[1e-3,"], 1, "[1e-3,"),
    ("run max_steps not a number", "run", ["trainer.max_steps=many"], 2, "max_steps"),
    # sampling
    ("sample n=0", "sample", ["ckpt={ckpt}", "n=0"], 2, "n=0"),
    ("sample batch_size=0", "sample", ["ckpt={ckpt}", "batch_size=0"], 2, "batch_size"),
    ("sample steps=0", "sample", ["ckpt={ckpt}", "sampler.steps=0"], 2, "steps"),
    ("sample weights", "sample", ["ckpt={ckpt}", "weights=best"], 2, "weights"),
    ("sample format", "sample", ["ckpt={ckpt}", "format=gif"], 2, "format"),
    ("sample labels on unconditional", "sample", ["ckpt={ckpt}", "class_labels=[3]"], 2, "class"),
    ("sample guidance on unconditional", "sample", ["ckpt={ckpt}", "guidance_scale=3"], 2, "guid"),
    ("sample cuda on CPU", "sample", ["ckpt={ckpt}", "device=cuda"], 2, "cuda"),
    ("sample empty checkpoint", "sample", ["ckpt={root}/empty.ckpt"], 2, "empty.ckpt"),
    ("sample no weights", "sample", ["ckpt={root}/no_weights.ckpt"], 2, "no_weights.ckpt"),
    ("sample no ckpt", "sample", [], 2, "ckpt"),
    # evaluation: validated before any reference feature is computed
    ("evaluate n=0", "evaluate", ["ckpt={ckpt}", "n=0", "extractor=random_conv"], 2, "n=0"),
    ("evaluate unknown metric", "evaluate", ["ckpt={ckpt}", "metrics=[fid,sharpness]", "extractor=random_conv"], 2,
     "sharpness"),
    ("evaluate unknown extractor", "evaluate", ["ckpt={ckpt}", "extractor=clip_l14"], 2, "clip_l14"),
    ("evaluate kid subset 0", "evaluate", ["fake={good}", "real={good}", "kid_subset_size=0",
                                           "extractor=random_conv"], 2, "kid_subset_size"),
    ("evaluate empty fake folder", "evaluate", ["fake={empty}", "real={good}", "extractor=random_conv"], 2, "no .png"),
    ("evaluate corrupt fake image", "evaluate", ["fake={corrupt}", "real={good}", "extractor=random_conv"], 2, "3.png"),
    ("evaluate mixed-size folder", "evaluate", ["fake={mixed}", "real={good}", "extractor=random_conv"], 2,
     "differ in size"),
    ("evaluate missing real folder", "evaluate", ["fake={good}", "real={root}/nowhere", "extractor=random_conv"], 2,
     "nowhere"),
    ("evaluate unknown split", "evaluate", ["ckpt={ckpt}", "split=test", "n=4", "extractor=random_conv"], 2, "split"),
    # editing, likelihood, conversion, report
    ("edit unknown mask", "edit", ["ckpt={ckpt}", "mask=star", "n=2", "kid=false"], 2, "star"),
    ("edit unknown guide", "edit", ["task=sdedit", "ckpt={ckpt}", "guide=sepia", "n=2", "kid=false"], 2, "sepia"),
    ("edit n=0", "edit", ["ckpt={ckpt}", "n=0"], 2, "n=0"),
    ("edit ddib without target", "edit", ["task=ddib", "ckpt={ckpt}", "n=2"], 2, "target_ckpt"),
    ("edit unknown task", "edit", ["task=colorize", "ckpt={ckpt}"], 1, "colorize"),
    ("likelihood n=0", "likelihood", ["ckpt={ckpt}", "n=0"], 2, "n=0"),
    ("likelihood unknown trace", "likelihood", ["ckpt={ckpt}", "trace=hutchinson", "n=2"], 2, "hutchinson"),
    ("likelihood tolerance", "likelihood", ["ckpt={ckpt}", "rtol=0", "n=2"], 2, "rtol"),
    ("convert missing source", "convert", ["source={root}/nowhere", "out={out}.ckpt"], 2, "nowhere"),
    ("convert broken pipeline", "convert", ["source={pipeline}", "out={out}.ckpt"], 2, "model_index.json"),
    ("convert no out", "convert", ["source={pipeline}"], 2, "'out' must be given"),
    ("report missing results", "report", ["results={root}/nowhere.csv"], 2, "nowhere.csv"),
    ("report corrupt results", "report", ["results={root}/bad.csv"], 2, "bad.csv"),
    ("report unknown plot", "report", ["results={root}/header_only.csv", "plot=bubbles"], 2, "bubbles"),
]


def call(entry: str, args: list[str]) -> int:
    """Run ``python -m lit_diffusion.<entry> ARGS`` in this process; its exit status."""
    main = importlib.import_module(f"lit_diffusion.{entry}").main
    with mock.patch.object(sys, "argv", [f"lit_diffusion.{entry}", *args]), \
            mock.patch.dict("os.environ", {"HYDRA_FULL_ERROR": "0"}), pytest.raises(SystemExit) as stopped:
        main()
    return stopped.value.code


@pytest.mark.parametrize("entry, args, status, fragment", [case[1:] for case in CASES], ids=[c[0] for c in CASES])
def test_bad_input(entry, args, status, fragment, world, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LIT_DIFFUSION_CACHE", str(tmp_path / "cache"))
    places = {**vars(world), "out": tmp_path / "out"}
    args = [a.format(**places) for a in args]
    defaults = {"run": [*TINY, "logger=csv", f"hydra.run.dir={tmp_path}/run"],
                "sample": [f"out={tmp_path}/out", f"hydra.run.dir={tmp_path}/run"],
                "evaluate": [f"out={tmp_path}/out/result.json", f"csv={tmp_path}/results.csv", f"hydra.run.dir={tmp_path}/run"],
                "edit": [f"out={tmp_path}/out", f"hydra.run.dir={tmp_path}/run"],
                "likelihood": [f"out={tmp_path}/out.json", f"hydra.run.dir={tmp_path}/run"],
                "convert": [f"hydra.run.dir={tmp_path}/run"],
                "report": [f"out={tmp_path}/out/table", f"hydra.run.dir={tmp_path}/run"]}[entry]
    code = call(entry, [*defaults, *args])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert code == status, text
    assert "Traceback" not in text, text
    assert fragment in text, text
    if status == 2:
        assert captured.err.count("lit_diffusion error:") == 1, text
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in WRITTEN and "cache" not in p.parts]
    assert not written, written


def test_mixed_mode_images_are_read_not_rejected(world):
    """Grayscale, RGB, RGBA, palette and 16-bit files in one folder all load in the data's mode; 16-bit values are
    scaled to 8 bits (PIL's own conversion would clip them to 255)."""
    for path in sorted(world.mixed.iterdir()):
        for mode, channels in (("L", 1), ("RGB", 3)):
            array = np.asarray(read_image(path, mode))
            assert array.dtype == np.uint8 and array.shape[2:] in ((), (channels,)) and array.ndim == (2 if channels == 1 else 3)
    with Image.open(world.mixed / "4.png") as sixteen:
        assert sixteen.mode.startswith("I")
        expected = (np.asarray(sixteen, dtype=np.float64) / 257).round()
    assert expected.max() > 200  # PIL's convert("L") would give 255 nearly everywhere
    np.testing.assert_array_equal(np.asarray(read_image(world.mixed / "4.png", "L")), expected)

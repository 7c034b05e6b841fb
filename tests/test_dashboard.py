"""The W&B dashboard of a run, read back from the offline run's own files: the run's config (flattened, with the
experiment and git commit), loss / learning-rate / evaluation curves, sample grids as images, system metrics,
and the grouping of multirun jobs."""

from __future__ import annotations

import json
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from wandb.proto.wandb_internal_pb2 import Record

from cli import train_tiny
from lit_diffusion.loggers import flatten, wandb_settings
from lit_diffusion.provenance import git_commit

BLOCK = 32768


def wandb_records(path: Path) -> list[Record]:
    """The records of a ``run-*.wandb`` file: after a 7-byte header (``:W&B``, magic, version), LevelDB-log-style
    32 KiB blocks of chunks (CRC32C 4 bytes, length 2 bytes little-endian, type 1 byte: 1 full, 2 first, 3 middle,
    4 last) holding serialized protobuf ``Record`` messages.  wandb ≥ 0.19 reads them only in its Go core, so
    the test reads them here."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, records, pending = 7, [], b""
    while pos + 7 <= len(data):
        if (left := BLOCK - pos % BLOCK) < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_offline_run_carries_the_dashboard(tmp_path):
    run_dir = tmp_path / "run"
    proc = train_tiny(run_dir, "logger=wandb", "callbacks.evaluation.every_n_steps=2",
                      "callbacks.evaluation.num_samples=8", "callbacks.evaluation.batch_size=8",
                      "callbacks.evaluation.extractor=random_conv", "callbacks.evaluation.ref_n=32",
                      "callbacks.evaluation.sampler.steps=2")
    assert proc.stdout.count("logging offline") == 1
    (run,) = (run_dir / "wandb").glob("offline-run-*")
    records = wandb_records(next(run.glob("run-*.wandb")))
    kinds = {record.WhichOneof("record_type") for record in records}
    updates = [record.run.config for record in records if record.HasField("run")]  # wandb.init's config
    updates += [record.config for record in records if record.HasField("config")]  # later updates
    config = {item.key: json.loads(item.value_json) for update in updates for item in update.update}
    assert config["experiment"] == "ddpm_mnist" and config["git_commit"] == git_commit()
    assert config["model.optimizer.lr"] == 1e-3 and config["network.base_channels"] == 8
    logged = {item.key or "/".join(item.nested_key) for record in records if record.HasField("history")
              for item in record.history.item}
    assert {"train/loss", "val/loss", "lr-Adam", "eval/fid", "eval/kid"} <= logged
    assert any(key.startswith("samples") for key in logged)
    assert len(list(run.glob("files/media/images/samples_*.png"))) >= 2  # the grids at steps 2 and 4
    assert "stats" in kinds  # W&B's system metrics (CPU, memory, disk, network)
    (header,) = [record.run for record in records if record.HasField("run")]
    assert header.run_group == "ddpm_mnist"


def test_multirun_jobs_are_grouped_by_sweep(tmp_path):
    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
        cfg = compose("config", overrides=["logger=wandb", "logger.wandb.offline=true", f"paths.output_dir={tmp_path}",
                                           f"hydra.sweep.dir={tmp_path}/multirun/2026-11-26/sweep_lr"],
                      return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode = "MULTIRUN"
        cfg.hydra.job.num = 3
    HydraConfig.instance().set_config(cfg)
    task_cfg = cfg.copy()
    with open_dict(task_cfg):
        del task_cfg["hydra"]  # what Hydra passes to the task function
    try:
        settings = wandb_settings(task_cfg, {"group": "ddpm_mnist", "offline": True})
    finally:
        HydraConfig.instance().cfg = None
    assert settings["group"] == "ddpm_mnist/sweep_lr" and settings["job_type"] == "job3"
    assert settings["config"]["trainer.max_steps"] == cfg.trainer.max_steps


def test_flatten_gives_dotted_keys():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {"a.b": 1, "a.c.d": [1, 2], "e": None}

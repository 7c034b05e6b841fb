"""``python -m lit_diffusion.prepare``: the reference features of a run's in-training evaluation, computed ahead
into the cache that the run then reads (install.sh runs it for the main job)."""

from __future__ import annotations

from hydra import compose, initialize_config_module

from cli import TINY, run_cli, train_in_process
from lit_diffusion.prepare import prepare

EVALUATION = ["callbacks.evaluation.every_n_steps=2", "callbacks.evaluation.num_samples=4",
              "callbacks.evaluation.extractor=random_conv", "callbacks.evaluation.ref_n=16",
              "callbacks.evaluation.sampler.steps=2"]


def compose_prepare(*overrides: str):
    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
        return compose("prepare", overrides=[*TINY, *overrides])


def test_prepare_caches_exactly_what_the_run_reads(tmp_path, monkeypatch):
    monkeypatch.setenv("LIT_DIFFUSION_CACHE", str(tmp_path / "cache"))
    ids = prepare(compose_prepare(*EVALUATION))
    entries = sorted((tmp_path / "cache" / "reference").glob("*.npz"))
    assert len(ids) == 1 and [entry.stem for entry in entries] == ids
    mtime = entries[0].stat().st_mtime_ns
    assert prepare(compose_prepare(*EVALUATION)) == ids  # read back, not recomputed
    train_in_process(tmp_path / "run", *TINY, *EVALUATION)
    # the run's first evaluation found the prepared entry: no second entry, the first untouched
    assert sorted((tmp_path / "cache" / "reference").glob("*.npz")) == entries
    assert entries[0].stat().st_mtime_ns == mtime


def test_prepare_without_evaluation_says_so_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("LIT_DIFFUSION_CACHE", str(tmp_path / "cache"))
    proc = run_cli("lit_diffusion.prepare", "callbacks.evaluation=null", cwd=tmp_path)
    assert "nothing to prepare" in proc.stdout
    assert not any(tmp_path.iterdir())  # no cache entry, no log file, no run folder

"""Files written outside Lightning's checkpoints: whole or not at all, and concurrent CSV appends keep every row."""

from __future__ import annotations

import csv
import multiprocessing
import stat

import numpy as np
import pytest
import torch

from lit_diffusion.evaluate import append_csv
from lit_diffusion.files import atomic_write, atomic_write_text
from lit_diffusion.metrics import reference_features

ROWS = 40


def append_rows(path, writer: int) -> None:
    for i in range(ROWS):  # the two writers' rows have different columns: every append may rewrite the header
        append_csv(path, {"name": f"w{writer}", "i": i, f"only_w{writer}": f"{writer}-{i}-" + "x" * 200})


def test_two_processes_appending_to_one_csv_keep_every_row_whole(tmp_path):
    path = tmp_path / "results.csv"
    context = multiprocessing.get_context("fork")  # no re-import: the writers start at once
    writers = [context.Process(target=append_rows, args=(path, w)) for w in (0, 1)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=120)
        assert process.exitcode == 0
    rows = list(csv.DictReader(path.open(newline="")))
    assert len(rows) == 2 * ROWS
    for w in (0, 1):
        mine = [r for r in rows if r["name"] == f"w{w}"]
        assert [int(r["i"]) for r in mine] == list(range(ROWS))  # none lost, none twice, in order
        assert all(r[f"only_w{w}"] == f"{w}-{r['i']}-" + "x" * 200 and not r[f"only_w{1 - w}"] for r in mine)
    assert not list(tmp_path.glob(".results.csv.*.tmp"))


def test_an_interrupted_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "result.json"
    atomic_write_text(path, '{"fid": 1.0}')

    def dies_halfway(file):
        file.write(b'{"fid": 2.')
        raise KeyboardInterrupt  # a signal, a full disk, a dying node …

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, dies_halfway)
    assert path.read_text() == '{"fid": 1.0}' and [p.name for p in tmp_path.iterdir()] == ["result.json"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by others, unlike a bare mkstemp file


def test_reference_cache_entries_are_written_whole(tmp_path, monkeypatch):
    monkeypatch.setenv("LIT_DIFFUSION_CACHE", str(tmp_path))

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reference_features({"data": "a"}, interrupted)
    assert not list(tmp_path.rglob("*.npz")) and not list(tmp_path.rglob("*.tmp"))
    features = torch.randn(5, 3)
    computed = reference_features({"data": "a"}, lambda: features)
    cached = reference_features({"data": "a"}, lambda: pytest.fail("recomputed"))
    assert not computed.cached and cached.cached and computed.path.suffix == ".npz"
    np.testing.assert_array_equal(cached.features.numpy(), features.numpy())
    assert [p.name for p in computed.path.parent.iterdir()] == [computed.path.name]

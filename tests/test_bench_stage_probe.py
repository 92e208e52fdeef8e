"""bench/stage_probe.py: the per-step internals of a real training run (rccl-train's own command line plus
one hook): one row per optimiser step of each stage, the learning rate the step applied, finite gradient
norms, and the class gaps measured on the step's own labels."""
from __future__ import annotations

import csv

import pytest

from bench import stage_probe
from tiny_data import make_tiny_manifest, tiny_overrides


@pytest.mark.parametrize("kind", ["rccl", "ce"])
def test_probe_writes_a_row_per_step(tmp_path, kind):
    manifest = make_tiny_manifest(tmp_path / "data")
    out = tmp_path / "probe.csv"
    argv = ["--out", str(out), "--", *tiny_overrides(manifest, tmp_path / "runs", **{
        "loss.kind": kind, "stage1.epochs": 2, "stage1.warmup_epochs": 1, "name": "p"})]
    assert stage_probe.main(argv) == 0
    rows = list(csv.DictReader(open(out, encoding="utf-8")))
    assert list(rows[0]) == list(stage_probe.FIELDS)
    run = tmp_path / "runs" / "p"
    epochs = [r for r in csv.DictReader(open(run / "epochs.csv", encoding="utf-8"))]
    s1 = [r for r in rows if r["stage"] == "1"]
    assert len(s1) > 2 and [int(r["step"]) for r in s1 if r["epoch"] == "1"] == list(range(len(s1) // 2))
    lrs = [float(r["lr"]) for r in s1]
    assert lrs[0] < lrs[len(s1) // 2 - 1]  # the warm-up epoch's rising rate, as applied
    assert all(float(r["grad_encoder"]) > 0 and float(r["update_ratio"]) > 0 for r in s1)
    assert all(-2 <= float(r["z_gap"]) <= 2 and r["feat_gap"] != "" for r in s1)
    assert (kind == "ce") == (not any(r["stage"] == "2" for r in rows))  # CE has no stage-2 epochs
    assert len(epochs) == (2 if kind == "ce" else 3)
    assert not (run / "metrics.json").exists()  # the probe never evaluates
    table = stage_probe.summarize([out]).splitlines()
    assert table[0].startswith("| probe | stage | epoch | steps | lr | loss |")
    assert table[2].startswith(f"| probe | 1 | 1 | {len(s1) // 2} |") and len(table) == 2 + len(epochs)


def test_probe_usage_error(capsys, tmp_path):
    assert stage_probe.main(["--out", "x.csv"]) == 2
    assert "usage" in capsys.readouterr().err
    assert stage_probe.main(["--summarize", str(tmp_path / "none.csv")]) == 2
    assert "not found" in capsys.readouterr().err

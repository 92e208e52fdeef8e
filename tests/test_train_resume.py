"""A run killed with SIGKILL and resumed with --resume ends exactly where an uninterrupted run does.

The kill is deterministic: RCCL_TEST_KILL_AT=STAGE:EPOCH:STEP makes the training process SIGKILL itself
right after that optimiser step (rccl.train.engine reads it), so the kill lands inside the epoch named,
every time, with no sleep or poll."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rccl.cli.train import main
from rccl.run import RunDir
from tiny_data import make_tiny_manifest, tiny_overrides

ROOT = Path(__file__).resolve().parents[1]


def _killed_run(args, kill_at: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RCCL_TEST_KILL_AT": kill_at,
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "rccl.cli.train", *args], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)


@pytest.mark.parametrize("kill_at, last_epochs", [("1:2:2", {1: 1, 2: None}), ("2:1:1", {1: 2, 2: None})])
def test_resume_after_sigkill_continues_from_the_last_checkpoint(tmp_path, capsys, kill_at, last_epochs):
    manifest = make_tiny_manifest(tmp_path / "data")
    common = tiny_overrides(manifest, tmp_path / "runs", **{"stage1.epochs": 2, "stage2.epochs": 1})
    assert main(common + ["name=whole"]) == 0  # uninterrupted, in this process

    killed = _killed_run(common + ["name=killed"], kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stdout
    run = RunDir(tmp_path / "runs" / "killed")
    for stage, epoch in last_epochs.items():  # killed inside that epoch: the one before is the last checkpoint
        state = run.latest_checkpoint(stage)
        assert (state["epoch"] if state else None) == epoch
    assert not list(run.checkpoint_dir.rglob("*.tmp"))

    capsys.readouterr()
    assert main(["--resume", str(run.path)]) == 0
    resumed_stage = int(kill_at[0])
    done = last_epochs[resumed_stage] or 0
    if done:
        assert f"stage {resumed_stage}: resumed after epoch {done}" in capsys.readouterr().err

    whole = RunDir(tmp_path / "runs" / "whole")
    for stage in (1, 2):
        a, b = whole.latest_checkpoint(stage), run.latest_checkpoint(stage)
        assert a["epoch"] == b["epoch"]
        for key, value in a["model"].items():
            assert torch.equal(value, b["model"][key]), f"stage {stage}: {key} differs after resume"
    rows = run.epochs_csv.read_text().splitlines()
    assert [r.split(",")[:2] for r in rows[1:]] == [["1", "1"], ["1", "2"], ["2", "1"]]


def test_a_malformed_kill_hook_is_named(tmp_path):
    manifest = make_tiny_manifest(tmp_path / "data")
    killed = _killed_run(tiny_overrides(manifest, tmp_path / "runs"), "soon")
    assert killed.returncode == 2 and "RCCL_TEST_KILL_AT='soon': expected STAGE:EPOCH:STEP" in killed.stdout

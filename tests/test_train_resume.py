"""A run killed with SIGKILL and resumed with --resume ends exactly where an uninterrupted run does, also
with data.workers=2; a kill between a checkpoint and its epochs.csv row loses neither.

The kill is deterministic: tests/kill_train.py registers a hook that SIGKILLs the training process right
after a given optimiser step (the training loop reads no environment and knows no test)."""
import ast
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


def _killed_run(args, kill: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, str(ROOT / "tests" / "kill_train.py"), kill, *args], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)


def _same_weights(a: RunDir, b: RunDir) -> None:
    for stage in (1, 2):
        x, y = a.latest_checkpoint(stage), b.latest_checkpoint(stage)
        assert x["epoch"] == y["epoch"]
        for key, value in x["model"].items():
            assert torch.equal(value, y["model"][key]), f"stage {stage}: {key} differs after resume"


@pytest.mark.parametrize("kill, last_epochs, workers", [
    ("step:1:2:2", {1: 1, 2: None}, 0),
    ("step:2:1:1", {1: 2, 2: None}, 0),
    ("step:1:2:1", {1: 1, 2: None}, 2),   # persistent workers: the resumed ones must give the same views
    ("csv:1:2", {1: 2, 2: None}, 0),      # checkpoint of epoch 2 written, its epochs.csv row not
])
def test_resume_after_sigkill_continues_from_the_last_checkpoint(tmp_path, capsys, kill, last_epochs, workers):
    manifest = make_tiny_manifest(tmp_path / "data")
    common = tiny_overrides(manifest, tmp_path / "runs", **{"stage1.epochs": 2, "stage2.epochs": 1,
                                                            "data.workers": workers})
    assert main(common + ["name=whole"]) == 0  # uninterrupted, in this process

    killed = _killed_run(common + ["name=killed"], kill)
    assert killed.returncode == -signal.SIGKILL, killed.stdout
    run = RunDir(tmp_path / "runs" / "killed")
    for stage, epoch in last_epochs.items():  # killed inside that epoch: the one before is the last checkpoint
        state = run.latest_checkpoint(stage)
        assert (state["epoch"] if state else None) == epoch
    assert not list(run.checkpoint_dir.rglob("*.tmp"))
    if kill.startswith("csv"):
        assert len(run.epochs_csv.read_text().splitlines()) == 2  # header + epoch 1: the kill took epoch 2's row

    capsys.readouterr()
    assert main(["--resume", str(run.path)]) == 0
    resumed_stage = int(kill.split(":")[1])
    done = last_epochs[resumed_stage] or 0
    if done and not kill.startswith("csv"):
        assert f"stage {resumed_stage}: resumed after epoch {done}" in capsys.readouterr().err

    whole = RunDir(tmp_path / "runs" / "whole")
    _same_weights(whole, run)
    rows = run.epochs_csv.read_text().splitlines()
    assert [r.split(",")[:3] for r in rows[1:]] == [r.split(",")[:3] for r in whole.epochs_csv.read_text().splitlines()[1:]]
    assert [r.split(",")[:2] for r in rows[1:]] == [["1", "1"], ["1", "2"], ["2", "1"]]


def test_the_training_loop_reads_no_environment_and_knows_no_test():
    for name in ("engine.py", "hooks.py", "runner.py", "stage1.py", "stage2.py"):
        tree = ast.parse((ROOT / "rccl" / "train" / name).read_text(encoding="utf-8"))
        names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} | \
                {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        if name != "runner.py":  # the runner reads torchrun's LOCAL_RANK, nothing else
            assert not {"environ", "getenv"} & names, f"rccl/train/{name} reads the environment"
        assert not {"SIGKILL", "kill"} & names, f"rccl/train/{name} kills its own process"
        source = (ROOT / "rccl" / "train" / name).read_text(encoding="utf-8")
        assert "RCCL_TEST" not in source

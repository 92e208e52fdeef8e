"""A run killed with SIGKILL and resumed with --resume ends exactly where an uninterrupted run does."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from rccl.cli.train import main
from rccl.train import checkpoint as ckpt
from train_tiny_data import make_tiny_manifest, tiny_overrides

ROOT = Path(__file__).resolve().parents[1]

# rccl-train with every training batch slowed down, so that a kill lands inside an epoch.
SLOW_TRAIN = """
import sys, time
import rccl.data.pairing as pairing
_iter = pairing.ForgeryPairSampler.__iter__
def slow(self):
    for batch in _iter(self):
        time.sleep(float(sys.argv[1]))
        yield batch
pairing.ForgeryPairSampler.__iter__ = slow
from rccl.cli.train import main
sys.exit(main(sys.argv[2:]))
"""


def _run(args, delay=0.0, **popen):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", SLOW_TRAIN, str(delay), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def test_resume_after_sigkill_continues_from_the_last_checkpoint(tmp_path, capsys):
    manifest = make_tiny_manifest(tmp_path / "data")
    common = tiny_overrides(manifest, tmp_path / "runs", **{"stage1.epochs": 2, "stage2.epochs": 1})
    assert main(common + ["name=whole"]) == 0  # uninterrupted, in this process

    killed = _run(common + ["name=killed"], delay=0.3)
    first = tmp_path / "runs" / "killed" / "checkpoints" / "stage1_001.pt"
    deadline = time.time() + 240
    while not first.exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert first.exists(), killed.communicate()[0]
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    run = tmp_path / "runs" / "killed"
    assert ckpt.latest(run, 1)["epoch"] == 1  # killed inside epoch 2: epoch 1 is the last checkpoint
    assert not list((run / "checkpoints").glob("*.tmp"))

    capsys.readouterr()
    assert main(["--resume", str(run)]) == 0
    assert "stage 1: resumed after epoch 1 of 2" in capsys.readouterr().out

    for stage in (1, 2):
        a = ckpt.latest(tmp_path / "runs" / "whole", stage)
        b = ckpt.latest(run, stage)
        assert a["epoch"] == b["epoch"]
        for key, value in a["model"].items():
            assert torch.equal(value, b["model"][key]), f"stage {stage}: {key} differs after resume"
    rows = (run / "epochs.csv").read_text().splitlines()
    assert [r.split(",")[:2] for r in rows[1:]] == [["1", "1"], ["1", "2"], ["2", "1"]]

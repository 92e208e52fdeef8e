"""A run killed with SIGKILL and resumed with --resume ends exactly where an uninterrupted run does, also
with data.workers=2; a kill between a checkpoint and its epochs.csv row loses neither.

The kill is deterministic: tests/kill_train.py registers a hook that SIGKILLs the training process right
after a given optimiser step (the training loop reads no environment and knows no test)."""
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


@pytest.mark.parametrize("kill, last_epochs, workers, fakes", [
    ("step:1:2:2", {1: 1, 2: None}, 0, "real"),
    ("step:2:1:1", {1: 2, 2: None}, 0, "real"),
    ("step:1:2:1", {1: 1, 2: None}, 2, "real"),   # persistent workers: the resumed ones must give the same views
    ("csv:1:2", {1: 2, 2: None}, 0, "real"),      # checkpoint of epoch 2 written, its epochs.csv row not
    ("step:1:2:1", {1: 1, 2: None}, 2, "sbi"),    # the pseudo-fakes after a resume: the same blends
])
def test_resume_after_sigkill_continues_from_the_last_checkpoint(tmp_path, capsys, kill, last_epochs, workers, fakes):
    manifest = make_tiny_manifest(tmp_path / "data", landmarks=fakes != "real")
    common = tiny_overrides(manifest, tmp_path / "runs", **{"stage1.epochs": 2, "stage2.epochs": 1,
                                                            "data.workers": workers, "data.fakes": fakes})
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


class _RecordingEnviron(dict):
    """os.environ's contents; remembers each key read by rccl's own code, with the reading module."""

    def __init__(self, data):
        super().__init__(data)
        self.reads: set[tuple[str, str]] = set()

    def _note(self, key):
        frame = sys._getframe(2)
        while frame is not None and frame.f_code.co_filename.endswith(("os.py", "_collections_abc.py")):
            frame = frame.f_back
        where = Path(frame.f_code.co_filename).resolve() if frame is not None else None
        if where is not None and (ROOT / "rccl") in where.parents:
            self.reads.add((where.relative_to(ROOT).as_posix(), key))

    def __getitem__(self, key):
        self._note(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self._note(key)
        return super().get(key, default)

    def __contains__(self, key):
        self._note(key)
        return super().__contains__(key)


def test_training_reads_only_torchruns_variables_and_the_loop_reads_none(tmp_path, monkeypatch):
    """What a run reads from the environment, recorded while it runs: torchrun's variables, read by the
    modules that set up processes and launches; the stage loop, its hooks and the stages read nothing
    (the tests' kills come in as hooks, tests/kill_train.py)."""
    manifest = make_tiny_manifest(tmp_path / "data")
    recording = _RecordingEnviron(os.environ)
    monkeypatch.setattr(os, "environ", recording)
    assert main(tiny_overrides(manifest, tmp_path / "runs", **{"stage1.epochs": 1})) == 0
    readers = {module for module, _ in recording.reads}
    assert {key for _, key in recording.reads} <= {"WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RESTART_COUNT",
                                                    "TORCHELASTIC_RUN_ID"}, recording.reads
    assert readers <= {"rccl/cli/train.py", "rccl/train/distributed.py", "rccl/train/elastic.py"}, readers
    assert ("rccl/train/elastic.py", "TORCHELASTIC_RESTART_COUNT") in recording.reads  # the recording works


def test_a_torchrun_restart_continues_its_own_run_and_another_job_gets_its_own_folder(tmp_path, monkeypatch,
                                                                                      capsys):
    """Under torchrun (simulated by its environment) the same command line, restarted by the agent
    (TORCHELASTIC_RESTART_COUNT 1) after its worker died, continues the folder its first attempt claimed
    from the last checkpoint and ends where an uninterrupted run does; a new job with the same name gets a
    folder of its own, on a first attempt and on a restart that finds no folder of its job."""
    from rccl.train.engine import HookBase

    class DieAfterFirstEpoch(HookBase):
        def after_epoch(self, loop) -> None:
            if (loop.number, loop.epoch) == (1, 0):
                raise RuntimeError("the worker died")

    manifest = make_tiny_manifest(tmp_path / "data")
    common = tiny_overrides(manifest, tmp_path / "runs", **{"stage1.epochs": 2, "name": "job"})
    assert main(common + ["train.out=" + str(tmp_path / "whole")]) == 0
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    with pytest.raises(RuntimeError, match="the worker died"):
        main(common, hooks=[DieAfterFirstEpoch()])
    run = RunDir(tmp_path / "runs" / "job")
    assert run.latest_checkpoint(1)["epoch"] == 1 and run.job().startswith("agent:")
    capsys.readouterr()
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert main(common) == 0
    err = capsys.readouterr().err
    assert f"torchrun restart 1: continuing {run.path}" in err and "stage 1: resumed after epoch 1" in err
    _same_weights(RunDir(tmp_path / "whole" / "job"), run)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["job"]

    short = common + ["stage1.epochs=1", "stage2.epochs=0"]
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "second")  # --rdzv-id: the job's name for its restarts
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    assert main(short) == 0
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "third")  # its first attempt died before claiming a folder
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert main(short) == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["job", "job-2", "job-3"]
    assert [RunDir(tmp_path / "runs" / n).job() for n in ("job-2", "job-3")] == ["rdzv:second", "rdzv:third"]

"""Resuming a finished run never destroys it: a finished cross-entropy run and a finished contrastive run
survive --resume (byte-identical checkpoints, the same metrics), and so does Ctrl-C during the evaluation
after training followed by --resume (which then runs the evaluation, and only it). A key the finished
stages cannot honour is an error naming it, and nothing is rewritten."""
import json

import pytest

import rccl.evaluate
from rccl.cli.train import main
from rccl.run import RunDir
from tiny_data import make_tiny_manifest, tiny_overrides


def _files(run: RunDir) -> dict:
    return {p.relative_to(run.path).as_posix(): p.read_bytes() for p in run.files()
            if p.suffix in (".pt", ".yaml", ".csv") or p.name.startswith("metrics")}


def _metrics(run: RunDir) -> dict:
    data = json.loads(run.metrics_path().read_text())
    return {k: v for k, v in data.items() if k not in ("run", "manifest", "created")}


@pytest.mark.parametrize("kind", ["ce", "rccl"])
def test_a_finished_run_survives_resume_and_an_interrupted_evaluation(tmp_path, capsys, monkeypatch, kind):
    manifest = make_tiny_manifest(tmp_path / "data")
    common = tiny_overrides(manifest, tmp_path / "runs", **{"loss.kind": kind, "stage1.epochs": 1,
                                                            "eval.after_training": "true", "eval.qualities": "[raw]"})
    assert main(common + ["name=whole"]) == 0
    whole = RunDir(tmp_path / "runs" / "whole")
    before = _files(whole)
    assert "metrics.json" in before and "checkpoints/stage2_last.pt" in before

    capsys.readouterr()
    assert main(["--resume", str(whole.path)]) == 0
    assert "already trained" in capsys.readouterr().err
    assert _files(whole) == before  # nothing retrained, re-saved or re-evaluated

    assert main(["--resume", str(whole.path), "stage1.epochs=5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "stage1.epochs cannot change from 1 to 5" in err
    assert _files(whole) == before

    # Ctrl-C during the evaluation after training, then --resume: the evaluation runs, nothing else
    real_evaluate = rccl.evaluate.evaluate_run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rccl.evaluate, "evaluate_run", interrupted)
    assert main(common + ["name=stopped"]) == 130
    stopped = RunDir(tmp_path / "runs" / "stopped")
    assert not stopped.metrics_path().exists()
    trained = _files(stopped)
    monkeypatch.setattr(rccl.evaluate, "evaluate_run", real_evaluate)
    assert main(["--resume", str(stopped.path)]) == 0
    after = _files(stopped)
    assert {k: after[k] for k in trained} == trained  # checkpoints, config.yaml, epochs.csv untouched
    assert _metrics(stopped) == _metrics(whole)
    assert main(["--resume", str(stopped.path)]) == 0 and _files(stopped) == after


def test_resume_refuses_a_changed_key_of_a_started_stage_and_allows_runtime_keys(tmp_path, capsys):
    manifest = make_tiny_manifest(tmp_path / "data")
    common = tiny_overrides(manifest, tmp_path / "runs", **{"stage1.epochs": 1, "stage2.epochs": 1})
    assert main(common + ["--stage", "1"]) == 0
    run = RunDir(tmp_path / "runs" / "run")
    config = run.config_path.read_bytes()
    for override, key in [("loss.temperature=0.5", "loss.temperature"), ("data.augment.flip=0", "data.augment.flip"),
                          ("model.proj_dim=8", "model.proj_dim"), ("train.seed=3", "train.seed")]:
        assert main(["--resume", str(run.path), override]) == 2
        assert f"{key} cannot change" in capsys.readouterr().err
    assert run.config_path.read_bytes() == config and not run.last_checkpoint_path(2).exists()
    # stage 2 has not started: its keys may change, and config.yaml says what stage 2 was trained with
    assert main(["--resume", str(run.path), "stage2.lr=0.05", "train.log_every=3", "--stage", "2"]) == 0
    saved = run.config()
    assert saved["stage2"]["lr"] == 0.05 and run.latest_checkpoint(2)["config"]["stage2"]["lr"] == 0.05

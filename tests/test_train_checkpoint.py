"""Checkpoints: weights_only-loadable, atomic, pruned; the stage-2 detector loader; the model's weights
options; a full tiny run's folder layout; a non-finite loss stops without writing anything."""
import random

import numpy as np
import pytest
import torch
import yaml

from rccl import checkpoint as ckpt
from rccl.model import ModelError, build_model
from rccl.train.config import load_config
from rccl.run import CheckpointError, RunDir
from rccl.train.runtime import TrainingError
from rccl.data.pairing import ForgeryPairSampler
from rccl.train import hooks as rccl_hooks
from rccl.train.runner import train, training_records
from tiny_data import make_tiny_manifest, tiny_overrides


def _cfg(**extra):
    return load_config(None, [f"{k}={v}" for k, v in {"model.encoder": "test_byobnet", "data.image_size": 16,
                                                       "model.pretrained": "false", "model.allow_scratch": "true",
                                                       "model.proj_hidden": 32, "model.proj_dim": 16, **extra}.items()])


def test_rng_state_round_trips_and_checkpoint_loads_weights_only(tmp_path):
    cfg = _cfg()
    model = build_model(cfg)
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    state = {"config": cfg, "model": model.state_dict(), "rng": ckpt.rng_state()}
    RunDir(tmp_path).save_checkpoint(1, 1, state)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    raw = torch.load(tmp_path / "checkpoints" / "stage1_001.pt", weights_only=True)
    assert raw["stage"] == 1 and raw["epoch"] == 1 and raw["config"] == cfg
    ckpt.set_rng_state(ckpt.read(RunDir(tmp_path).last_checkpoint_path(1))["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]


def test_numbered_checkpoints_are_pruned_and_last_follows(tmp_path):
    for epoch in range(1, 5):
        RunDir(tmp_path).save_checkpoint(1, epoch, {"x": torch.tensor(epoch)}, keep_epochs=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["stage1_003.pt", "stage1_004.pt", "stage1_last.pt"]
    assert int(ckpt.read(RunDir(tmp_path).last_checkpoint_path(1))["x"]) == 4
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


def test_a_checkpoint_is_written_once_and_pruning_keeps_the_newest_epochs_by_number(tmp_path, monkeypatch):
    """stage1_last.pt is another name of the newest numbered file (its bytes not written twice), and pruning
    compares epochs as numbers: stage1_1000.pt is newer than stage1_999.pt (issue 27, defect 6)."""
    from rccl import fileio

    writes = []
    real = fileio.write_bytes
    monkeypatch.setattr(ckpt, "write_bytes", lambda path, data: writes.append(path) or real(path, data))
    run = RunDir(tmp_path)
    for epoch in (998, 999, 1000):
        run.save_checkpoint(1, epoch, {"x": torch.tensor(epoch)}, keep_epochs=2)
    assert len(writes) == 3
    names = sorted(p.name for p in run.checkpoint_dir.iterdir())
    assert names == ["stage1_1000.pt", "stage1_999.pt", "stage1_last.pt"]
    assert run.last_checkpoint_path(1).samefile(run.checkpoint_path(1, 1000))
    assert int(ckpt.read(run.last_checkpoint_path(1))["x"]) == 1000


def test_foreign_or_missing_checkpoints_are_named(tmp_path):
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an rccl checkpoint"):
        ckpt.read(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no stage-2 checkpoint"):
        RunDir(tmp_path).load_detector()


def test_offline_pretrained_without_a_file_is_one_clear_error_unless_scratch_is_allowed(monkeypatch, capsys):
    import timm

    real = timm.create_model

    def offline(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("URLError: <urlopen error [Errno -3] Temporary failure in name resolution>")
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ModelError, match="could not load ImageNet weights.*model.weights=PATH"):
        build_model(_cfg(**{"model.pretrained": "true", "model.allow_scratch": "false"}))
    build_model(_cfg(**{"model.pretrained": "true", "model.allow_scratch": "true"}))
    assert "training from scratch" in capsys.readouterr().err


def test_local_weights_file_is_loaded_and_a_wrong_one_refused(tmp_path):
    source = build_model(_cfg())
    torch.save(source.encoder.state_dict(), tmp_path / "enc.pt")
    model = build_model(_cfg(**{"model.weights": str(tmp_path / "enc.pt")}))
    for a, b in zip(model.encoder.state_dict().values(), source.encoder.state_dict().values()):
        assert torch.equal(a, b)
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "wrong.pt")
    with pytest.raises(ModelError, match="lacks"):
        build_model(_cfg(**{"model.weights": str(tmp_path / "wrong.pt")}))
    with pytest.raises(ModelError, match="does not exist"):
        build_model(_cfg(**{"model.weights": str(tmp_path / "none.pt")}))
    cfg = _cfg()
    cfg["model"]["encoder"] = "xceptionnn"  # past the config's own check (which refuses it too)
    with pytest.raises(ModelError, match="no model named"):
        build_model(cfg)


def test_a_convnext_file_keeps_its_head_norm_which_belongs_to_the_encoder(tmp_path, capsys):
    """ConvNeXt's encoder (num_classes=0) ends in head.norm: a full timm checkpoint loads, only head.fc is
    left out (issue 27, defect 10: every head.* key was dropped and the file refused)."""
    import timm

    full = timm.create_model("convnext_atto", num_classes=1000)
    torch.save(full.state_dict(), tmp_path / "convnext.pt")
    model = build_model(_cfg(**{"model.encoder": "convnext_atto", "model.weights": str(tmp_path / "convnext.pt")}))
    own = model.encoder.state_dict()
    assert "head.norm.weight" in own
    for key, value in own.items():
        assert torch.equal(value, full.state_dict()[key]), key
    err = capsys.readouterr().err
    assert "ignored 2 tensor(s)" in err and "head.fc.weight" in err
    wrong = {k: (v[:1] if k == "head.norm.weight" else v) for k, v in full.state_dict().items()}
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(ModelError, match=r"head\.norm\.weight with shape \(1,\)"):
        build_model(_cfg(**{"model.encoder": "convnext_atto", "model.weights": str(tmp_path / "wrong.pt")}))


@pytest.mark.parametrize("kind", ["rccl", "ce"])
def test_a_tiny_run_writes_the_run_folder_and_load_detector_reads_it(tmp_path, kind):
    manifest = make_tiny_manifest(tmp_path / "data")
    cfg = load_config(None, tiny_overrides(manifest, tmp_path / "runs", **{"loss.kind": kind, "stage1.epochs": 1}))
    run = train(cfg)
    assert (run / "config.yaml").is_file() and yaml.safe_load((run / "config.yaml").read_text()) == cfg
    names = {p.name for p in (run / "checkpoints").iterdir()}
    assert {"stage1_001.pt", "stage1_last.pt", "stage2_last.pt"} <= names
    rows = (run / "epochs.csv").read_text().splitlines()
    assert rows[0].startswith("stage,epoch,loss") and len(rows) == (3 if kind == "rccl" else 2)
    assert any((run / "tb").iterdir())
    model, saved = run.load_detector("cpu")
    assert saved == cfg and not model.training
    assert model(torch.randn(3, 3, 16, 16)).shape == (3, 2)
    # a second run with the same name never overwrites the first
    assert train(load_config(None, tiny_overrides(manifest, tmp_path / "runs", **{"stage1.epochs": 0, "stage2.epochs": 0}))).name == "run-2"


def test_two_runs_with_one_name_never_share_a_folder(tmp_path, monkeypatch):
    """The folder is claimed before the model is built: a second job with the same name, started while the
    first builds its model, gets NAME-2 (issue 27, defect 7: both chose NAME, created it only later)."""
    import copy

    import rccl.train.runner as runner

    manifest = make_tiny_manifest(tmp_path / "data")
    cfg = load_config(None, tiny_overrides(manifest, tmp_path / "runs", **{"stage1.epochs": 1}))
    real, inner = runner.build_model, []

    def build_while_another_job_starts(c, **kwargs):
        if not inner:
            inner.append(None)  # the other job builds its own model without starting a third
            inner[0] = train(copy.deepcopy(cfg))
        return real(c, **kwargs)

    monkeypatch.setattr(runner, "build_model", build_while_another_job_starts)
    outer = train(cfg)
    assert (outer.name, inner[0].name) == ("run", "run-2")
    assert outer.latest_checkpoint(2)["config"] == inner[0].latest_checkpoint(2)["config"] == cfg


def test_stage_2_alone_without_stage_1_epochs_freezes_the_configured_encoder(tmp_path, capsys):
    """--stage 2 with stage1.epochs=0 trains a head on the encoder the config names (its weights file, or
    an error when it names none and allow_scratch is false), never silently on random weights (issue 27,
    defect 8)."""
    from rccl.cli.train import main

    manifest = make_tiny_manifest(tmp_path / "data")
    common = tiny_overrides(manifest, tmp_path / "runs", **{"stage1.epochs": 0, "model.allow_scratch": "false"})
    assert main(common + ["--stage", "2"]) == 2
    assert "no ImageNet weights configured" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    encoder = build_model(_cfg()).encoder
    torch.save(encoder.state_dict(), tmp_path / "encoder.pt")
    assert main(common + [f"model.weights={tmp_path / 'encoder.pt'}", "--stage", "2"]) == 0
    frozen = RunDir(tmp_path / "runs" / "run").latest_checkpoint(2)["model"]
    for key, value in encoder.state_dict().items():
        assert torch.equal(frozen[f"encoder.{key}"], value), key


def test_non_finite_loss_stops_naming_the_step_and_saves_nothing(tmp_path, monkeypatch):
    import rccl.loss

    calls = {"n": 0}
    real_forward = rccl.loss.RealCentricLoss.forward

    def poisoned(self, z, labels):
        calls["n"] += 1
        value = real_forward(self, z, labels)
        return value * float("nan") if calls["n"] == 3 else value

    monkeypatch.setattr(rccl.loss.RealCentricLoss, "forward", poisoned)
    manifest = make_tiny_manifest(tmp_path / "data")
    cfg = load_config(None, tiny_overrides(manifest, tmp_path / "runs"))
    with pytest.raises(TrainingError, match=r"stage 1, epoch 1, step 3: the loss is nan"):
        train(cfg)
    assert not list((tmp_path / "runs" / "run" / "checkpoints").glob("*"))


def test_the_non_finite_check_reads_the_device_once_per_log_interval_not_every_step(tmp_path, monkeypatch):
    """NonFiniteStop's host read-backs (a GPU->CPU sync each) happen every train.log_every steps and at an
    epoch's last step, not at every step (issue 27, defect 5; the stop itself: the test above)."""
    import sys
    from pathlib import Path

    hooks_file = str(Path(rccl_hooks.__file__).resolve())
    reads = []

    def counting(name):
        real = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            if str(Path(sys._getframe(1).f_code.co_filename).resolve()) == hooks_file:
                reads.append(name)
            return real(self, *args, **kwargs)
        return read

    for name in ("__bool__", "item", "__float__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    manifest = make_tiny_manifest(tmp_path / "data", identities=4)
    cfg = load_config(None, tiny_overrides(manifest, tmp_path / "runs", **{"stage1.batch_size": 4, "stage1.epochs": 2,
                                                                            "stage2.epochs": 0, "train.log_every": 100}))
    assert train(cfg).latest_checkpoint(1)["epoch"] == 2
    per_epoch = len(ForgeryPairSampler(training_records(cfg).records, 4, cfg["data"]["pairing"]))
    assert per_epoch >= 6 and len(reads) <= 2 * 2, (per_epoch, reads)  # steps 0 and the last, in each epoch


def test_empty_one_class_and_missing_crop_manifests_are_refused(tmp_path):
    from rccl.data.manifest import ManifestError, read_manifest, write_manifest

    manifest = make_tiny_manifest(tmp_path / "data")
    rows = read_manifest(manifest)
    for name, subset, message in [("fakes.jsonl", [r for r in rows if r["label"] == 1], "only fakes"),
                                  ("empty.jsonl", [], "no crop with split='train'")]:
        write_manifest(tmp_path / "data" / name, subset)
        with pytest.raises(ValueError, match=message):
            train(load_config(None, tiny_overrides(tmp_path / "data" / name, tmp_path / "runs")))
    (tmp_path / "data" / rows[0]["path"]).unlink()
    with pytest.raises(ManifestError, match="does not exist"):
        train(load_config(None, tiny_overrides(manifest, tmp_path / "runs")))
    # refused before anything is written: no run folder is left behind by a bad manifest
    assert not (tmp_path / "runs").exists()

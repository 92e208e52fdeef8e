"""configs/real/sbi on a few real natural photos (UTKFace, ../shared/data/natural): rccl-prep of a folder of
naturals (raw and c23: the recipe trains on both), rccl-train --config real/sbi for a few steps (the input
and batch made small, every recipe key kept), then rccl-predict --report on a real FF++ video with the run.
Skipped with the reason where ../shared or an optional package is absent."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("dlib", reason="needs dlib (pip install dlib-bin): rccl-prep's faces and landmarks")
pytest.importorskip("av", reason="needs PyAV (pip install av): the c23 copy of a photo and the video's frames")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
UTKFACE = SHARED / "natural" / "utkface" / "crop_part1"
VIDEO = SHARED / "real" / "ffpp" / "original_sequences" / "youtube" / "c23" / "videos" / "004.mp4"
PHOTOS = ["26_0_0_20170102233359482.jpg.chip.jpg", "28_1_0_20170103180500095.jpg.chip.jpg",
          "35_1_2_20170103182708145.jpg.chip.jpg", "41_0_3_20170104201116162.jpg.chip.jpg",
          "45_1_3_20170104234959306.jpg.chip.jpg", "30_0_0_20170103181149464.jpg.chip.jpg"]


def _photos() -> list[Path]:
    if not UTKFACE.is_dir():
        pytest.skip(f"UTKFace photos not found at {UTKFACE} (../shared/data/natural is absent in this checkout)")
    found = [UTKFACE / n for n in PHOTOS if (UTKFACE / n).is_file()]
    if len(found) < 4:
        found = sorted(UTKFACE.glob("3*_*.jpg"))[:6]  # another copy of UTKFace: any six adults
    if len(found) < 4:
        pytest.skip(f"fewer than 4 UTKFace photos in {UTKFACE}")
    return found


def test_real_sbi_trains_on_natural_photos_and_predicts_a_real_video(tmp_path, capsys):
    from rccl.cli.predict import main as predict
    from rccl.cli.train import main as train
    from rccl.data.prep import prepare
    from rccl.run import RunDir

    photos = _photos()
    tree = tmp_path / "naturals"  # real/ alone: a set of naturals needs no fake/
    (tree / "real").mkdir(parents=True)
    for p in photos:
        (tree / "real" / p.name).symlink_to(p)
    (tree / "splits.json").write_text(json.dumps({"train": [f"real/{p.name}" for p in photos]}))
    manifest = prepare("folder", tree, tmp_path / "prep", qualities=("raw", "c23"), crop_size=64, progress=False,
                       log=None)
    small = ["data.image_size=64", "data.workers=0", "stage1.epochs=1", "stage1.batch_size=4", "stage1.warmup_epochs=0",
             "stage2.epochs=1", "stage2.batch_size=4", "loss.bank_size=2", "loss.negatives=2", "train.threads=1",
             f"train.out={tmp_path / 'runs'}", "name=real", "--no-progress"]
    assert train(["--config", "real/sbi", f"data.manifest={manifest}", *small]) == 0
    # every photo trains (no test split) and only raw/c23 were prepared: the evaluation after training says
    # so and the run still succeeds
    out = capsys.readouterr().out
    assert "has no c40 crops" not in out and "has no raw, c23 crops in split 'test' (they are in: train)" in out
    run = RunDir(tmp_path / "runs" / "real")
    cfg = run.config()
    assert cfg["data"]["fakes"] == "sbi" and cfg["data"]["blend_target_p"] == 0.5
    assert cfg["data"]["train_qualities"] == ["raw", "c23"] and cfg["model"]["weights"] == "package:efficientnet-lite0"
    assert cfg["loss"]["kind"] == "ce"  # the encoder and its classifier end to end: no stage 2 to train
    rows = (run.path / "epochs.csv").read_text().splitlines()
    assert [r.split(",")[:2] for r in rows[1:]] == [["1", "1"]] and "nan" not in rows[1]  # one finite epoch
    if not VIDEO.is_file():
        pytest.skip(f"the real FF++ video {VIDEO} is absent (../shared/data/real)")
    report = tmp_path / "report"
    assert predict(["--checkpoint", str(run.path), str(VIDEO), "--frames", "4", "--report", str(report),
                    "--no-progress"]) == 0
    assert list(report.glob("*.png"))

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from rccl.cli.evaluate import main as eval_main
from rccl.evaluate import EvaluationError, evaluate_run, format_table
from rccl.data.transforms import eval_transform
from rccl.model import input_normalization
from rccl.metrics import METRIC_KEYS
from rccl.run import RunDir
from tiny_data import IMAGE_SIZE, install_brightness_detector, make_tiny_run, save_stage2_checkpoint


@pytest.fixture
def run(tmp_path, monkeypatch):
    install_brightness_detector(monkeypatch)
    return make_tiny_run(tmp_path)


def _valid_png(path):
    assert path.is_file() and path.stat().st_size > 0, path
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
        # something was drawn: not a blank canvas
        assert len(np.unique(np.asarray(im.convert("L")))) > 5


def test_metrics_match_hand_computed_values(run):
    results = evaluate_run(run, ("raw", "c23"), device="cpu", batch_size=3, progress=False, verbose=False)
    raw, c23 = results["raw"], results["c23"]
    for level in ("frame", "video"):
        assert raw[level] == pytest.approx({"auc": 1.0, "acc": 1.0, "tpr": 1.0, "tnr": 1.0, "fpr": 0.0, "eer": 0.0,
                                            "ap": 1.0, "n": 8 if level == "frame" else 4,
                                            "n_real": 4 if level == "frame" else 2,
                                            "n_fake": 4 if level == "frame" else 2})
    # frames, fake = 30, 210, 220, 230 and natural = 40, 50, 60, 200 (score = level / 255): the fake at 30
    # loses to all 4 naturals -> AUC 12/16; 200 is a false positive, 30 a miss
    assert c23["frame"] == pytest.approx({"auc": 0.75, "acc": 0.75, "tpr": 0.75, "tnr": 0.75, "fpr": 0.25,
                                          "eer": 0.25, "ap": 0.75 + 0.25 * 0.5, "n": 8, "n_real": 4, "n_fake": 4})
    # video means: naturals 50, 125; fakes 215, 130 -> perfectly separated, and all on the right side of 0.5
    assert c23["video"] == pytest.approx({"auc": 1.0, "acc": 1.0, "tpr": 1.0, "tnr": 1.0, "fpr": 0.0, "eer": 0.0,
                                          "ap": 1.0, "n": 4, "n_real": 2, "n_fake": 2})


def test_writes_metrics_json_plots_and_scores(run):
    evaluate_run(run, ("raw", "c23"), device="cpu", progress=False, verbose=False)
    saved = json.loads((run / "metrics.json").read_text())
    assert list(saved) == ["raw", "c23"]
    for q in saved:
        assert set(saved[q]) == {"frame", "video"}
        for level in ("frame", "video"):
            assert set(METRIC_KEYS) <= set(saved[q][level])
            assert all(0.0 <= saved[q][level][k] <= 1.0 for k in METRIC_KEYS)
        _valid_png(run / "eval" / f"test_{q}_roc.png")
        _valid_png(run / "eval" / f"test_{q}_hist.png")
    lines = (run / "eval" / "test_c23_scores.csv").read_text().splitlines()
    assert lines[0].split(",") == ["path", "dataset", "video", "frame", "label", "fake_probability"]
    scores = sorted(round(float(line.split(",")[-1]) * 255) for line in lines[1:])
    assert scores == [30, 40, 50, 60, 200, 210, 220, 230]
    assert not list(run.glob("*.tmp")) and not list((run / "eval").glob("*.tmp"))


def test_one_class_split_reports_the_rest(run, capsys, caplog):
    (run / "eval").mkdir()
    (run / "eval" / "test_c40_roc.png").write_bytes(b"left over from an earlier evaluation")
    results = evaluate_run(run, ("c40",), device="cpu", progress=False)
    frame = results["c40"]["frame"]
    assert frame["auc"] is None and frame["eer"] is None and frame["ap"] is None and frame["tpr"] is None
    # naturals at 40, 150, 50, 70: 150 / 255 > 0.5 is a false positive
    assert frame["acc"] == pytest.approx(0.75) and frame["tnr"] == pytest.approx(0.75)
    assert frame["fpr"] == pytest.approx(0.25)
    assert "only naturals" in caplog.text and "AUC and EER are undefined" in caplog.text
    assert "n/a" in capsys.readouterr().out
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["c40"]["frame"]["auc"] is None
    assert not (run / "eval" / "test_c40_roc.png").exists()  # no ROC curve without both classes
    _valid_png(run / "eval" / "test_c40_hist.png")


def test_other_split_writes_its_own_file(run):
    evaluate_run(run, ("raw",), split="val", device="cpu", progress=False, verbose=False)
    assert (run / "metrics_val.json").is_file() and not (run / "metrics.json").exists()
    assert json.loads((run / "metrics_val.json").read_text())["raw"]["frame"]["n"] == 4


def test_absent_quality_is_named_and_nothing_is_written(run):
    with pytest.raises(EvaluationError, match=r"no crops of quality 'hq' \(it has: c23, c40, raw\)"):
        evaluate_run(run, ("raw", "hq"), device="cpu", progress=False, verbose=False)
    assert not (run / "metrics.json").exists()


def test_after_training_an_absent_quality_or_split_is_a_note_not_an_error(run, capsys):
    """skip_absent (rccl-train's evaluation after training): qualities the manifest was not prepared with are
    left out with a note naming them; a split it lacks (a set of naturals that is all training data) is a note
    and no metrics file; a quality it has in another split only is still an error."""
    results = evaluate_run(run, ("raw", "hq"), device="cpu", progress=False, verbose=True, skip_absent=True)
    assert set(results) == {"raw"} and json.loads((run / "metrics.json").read_text()).keys() == {"raw"}
    assert "has no hq crops (it has: c23, c40, raw); evaluated without them" in capsys.readouterr().out
    assert evaluate_run(run, ("raw",), split="train", device="cpu", progress=False, skip_absent=True) == {}
    assert "has no raw crops in split 'train' (they are in: test, val): nothing to evaluate" in capsys.readouterr().out
    assert not (run / "metrics_train.json").exists()
    with pytest.raises(EvaluationError, match="no crops of quality 'hq'"):
        evaluate_run(run, ("hq",), device="cpu", progress=False, verbose=False, skip_absent=True)
    with pytest.raises(EvaluationError, match=r"no 'c23' crops in split 'val'"):
        evaluate_run(run, ("raw", "c23"), split="val", device="cpu", progress=False, verbose=False, skip_absent=True)


def test_empty_split_is_named(run):
    with pytest.raises(EvaluationError, match=r"no 'c23' crops in split 'val' \(the 'c23' crops are in: test\)"):
        evaluate_run(run, ("raw", "c23"), split="val", device="cpu", progress=False, verbose=False)


def test_missing_run_folder_and_missing_crop(run, tmp_path):
    with pytest.raises(EvaluationError, match="no such folder"):
        evaluate_run(tmp_path / "nope", device="cpu")
    (tmp_path / "data" / "crops" / "raw" / "a_0.png").unlink()
    with pytest.raises(ValueError, match="a_0.png does not exist"):
        evaluate_run(run, ("raw",), device="cpu", progress=False, verbose=False)


def test_table_has_the_paper_layout(run):
    results = evaluate_run(run, ("raw", "c23"), device="cpu", progress=False, verbose=False)
    table = format_table(results)
    lines = table.splitlines()
    assert "raw" in lines[1] and "c23" in lines[1]
    assert lines[2].split() == ["level"] + ["TPR", "TNR", "AUC", "ACC"] * 2
    assert lines[5] == "" and lines[7].split() == ["level"] + ["FPR", "EER", "AP"] * 2
    assert lines[-1] == "raw: 8 crops (4 natural, 4 fake) in 4 videos, c23: 8 crops (4 natural, 4 fake) in 4 videos"
    frame_row = lines[3].split()
    assert frame_row[0] == "frame" and frame_row[1:5] == ["100.00"] * 4 and frame_row[5:9] == ["75.00"] * 4


def test_cli_prints_the_table_and_fails_cleanly(run, capsys):
    assert eval_main(["--checkpoint", str(run), "--qualities", "raw,c23", "--device", "cpu", "--workers", "0",
                      "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "TPR" in out and "metrics.json" in out
    assert eval_main(["--checkpoint", str(run), "--qualities", "raw,c99", "--device", "cpu"]) == 2
    assert "quality 'c99'" in capsys.readouterr().err


def test_real_checkpoint_through_the_run_folder_contract(tmp_path, capsys):
    """A stage-2 checkpoint written by the training room's save_checkpoint, read by its load_detector: the
    scores evaluate_run records equal the model applied here by hand to each crop."""
    run = make_tiny_run(tmp_path)
    model = save_stage2_checkpoint(run)
    assert eval_main(["--checkpoint", str(run), "--qualities", "raw,c23", "--device", "cpu", "--workers", "0",
                      "--batch-size", "5", "--no-progress"]) == 0
    saved = json.loads((run / "metrics.json").read_text())
    assert list(saved) == ["raw", "c23"]
    for q in saved:
        for level in ("frame", "video"):
            assert all(0.0 <= saved[q][level][k] <= 1.0 for k in METRIC_KEYS)
        with open(run / "eval" / f"test_{q}_scores.csv") as f:
            rows = list(csv.DictReader(f))
        transform = eval_transform(IMAGE_SIZE, input_normalization(RunDir(run).config()["model"]["encoder"]))
        images = torch.stack([transform(torch.from_numpy(np.array(Image.open(tmp_path / "data" / r["path"])))
                                        .permute(2, 0, 1)) for r in rows])
        with torch.no_grad():
            expected = torch.softmax(model(images), dim=1)[:, 1].numpy()
        np.testing.assert_allclose([float(r["fake_probability"]) for r in rows], expected, atol=2e-6)
        _valid_png(run / "eval" / f"test_{q}_hist.png")


def test_cli_without_a_stage2_checkpoint(tmp_path, capsys):
    run = make_tiny_run(tmp_path)
    assert eval_main(["--checkpoint", str(run), "--device", "cpu"]) == 2
    assert "no stage-2 checkpoint" in capsys.readouterr().err


def _level(tpr, tnr, acc):
    return {"auc": 0.9, "acc": acc, "tpr": tpr, "tnr": tnr, "fpr": 1 - tnr, "eer": 0.1, "ap": 0.9, "n": 10,
            "n_real": 4, "n_fake": 6}


def test_paper_columns_are_natural_recall_then_fake_recall():
    # the paper's "TPR" column is the naturals' recall (our TNR), its "FPR" column the fakes' recall (our
    # TPR): with 4 naturals at recall 0.50 and 6 fakes at recall 1.00, ACC = 0.4 * 0.5 + 0.6 * 1.0 = 0.8
    from rccl.evaluate import format_paper_table

    results = {"raw": {"frame": _level(1.0, 0.5, 0.8), "video": _level(1.0, 0.5, 0.8)}}
    lines = format_paper_table(results).splitlines()
    assert "paper TPR = natural recall (our TNR), paper FPR = fake recall (our TPR)" in lines[0]
    assert lines[2].split() == ["level", "TPR*", "FPR*", "AUC", "ACC"]
    assert lines[3].split() == ["frame", "50.00", "100.00", "90.00", "80.00"]
    # the fake-positive table keeps its own labels
    assert format_table(results).splitlines()[3].split()[1:3] == ["100.00", "50.00"]


def test_cli_errors_share_one_convention(run, capsys):
    from rccl.cli.predict import main as predict_main

    assert eval_main(["--checkpoint", str(run) + "-missing", "--device", "cpu", "--no-progress"]) == 2
    assert capsys.readouterr().err.startswith("rccl-eval: error: run folder")
    assert predict_main(["--checkpoint", str(run) + "-missing", "x.png", "--device", "cpu", "--no-progress"]) == 2
    assert capsys.readouterr().err.startswith("rccl-predict: error: run folder")
    with pytest.raises(EvaluationError):  # --traceback: the error itself, for a bug report
        eval_main(["--checkpoint", str(run) + "-missing", "--device", "cpu", "--traceback"])

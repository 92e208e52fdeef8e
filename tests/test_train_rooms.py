"""The architecture's contracts: training, evaluation and prediction never import each other; a run
folder is written only through the atomic writer, with the modes the umask gives; evaluation on another
manifest (the cross-dataset protocol) files its results under RUN/eval/NAME/ and leaves the run's own
metrics.json as it was."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rccl.cli.evaluate import main as eval_main
from rccl.cli.train import main as train_main
from rccl.run import RunDir
from tiny_data import make_tiny_manifest, tiny_overrides

ROOT = Path(__file__).resolve().parents[1]
TRAINING = ["rccl/train"]
EVALUATION = ["rccl/evaluate.py", "rccl/predict.py", "rccl/scoring.py", "rccl/metrics.py", "rccl/plots.py",
              "rccl/cli/evaluate.py", "rccl/cli/predict.py"]


def _imports(paths) -> dict[str, set[str]]:
    """Every module each file imports, at any depth of the file (late imports inside functions too)."""
    found = {}
    for entry in paths:
        for path in sorted((ROOT / entry).rglob("*.py")) if (ROOT / entry).is_dir() else [ROOT / entry]:
            names = set()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names |= {a.name for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names.add(node.module)
            found[str(path.relative_to(ROOT))] = names
    return found


def test_training_and_evaluation_do_not_import_each_other_in_the_source():
    for path, names in _imports(TRAINING).items():
        bad = {n for n in names if n.split(".")[:2] in (["rccl", "evaluate"], ["rccl", "predict"], ["rccl", "scoring"],
                                                        ["rccl", "metrics"], ["rccl", "plots"])}
        assert not bad, f"{path} imports the evaluation room: {bad}"
    for path, names in _imports(EVALUATION).items():
        bad = {n for n in names if n.startswith("rccl.train")}
        assert not bad, f"{path} imports the training room: {bad}"


def _loaded_after(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(sorted(sys.modules))"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return eval(out.strip().splitlines()[-1])


def test_training_and_evaluation_do_not_import_each_other_at_run_time():
    loaded = _loaded_after("import rccl.evaluate, rccl.predict, rccl.cli.evaluate, rccl.cli.predict")
    assert [m for m in loaded if m.startswith("rccl.train")] == []
    loaded = _loaded_after("import rccl.train.runner, rccl.train.stage1, rccl.train.stage2, rccl.train.demo")
    assert {"rccl.evaluate", "rccl.predict", "rccl.scoring", "rccl.plots"}.isdisjoint(loaded)
    assert "rccl.run" in loaded  # both rooms reach a run through rccl.run


def test_only_fileio_replaces_files():
    """Every module of the package and every bench script writes through rccl.fileio (one atomic writer)."""
    sources = [p for p in sorted((ROOT / "rccl").rglob("*.py")) + sorted((ROOT / "bench").glob("*.py"))
               if p != ROOT / "rccl" / "fileio.py"]
    assert len(sources) > 40
    for path in sources:
        text = path.read_text(encoding="utf-8")
        assert "os.replace(" not in text and "mkstemp(" not in text, f"{path} writes files by hand"


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_cross_dataset_evaluation_keeps_the_runs_metrics_and_every_file_is_0644(tmp_path, capsys, umask_022):
    manifest = make_tiny_manifest(tmp_path / "train-data")
    overrides = tiny_overrides(manifest, tmp_path / "runs", **{"stage1.epochs": 1, "eval.after_training": "true",
                                                              "eval.qualities": "[raw,c23]", "eval.batch_size": 8})
    assert train_main(overrides + ["--device", "cpu"]) == 0  # trains, then evaluates on its own manifest
    run = RunDir(tmp_path / "runs" / "run")
    own = run.metrics_path().read_bytes()
    assert set(json.loads(own)) == {"raw", "c23"}

    other = make_tiny_manifest(tmp_path / "other-data", seed=7, dataset="otherset", qualities=("raw",))
    capsys.readouterr()
    assert eval_main(["--checkpoint", str(run.path), "--manifest", str(other), "--qualities", "raw", "--device", "cpu",
                      "--workers", "0", "--no-progress", "--paper-columns"]) == 0
    printed = capsys.readouterr().out
    assert run.metrics_path().read_bytes() == own  # byte-identical: the run's own results are untouched
    cross = json.loads(run.metrics_path(dataset="otherset").read_text())
    assert list(cross) == ["raw"] and cross["raw"]["frame"]["n"] == 8
    for kind in ("roc", "hist"):
        assert run.plot_path("test", "raw", kind, "otherset").is_file()
    assert run.scores_path("test", "raw", "otherset").is_file()
    assert not run.scores_path("test", "c23", "otherset").exists()

    # the summary lists both datasets, one row per quality, and is printed too
    summary = run.summary_path.read_text()
    rows = [line for line in summary.splitlines() if line.startswith("| ") and "dataset" not in line]
    assert [r.split("|")[1:4] for r in rows] == [[" (training manifest) ", " test ", " raw "],
                                                 [" (training manifest) ", " test ", " c23 "],
                                                 [" otherset ", " test ", " raw "]]
    assert summary.splitlines()[0] in printed and "TPR*" in printed

    # --name files it elsewhere; a name that is not a folder name is refused
    assert eval_main(["--checkpoint", str(run.path), "--manifest", str(other), "--name", "other-2", "--qualities",
                      "raw", "--device", "cpu", "--workers", "0", "--no-progress"]) == 0
    assert run.metrics_path(dataset="other-2").is_file() and run.metrics_path().read_bytes() == own
    assert eval_main(["--checkpoint", str(run.path), "--manifest", str(other), "--name", "../x", "--device", "cpu"]) == 2
    assert "evaluation name '../x'" in capsys.readouterr().err

    files = run.files()
    assert {p.name for p in files} >= {"config.yaml", "epochs.csv", "metrics.json", "stage2_last.pt", "summary.md"}
    assert any(p.parent.name == "tb" for p in files)
    modes = {str(p.relative_to(run.path)): oct(p.stat().st_mode & 0o777) for p in files}
    assert set(modes.values()) == {"0o644"}, modes
    assert not [p for p in files if p.name.endswith(".tmp")]

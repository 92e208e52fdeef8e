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


WRITERS = {"write_text", "write_bytes"}                                  # Path methods
MOVERS = {("os", "replace"), ("os", "rename"), ("shutil", "copy"), ("shutil", "copy2"), ("shutil", "copyfile"),
          ("shutil", "move"), ("shutil", "copytree"), ("tempfile", "mkstemp"), ("tempfile", "NamedTemporaryFile")}


def _file_writes(source: str) -> list[str]:
    """Every call in `source` that writes a file by hand: open() for writing, Path.write_text/bytes,
    os.replace and friends, and the savers (torch.save, np.save, savefig, PIL's save, av.open for writing)
    unless they write into an in-memory buffer or a file object rccl.fileio.atomic_write opened."""
    tree = ast.parse(source)
    buffers = set()  # names bound to io.BytesIO() / io.StringIO() / an atomic_write file object
    in_memory = ("BytesIO(", "StringIO(", "atomic_write(")
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            pairs = [(t, node.value) for t in node.targets]
            pairs += [pair for t in node.targets if isinstance(t, ast.Tuple) and isinstance(node.value, ast.Tuple)
                      for pair in zip(t.elts, node.value.elts)]
            buffers |= {ast.unparse(t) for t, v in pairs if not isinstance(t, ast.Tuple)
                        and any(k in ast.unparse(v) for k in in_memory)}
        if isinstance(node, ast.withitem) and "atomic_write(" in ast.unparse(node.context_expr) and node.optional_vars:
            buffers.add(ast.unparse(node.optional_vars))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f, text = node.func, ast.unparse(node)
        owner = ast.unparse(f.value) if isinstance(f, ast.Attribute) else None
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
        mode = mode.value if isinstance(mode, ast.Constant) and isinstance(mode.value, str) else ""
        target = None
        if name == "open" and owner is None and set(mode) & set("wax+"):
            found.append(text)
        elif (name in WRITERS and owner is not None) or (owner, name) in MOVERS:
            found.append(text)
        elif (owner, name) == ("torch", "save") and len(node.args) > 1:
            target = node.args[1]
        elif (owner in ("np", "numpy") and name.startswith("save")) or name == "savefig" or (
                name == "save" and any(k.arg == "format" for k in node.keywords)):
            target = node.args[0] if node.args else None
        elif (owner, name) == ("av", "open") and "w" in mode:
            target = node.args[0]
        if target is not None and ast.unparse(target) not in buffers:
            found.append(text)
    return found


def test_the_file_write_checker_finds_hand_written_files():
    snippet = """
import io, os, torch
open(p, "w"); open(p, mode="ab"); Path(p).write_text("x"); os.replace(a, b); torch.save(s, path)
fig.savefig(path); img.save(path, format="PNG"); av.open(path, "w")
buf = io.BytesIO(); torch.save(s, buf); fig.savefig(buf); img.save(buf, format="PNG"); open(p).read()
im, mem = load(), io.BytesIO(); im.save(mem, format="PNG"); im.save(other, format="PNG")
"""
    assert len(_file_writes(snippet)) == 9


def test_only_fileio_writes_files():
    """Every module of the package writes through rccl.fileio (one atomic writer; TensorBoard's event files
    excepted), and no bench script replaces files by hand."""
    sources = [p for p in sorted((ROOT / "rccl").rglob("*.py")) if p != ROOT / "rccl" / "fileio.py"]
    assert len(sources) > 40
    for path in sources:
        assert _file_writes(path.read_text(encoding="utf-8")) == [], f"{path} writes files by hand"
    for path in sorted((ROOT / "bench").glob("*.py")):
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

"""Without the optional packages a GPU machine may lack (PyAV, dlib, DALI, facenet-pytorch,
pytorch-metric-learning), every test module still collects: the ones that need a missing package skip
with a reason naming it, so `pytest -m cuda` there runs the CUDA tests instead of stopping at collection.
The packages are hidden by tests/hide_packages/sitecustomize.py."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HIDE = ROOT / "tests" / "hide_packages"


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HIDE), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *args] if not code else [sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_hidden_packages_cannot_be_imported():
    result = _run("import importlib\nfor name in ('av', 'dlib', 'nvidia.dali', 'facenet_pytorch', "
                  "'pytorch_metric_learning'):\n"
                  "    try:\n        importlib.import_module(name)\n    except ModuleNotFoundError as error:\n"
                  "        print('hidden', name, error.name)\n    else:\n        print('IMPORTED', name)\n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "IMPORTED" not in result.stdout and result.stdout.count("hidden") == 5, result.stdout


def test_collection_skips_the_modules_that_need_a_hidden_package():
    result = _run("", "-m", "pytest", "--collect-only", "-q", "-rs", "-p", "no:cacheprovider", "tests")
    tail = result.stdout[-3000:] + result.stderr[-2000:]
    assert result.returncode == 0, tail
    assert "error" not in result.stdout.splitlines()[-1].lower(), tail
    assert "needs PyAV (pip install av)" in result.stdout, tail  # the reason is shown
    assert "test_op_cuda.py" in result.stdout and "test_op_cpu.py" in result.stdout  # the core tests still collect

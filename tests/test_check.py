"""rccl-check (rccl/check.py): passes on this build's CPU kernels, fails (exit status 1, a FAIL row) on a
planted mismatch, checks the CUDA kernels through their CPU emulation, and imports only torch and the
package's core."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import rccl
from rccl import check

ROOT = Path(__file__).resolve().parents[1]
needs_cpu_kernels = pytest.mark.skipif(not rccl.backends()["cpu"], reason="rccl._C was built without the CPU kernels")


def _python(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@needs_cpu_kernels
def test_the_cpu_kernels_pass_and_every_row_is_written(tmp_path):
    out = tmp_path / "check.jsonl"
    result = _python("-m", "rccl.check", "--backend", "cpu", "--speed", "--sizes", "64", "--jsonl", str(out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "FAIL" not in result.stdout and "rccl-check: all rows pass" in result.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    checks = [r for r in rows if r["kind"] == "check"]
    # every dtype, every loss and bank case, each row printed
    assert {r["dtype"] for r in checks} == {"float16", "bfloat16", "float32", "float64"}
    assert len(checks) == 4 * (len(check.LOSS_CASES) + len(check.BANK_CASES))
    assert all(r["pass"] and r["worst_error"] <= r["bound"] for r in checks)
    assert sum(line.endswith("  pass") for line in result.stdout.splitlines()) == len(checks)
    speed = [r for r in rows if r["kind"] == "speed"]
    assert [(r["backend"], r["dtype"], r["N"]) for r in speed] == [("cpu", "float32", 64)]
    assert speed[0]["op eager fwd+bwd us"] > 0 and speed[0]["reference eager fwd+bwd us"] > 0


class _Planted(check.CompiledBackend):
    """The CPU kernels with one fault planted: a gradient off by `grad_scale`, bank rows out of order, or
    a kernel that raises."""

    def __init__(self, fault: str):
        super().__init__("cpu")
        self.fault = fault

    def loss_outputs(self, x, case, tiles):
        loss, extra, extra_labels, lse, grad = super().loss_outputs(x, case, tiles)
        if self.fault == "grad":
            grad = grad * (1 + 1e-3)  # 1e-3 relative: ten times float32's bound
        if self.fault == "raise":
            raise RuntimeError("rccl: planted kernel failure")
        return loss, extra, extra_labels, lse, grad

    def hard_banks(self, x, k, tiles):
        real, fake = super().hard_banks(x, k, tiles)
        return (real.flip(0), fake) if self.fault == "banks" else (real, fake)


@needs_cpu_kernels
@pytest.mark.parametrize("fault", ["grad", "banks", "raise"])
def test_a_planted_mismatch_fails_the_check(fault, capsys):
    assert check.main(["--dtype", "float32"], backends=[_Planted(fault)]) == 1
    printed = capsys.readouterr().out
    failed = [line for line in printed.splitlines() if line.rstrip().endswith("FAIL") or "FAIL  (" in line]
    assert failed and "row(s) FAIL" in printed
    what = "bank update" if fault == "banks" else "loss fwd+bwd"
    assert all(what in line for line in failed), failed
    if fault == "raise":
        assert "planted kernel failure" in printed


def test_nothing_to_check_and_bad_arguments_are_errors(capsys):
    assert check.main([], backends=[]) == 2
    assert "nothing to check" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        check.main(["--sizes", "0"], backends=[])
    assert stop.value.code == 2
    if not torch.cuda.is_available():
        assert check.main(["--backend", "cuda"]) == 2
        assert "backend cuda cannot run here" in capsys.readouterr().err


def test_imports_only_torch_and_the_core():
    result = _python("-c", "import sys, rccl.check; print(' '.join(sorted(sys.modules)))")
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = set(result.stdout.split())
    optional = {"av", "dlib", "nvidia", "timm", "torchvision", "PIL", "yaml", "sklearn", "matplotlib", "cv2",
                "facenet_pytorch", "pytorch_metric_learning", "tensorboard"}
    assert not loaded & optional, loaded & optional
    assert not {m for m in loaded if m.startswith(("rccl.data", "rccl.train", "rccl.model", "rccl.cli"))}


def test_the_console_script_is_declared():
    tomllib = pytest.importorskip("tomllib")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["rccl-check"] == "rccl.check:main"


@pytest.mark.slow  # the CUDA kernels' source under the CPU emulation: ~1 min on 2 cores
def test_the_emulated_cuda_kernels_pass_the_check(capsys):
    emulated = pytest.importorskip("cuda_emulation.emulated")
    from test_op_cuda_emulated import _compiler_problem

    problem = _compiler_problem()
    if problem:
        pytest.skip(problem)
    backend = emulated.EmulatedBackend()
    # the tensor-core path (bfloat16) on every case and both tile sizes, through the command line
    assert check.main(["--dtype", "bfloat16"], backends=[backend]) == 0
    printed = capsys.readouterr().out
    assert "cuda (emulated)  bfloat16  64x64" in printed and "FAIL" not in printed
    # the other dtypes on the small cases
    rows = list(check.check_backend(backend, (torch.float32, torch.float16, torch.float64),
                                    loss_cases=check.LOSS_CASES[:3], bank_cases=check.BANK_CASES[:2]))
    assert len(rows) == (2 + 2 + 1) * 5 and all(r["pass"] for r in rows), [r for r in rows if not r["pass"]]

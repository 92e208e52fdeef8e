"""bench/gpu_check.sh --dry-run, here, in a venv shaped like the GPU machine's (the optional packages it
lacks hidden): every step's dry form passes, the step limits fit the budget (<= 8 minutes), at most 8
files are left under $OUT, the result lines are JSON, and the summary comes last."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["build", "check", "tests", "memcheck", "racecheck", "speed-bf16", "speed-fp32", "step-eager", "step-compiled"]


@pytest.mark.slow  # nine steps, each starting Python and torch (~1 min on 2 cores)
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_the_dry_run_passes_within_the_budget_and_the_file_limit(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    result = subprocess.run(["bash", "bench/gpu_check.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=3000)
    printed = result.stdout + result.stderr
    assert result.returncode == 0, printed[-4000:]
    assert "VERDICT: dry run ok" in result.stdout.splitlines()[-1]
    steps = re.search(r"^steps: (.*)$", result.stdout, re.M).group(1).split()
    assert steps == STEPS  # correctness first, the speed after, the riskiest (torch.compile) last
    limits, budget, most = map(int, re.search(r"limits add up to (\d+) s <= budget (\d+) s <= (\d+) s",
                                              result.stdout).groups())
    assert limits <= budget <= most <= 480
    files = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert len(files) <= 8, files
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert lines[0]["step"] == "env" and lines[0]["dry_run"] is True
    done = [line for line in lines if "status" in line]
    assert [line["step"] for line in done] == STEPS and all(line["status"] == "ok" for line in done)
    assert any(line.get("kind") == "check" and line["pass"] for line in lines)  # rccl-check's rows, as they came
    summary = (out / "summary.txt").read_text()
    assert summary.startswith("== summary") and all(step in summary for step in STEPS)


def test_an_unknown_argument_is_refused():
    result = subprocess.run(["bash", "bench/gpu_check.sh", "--fast"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "unknown argument --fast" in result.stderr

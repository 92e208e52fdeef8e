"""Start-up time of rccl-train to its first optimiser step with a large manifest, on 1 and 2 ranks (torchrun,
gloo, CPU): what every rank does before training starts (the manifest read, the crop files' check, the
samplers, the model, the loader's first batch) with a tiny model, so that the start-up I/O is what shows.

    python -m bench.startup                                   # 100,000 crops, 1 and 2 ranks, 3 repeats each
    python -m bench.startup --checkout after=. --checkout before=/tmp/base
                                                              # two checkouts' rccl (each root first on
                                                              # PYTHONPATH; e.g. a worktree of dce32d1),
                                                              # their repeats alternating

The crops (16x16 PNG, half natural, half fake, 8 frames a video) and their manifest are made once under
--root (local disk: /tmp) and reused. Each repeat launches `torchrun --nproc-per-node R` on this file in
--probe mode: rccl-train's own CLI with a hook that notes the wall time of the first step on every rank and
ends the process there; the start-up is that time minus the launch time (the interpreters' start and
imports included: what a user waits). The page cache is warm after the first repeat (the crops were just
written); the median of the repeats is reported. Rows are added to --out (JSON, rewritten whole through
rccl.fileio) with the label, commit, date, machine and command.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT_JSON = ROOT / "bench" / "results" / "startup.json"


def make_manifest(root: Path, crops: int) -> Path:
    """`crops` tiny PNG crops and their manifest (made once, reused)."""
    import numpy as np
    from PIL import Image

    from rccl.data.manifest import write_manifest

    manifest = root / f"manifest_{crops}.jsonl"
    if manifest.is_file():
        return manifest
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)) for _ in range(64)]
    rows = []
    for i in range(crops):
        label, video, frame = i % 2, i // 16, (i // 2) % 8
        identity = f"id{video % 50}"
        rel = f"crops/{video // 1000:03d}/{i:07d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        images[i % len(images)].save(root / rel)
        rows.append({"path": rel, "dataset": "synthetic", "split": "test" if video % 10 == 0 else "train",
                     "quality": "raw", "video": f"{'fake' if label else 'real'}/{video}.mp4", "label": label,
                     "frame": frame, "pair": frame // 2, "source": f"v{video}" if label else "",
                     "target": f"id{(video + 1) % 50}" if label else "", "identity": "" if label else identity,
                     "box": [0, 0, 16, 16]})
    write_manifest(manifest, rows)
    return manifest


def train_args(manifest: Path, out: Path) -> list[str]:
    """A tiny model and a short run: the start-up is what is timed, not the training."""
    settings = {"data.manifest": manifest, "data.image_size": 16, "data.workers": 2, "data.backend": "torch",
                "model.encoder": "test_byobnet", "model.pretrained": "false", "model.allow_scratch": "true",
                "model.proj_hidden": 32, "model.proj_dim": 16, "stage1.epochs": 1, "stage1.batch_size": 8,
                "stage2.epochs": 1, "stage2.batch_size": 8, "loss.bank_size": 4, "loss.negatives": 4,
                "train.out": out, "train.progress": "false", "train.threads": 1, "eval.after_training": "false"}
    return [f"{k}={v}" for k, v in settings.items()]


def probe(argv: list[str]) -> int:
    """rccl-train until the first optimiser step: each rank writes the wall time of its first step to
    FOLDER/rankR.time and ends there (os._exit: no rank waits for another's teardown)."""
    from rccl.cli.train import main
    from rccl.train.engine import HookBase

    folder = Path(argv[0])

    class FirstStep(HookBase):
        def after_step(self, loop) -> None:
            (folder / f"rank{os.environ.get('RANK', '0')}.time").write_text(repr(time.time()))
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)

    return main(argv[1:], hooks=[FirstStep()])


def launch(script: Path, ranks: int, work: Path, args: list[str], rccl_root: Path = ROOT,
           port: int = 29600) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node RANKS SCRIPT --probe WORK ARGS...` in a fresh WORK, with `rccl_root`'s rccl
    first on the path; its output captured."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(rccl_root), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    cmd = [torchrun, "--nproc-per-node", str(ranks), "--master-port", str(port), str(script), "--probe", str(work),
           *args]
    return subprocess.run(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def one_start(ranks: int, manifest: Path, work: Path, rccl_root: Path) -> float:
    """Seconds from the launch of torchrun to the first step of rank 0."""
    t0 = time.time()
    done = launch(Path(__file__).resolve(), ranks, work, train_args(manifest, work / "runs"), rccl_root, 29600 + ranks)
    stamp = work / "rank0.time"
    if done.returncode != 0 or not stamp.is_file():
        raise SystemExit(f"startup: the run on {ranks} rank(s) failed (exit {done.returncode}):\n{done.stdout[-2000:]}")
    return float(stamp.read_text()) - t0


def record(out: Path, rows: list, row: dict, argv: list[str], rccl_root: Path = ROOT) -> None:
    """`row` with the commit, date, machine and command, printed and added to `rows`, written to `out`."""
    from rccl.fileio import write_json

    row.update(commit=commit_of(rccl_root), date=datetime.date.today().isoformat(),
               machine=f"{platform.node()}, {os.cpu_count()} cores",
               command=f"python -m bench.{Path(sys.argv[0]).stem} " + " ".join(argv))
    print(json.dumps(row), flush=True)
    rows.append(row)
    write_json(out, rows)


def commit_of(root: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--probe":
        return probe(argv[1:])
    p = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__.split("\n\n")[0])
    p.add_argument("--crops", type=int, default=100_000)
    p.add_argument("--ranks", default="1,2", help="comma list of process counts (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--root", type=Path, default=Path("/tmp/rccl-startup"), help="crops and runs (local disk)")
    p.add_argument("--checkout", action="append", default=[], metavar="LABEL=PATH",
                   help="a checkout whose rccl is timed, and its row's label (repeatable; default: after=this one)")
    p.add_argument("--out", type=Path, default=OUT_JSON)
    args = p.parse_args(argv)
    checkouts = dict(c.split("=", 1) for c in args.checkout) or {"after": str(ROOT)}
    manifest = make_manifest(args.root, args.crops)
    results = json.loads(args.out.read_text()) if args.out.is_file() else []
    for ranks in [int(r) for r in args.ranks.split(",")]:
        times: dict[str, list[float]] = {label: [] for label in checkouts}
        for _ in range(args.repeats):  # alternating, so that a slower spell of the machine hits every checkout
            for label, path in checkouts.items():
                times[label].append(one_start(ranks, manifest, args.root / "work", Path(path).resolve()))
        for label, path in checkouts.items():
            record(args.out, results, {"label": label, "ranks": ranks, "crops": args.crops,
                                       "median_s": round(statistics.median(times[label]), 2),
                                       "seconds": [round(t, 2) for t in times[label]]}, argv, Path(path).resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())

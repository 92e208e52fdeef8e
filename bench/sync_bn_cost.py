"""What synchronised batch norm (train.sync_bn) costs and what it changes, on 2 ranks (torchrun, gloo, CPU).

    python -m bench.sync_bn_cost                      # both encoders, 2 ranks, sync_bn on and off
    python -m bench.sync_bn_cost --steps 30 --encoders test_byobnet

Cost: the median wall seconds of a stage-1 training step (steps 3.. of the first epoch; the steps before
warm the allocator and the loader) with train.sync_bn true and false, and one process with the same global
batch as the reference, for each encoder: timm's test_byobnet at 16 px (a tiny model: the all-reduces
dominate) and tf_efficientnet_lite0 at 64 px (the Table-2 bench's encoder, 51 batch norms with the
projector's; random weights: only the time matters here). Each setting runs --repeats times, alternating,
and the median of the per-run medians is reported. The crops are bench.startup's (tiny PNGs, made once
under --root).

Effect: the largest absolute difference between the stage-1 weights (and BN statistics) of a 2-rank run
and of one process with the same global batch after --effect-steps steps at stage1.lr 0.001, with and
without sync_bn, beside the floor: one process on 2 threads against 1 (another summation order, rounded
differently: the method amplifies such differences; tests/test_train_ranks.py asserts <= 1e-4 with
sync_bn on its tiny set).

Rows go to --out (JSON) with the commit, date, machine and command.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a file by torchrun: the checkout's bench/ and rccl/ importable

from bench.startup import launch, make_manifest, record  # noqa: E402

OUT_JSON = ROOT / "bench" / "results" / "sync_bn_cost.json"
ENCODERS = {"test_byobnet": 16, "tf_efficientnet_lite0": 64}


def run_args(manifest: Path, out: Path, encoder: str, size: int, sync: bool, lr: float, steps: int,
             threads: int = 1) -> list[str]:
    settings = {"data.manifest": manifest, "data.image_size": size, "data.workers": 1, "data.backend": "torch",
                "model.encoder": encoder, "model.pretrained": "false", "model.allow_scratch": "true",
                "stage1.epochs": 1, "stage1.batch_size": 32, "stage1.lr": lr, "stage2.epochs": 0,
                "train.out": out, "train.progress": "false", "train.threads": threads,
                "train.sync_bn": str(sync).lower(),
                "eval.after_training": "false", "train.log_every": 1000}
    return [f"{k}={v}" for k, v in settings.items()] + [f"--steps={steps}"]


def probe(argv: list[str]) -> int:
    """rccl-train for --steps=N stage-1 steps: rank 0 writes each step's end time, then the weights, to FOLDER."""
    import torch

    from rccl.cli.train import main
    from rccl.train.engine import HookBase

    folder, steps = Path(argv[0]), int(argv[-1].split("=", 1)[1])
    rank = int(os.environ.get("RANK", "0"))

    class Timed(HookBase):
        def __init__(self):
            self.times = []

        def after_step(self, loop) -> None:
            self.times.append(time.perf_counter())
            if len(self.times) == steps:
                if rank == 0:
                    (folder / "times.json").write_text(json.dumps(self.times))
                    torch.save(loop.model.state_dict(), folder / "weights.pt")
                sys.stdout.flush()
                os._exit(0)

    return main(argv[1:-1], hooks=[Timed()])


def one_run(ranks: int, args: list[str], work: Path) -> tuple[float, Path]:
    done = launch(Path(__file__).resolve(), ranks, work, args, port=29650)
    if done.returncode != 0 or not (work / "times.json").is_file():
        raise SystemExit(f"sync_bn_cost: a run failed (exit {done.returncode}):\n{done.stdout[-2000:]}")
    times = json.loads((work / "times.json").read_text())
    steps = [b - a for a, b in zip(times[2:], times[3:])]
    return statistics.median(steps), work / "weights.pt"


def max_difference(a: Path, b: Path) -> float:
    import torch

    x, y = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return max((v.double() - y[k].double()).abs().max().item() for k, v in x.items() if v.is_floating_point())


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--probe":
        return probe(argv[1:])
    p = argparse.ArgumentParser(prog="python -m bench.sync_bn_cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--encoders", default=",".join(ENCODERS))
    p.add_argument("--steps", type=int, default=20, help="stage-1 steps timed per run (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--effect-steps", type=int, default=6)
    p.add_argument("--root", type=Path, default=Path("/tmp/rccl-startup"))
    p.add_argument("--crops", type=int, default=4000)
    p.add_argument("--out", type=Path, default=OUT_JSON)
    args = p.parse_args(argv)
    manifest = make_manifest(args.root, args.crops)
    work = args.root / "sync_bn_work"
    results = json.loads(args.out.read_text()) if args.out.is_file() else []
    for encoder in args.encoders.split(","):
        size = ENCODERS[encoder]
        settings = {"1 process": (1, True), "2 ranks, sync_bn": (2, True), "2 ranks, no sync_bn": (2, False)}
        medians: dict[str, list[float]] = {name: [] for name in settings}
        for _ in range(args.repeats):  # alternating, so that a slower spell of the machine hits all settings
            for name, (ranks, sync) in settings.items():
                seconds, _ = one_run(ranks, run_args(manifest, work / "runs", encoder, size, sync, 0.01, args.steps),
                                     work)
                medians[name].append(seconds)
        weights = {}
        # the floor: one process on 2 threads sums in another order too (what any change of the order gives)
        runs = {**{name: (ranks, sync, 1) for name, (ranks, sync) in settings.items()},
                "1 process, 2 threads": (1, True, 2)}
        for name, (ranks, sync, threads) in runs.items():
            _, path = one_run(ranks, run_args(manifest, work / "runs", encoder, size, sync, 0.001, args.effect_steps,
                                              threads), work)
            weights[name] = path.rename(args.root / f"weights_{ranks}_{sync}_{threads}.pt")
        record(args.out, results, {
            "encoder": encoder, "image_size": size, "global_batch": 32, "backend": "gloo",
            "step_s": {name: round(statistics.median(v), 4) for name, v in medians.items()},
            "step_s_runs": {name: [round(s, 4) for s in v] for name, v in medians.items()},
            "max_weight_difference_to_1_process": {
                name: float(f"{max_difference(weights[name], weights['1 process']):.3g}")
                for name in runs if name != "1 process"},
            "effect_steps": args.effect_steps}, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""rccl-train: stage 1 (contrastive) and stage 2 (linear head) of real-centric consistency learning,
then the evaluation of the run (rccl-eval's, unless --no-eval or eval.after_training=false).

  rccl-train --amp                                   the embedded demo (synthetic data, small encoder)
  rccl-train --config demo --amp                     the same (configs/demo.yaml)
  rccl-train --config celebdf --amp data.manifest=PREP/manifest.jsonl
  rccl-train --resume runs/celebdf --stage 2         continue a run (after a kill: from its last epoch)
  torchrun --nproc-per-node 8 -m rccl.cli.train --config ...   many GPUs

--config takes a path or the name of a shipped config (demo, celebdf, ffpp, supcon, ce, ablations/...).
"""
from __future__ import annotations

import argparse
import os
import sys

from rccl.cli.common import add_common_arguments, run_command

PROG = "rccl-train"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="a YAML config file or a shipped config's name (default: demo)")
    p.add_argument("--amp", action="store_true", help="mixed precision (train.amp_dtype: bfloat16, or float16 "
                                                      "with a GradScaler)")
    p.add_argument("--resume", metavar="RUN", help="continue the run folder RUN from its last checkpoints")
    p.add_argument("--stage", choices=("1", "2", "both"), default="both", help="which stage(s) to run")
    p.add_argument("--cache", help="demo data cache (default ~/.cache/rccl)")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation after training")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. stage1.epochs=5")
    add_common_arguments(p)
    return p.parse_intermixed_args(argv)  # overrides may come before and after the flags


def resolve_config(args) -> tuple[dict, bool]:
    """(config, is_demo). A config other than the demo must name its manifest."""
    from rccl.run import RunDir
    from rccl.train.config import ConfigError, load_config
    from rccl.train.demo import demo_base, is_demo_config

    overrides = list(args.overrides)
    if args.amp:
        overrides.append("train.amp=true")
    if args.cache:
        overrides.append(f"demo.cache={args.cache}")
    if args.device:
        overrides.append(f"train.device={args.device}")
    if args.no_progress:
        overrides.append("train.progress=false")
    if args.resume:
        if args.config:
            raise ConfigError("--resume uses the run's own config.yaml; give overrides, not --config")
        run = RunDir(args.resume)
        if not run.config_path.is_file():
            raise ConfigError(f"--resume {args.resume}: not a run folder (no config.yaml)")
        return load_config(None, overrides, base=run.config()), False
    if args.config is None:  # the defaults when a manifest is given, else the demo
        cfg = load_config(None, overrides)
        if cfg["data"]["manifest"] is not None:
            return cfg, False
    if is_demo_config(args.config):
        cfg = load_config(None, overrides, base=demo_base())
        return cfg, cfg["data"]["manifest"] is None
    cfg = load_config(args.config, overrides)
    if cfg["data"]["manifest"] is None:
        raise ConfigError(f"--config {args.config}: no data.manifest; give the manifest rccl-prep wrote, e.g. "
                          f"`rccl-train --config {args.config} data.manifest=PREP/manifest.jsonl` (or set "
                          f"data.manifest in the file); the synthetic demo is `rccl-train --config demo`")
    return cfg, False


def main(argv=None, hooks=()) -> int:
    """`hooks`: extra engine hooks (rccl.train.engine.HookBase) after the default ones, e.g. a test's kill."""
    args = parse_args(argv)

    def body() -> int:
        from rccl.train.config import ConfigError, check_world_size
        from rccl.train.demo import prepare_demo_data
        from rccl.train.runner import train

        cfg, is_demo = resolve_config(args)
        check_world_size(cfg, int(os.environ.get("WORLD_SIZE", "1")))  # before a process group forms
        if is_demo:
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise ConfigError("the demo runs in one process; give data.manifest=... for torchrun")
            cfg["data"]["manifest"] = str(prepare_demo_data(cfg).resolve())
        stages = (1, 2) if args.stage == "both" else (int(args.stage),)
        evaluation = [evaluation_hook()] if cfg["eval"]["after_training"] and not args.no_eval else []
        train(cfg, stages=stages, resume_dir=args.resume, hooks=[*evaluation, *hooks])
        return 0

    return run_command(PROG, args, body, interrupted="interrupted; the last finished epoch's checkpoint is kept, "
                                                     "and an interrupted evaluation runs again "
                                                     "(continue with --resume RUN)")


def evaluation_hook():
    """The hook that runs rccl-eval's evaluation once training is done: after a run that trained
    something, or on a finished run whose metrics.json is missing (an evaluation that was interrupted).
    A finished run with its metrics is left as it is (`rccl-eval RUN` evaluates it again). Under torchrun
    every rank evaluates its share of the crops (rccl.evaluate, sharded) with the detector rank 0 read and
    broadcast; rank 0 writes the files."""
    from rccl.train.engine import HookBase  # late: `rccl-train --help` does not load torch

    class EvaluateAfterTraining(HookBase):
        def after_train(self, outcome) -> None:
            from rccl import checkpoint
            from rccl.ranks import from_main

            run, cfg = outcome.run, outcome.cfg
            if not outcome.complete:
                return
            if not outcome.trained and from_main(lambda: run.metrics_path(cfg["eval"]["split"]).is_file()):
                return
            from rccl.evaluate import evaluate_run

            device = _eval_device(cfg)
            path = run.last_checkpoint_path(2)
            detector = run.detector(checkpoint.decode(from_main(path.read_bytes), path), device)
            evaluate_run(run.path, cfg["eval"]["qualities"], cfg["eval"]["split"], device=device,
                         batch_size=cfg["eval"]["batch_size"], num_workers=cfg["data"]["workers"],
                         progress=bool(cfg["train"]["progress"]), verbose=outcome.is_main, detector=detector,
                         sharded=True, skip_absent=True)

    return EvaluateAfterTraining()


def _eval_device(cfg: dict):
    from rccl.train.runtime import resolve_device

    device = resolve_device(cfg["train"]["device"])
    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if device.type == "cuda" else device


if __name__ == "__main__":
    sys.exit(main())

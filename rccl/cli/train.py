"""rccl-train: stage 1 (contrastive) and stage 2 (linear head) of real-centric consistency learning.

  rccl-train --amp                                   the embedded demo (synthetic data, small encoder)
  rccl-train --config configs/celebdf.yaml data.manifest=PREP/manifest.jsonl
  rccl-train --resume runs/celebdf --stage 2         continue a run (after a kill: from its last epoch)
  torchrun --nproc-per-node 8 -m rccl.cli.train --config ...   many GPUs
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="rccl-train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="a YAML config (see configs/); without it and without data.manifest: the demo")
    p.add_argument("--amp", action="store_true", help="mixed precision (train.amp_dtype: bfloat16, or float16 "
                                                      "with a GradScaler)")
    p.add_argument("--resume", metavar="RUN", help="continue the run folder RUN from its last checkpoints")
    p.add_argument("--stage", choices=("1", "2", "both"), default="both", help="which stage(s) to run")
    p.add_argument("--cache", help="demo data cache (default ~/.cache/rccl)")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation after training")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. stage1.epochs=5")
    return p.parse_args(argv)


def resolve_config(args) -> tuple[dict, bool]:
    """(config, is_demo)."""
    from rccl.train.config import load_config
    from rccl.train.demo import demo_base

    overrides = list(args.overrides)
    if args.amp:
        overrides.append("train.amp=true")
    if args.cache:
        overrides.append(f"demo.cache={args.cache}")
    if args.resume:
        saved = Path(args.resume) / "config.yaml"
        if not saved.is_file():
            raise FileNotFoundError(f"--resume {args.resume}: not a run folder (no config.yaml)")
        if args.config:
            raise ValueError("--resume uses the run's own config.yaml; give overrides, not --config")
        return load_config(None, overrides, base=yaml.safe_load(saved.read_text(encoding="utf-8"))), False
    cfg = load_config(args.config, overrides)
    if cfg["data"]["manifest"] is None:
        if args.config is None:
            cfg = load_config(None, overrides, base=demo_base())
        return cfg, True
    return cfg, False


def main(argv=None) -> int:
    args = parse_args(argv)
    from rccl.train.config import ConfigError
    from rccl.train.demo import prepare_demo_data
    from rccl.train.runner import train

    try:
        cfg, is_demo = resolve_config(args)
        if is_demo:
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise ValueError("the demo runs in one process; give data.manifest=... for torchrun")
            cfg["data"]["manifest"] = str(prepare_demo_data(cfg).resolve())
        stages = (1, 2) if args.stage == "both" else (int(args.stage),)
        train(cfg, stages=stages, resume_dir=args.resume, evaluate=False if args.no_eval else None)
    except KeyboardInterrupt:
        print("rccl-train: interrupted; the last finished epoch's checkpoint is kept (continue with --resume RUN)",
              file=sys.stderr)
        return 130
    except (ConfigError, ValueError, FileNotFoundError, RuntimeError) as e:
        if os.environ.get("RCCL_TRACEBACK"):
            raise
        print(f"rccl-train: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

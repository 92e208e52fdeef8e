"""The embedded demo: what `rccl-train` does when no dataset is given.

It makes the synthetic Celeb-DF-shaped set once (rccl.data.synth, cached), prepares its raw/c23/c40
crops once (rccl.data.prep, cached), and trains a small encoder on small crops so that both stages and
the evaluation fit in a few minutes on two CPU cores. Its settings are configs/demo.yaml, the only place
they are written (`rccl-train`, `rccl-train --config demo` and `--config configs/demo.yaml` are the same).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

from rccl.train.config import ConfigError, load_config, resolve_config_path

DEMO_CONFIG = "demo"  # configs/demo.yaml: the demo's settings, written down once


def demo_config_path() -> Path:
    return resolve_config_path(DEMO_CONFIG)


def is_demo_config(name_or_path) -> bool:
    """True for no --config at all, `--config demo`, or a path to the shipped demo.yaml."""
    if name_or_path is None:
        return True
    try:
        return resolve_config_path(name_or_path).resolve() == demo_config_path().resolve()
    except ConfigError:
        return False


def demo_base() -> dict:
    """DEFAULTS with configs/demo.yaml applied (the base an override list is applied to)."""
    return load_config(demo_config_path())


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rccl"


def prepare_demo_data(cfg: dict, cache: str | os.PathLike | None = None, log=None) -> Path:
    """Make (once) and prepare (once) the synthetic set; returns the manifest's path."""
    from rccl.data.prep import PrepError, prepare
    from rccl.data.synth import make_synthetic

    log = log or logging.getLogger("rccl.train.demo").info
    cache = Path(cache or cfg["demo"]["cache"] or default_cache()).expanduser()
    seed = cfg["demo"]["seed"]
    qualities = tuple(dict.fromkeys(list(cfg["data"]["train_qualities"]) + list(cfg["eval"]["qualities"])))
    t0 = time.perf_counter()
    synth_key = hashlib.sha1(json.dumps(cfg["demo"]["synth"], sort_keys=True).encode()).hexdigest()[:8]
    root = make_synthetic(cache / f"demo-synth-{seed}-{synth_key}", seed=seed, progress=cfg["train"]["progress"],
                          **cfg["demo"]["synth"])
    log(f"demo: synthetic set in {root} ({time.perf_counter() - t0:.0f} s)")
    t1 = time.perf_counter()
    prep_kwargs = dict(qualities=qualities, progress=cfg["train"]["progress"], log=log, **cfg["demo"]["prep"])
    key = hashlib.sha1(json.dumps([seed, list(qualities), cfg["demo"]["prep"], cfg["demo"]["synth"]],
                                  sort_keys=True).encode()).hexdigest()[:8]
    for attempt in range(1, 10):
        out = cache / (f"demo-prep-{seed}-{key}" + (f"-{attempt}" if attempt > 1 else ""))
        try:
            manifest = prepare("synthetic", root, out, **prep_kwargs)
            break
        except PrepError as e:
            # A cache made by another version of rccl-prep (other defaults): keep it, prepare beside it.
            if "other settings" not in str(e):
                raise
            log(f"demo: {out} was prepared by another rccl version; preparing a fresh copy beside it")
    else:
        raise PrepError(f"demo: could not find a free preparation folder under {cache}")
    log(f"demo: crops and manifest in {Path(manifest).parent} ({time.perf_counter() - t1:.0f} s)")
    return Path(manifest)

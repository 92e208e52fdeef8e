"""What a resumed run may change, and whether it has anything left to train.

A run's config.yaml must say what its checkpoints were trained with. So on `--resume`, a key that a stage
already trained with (any checkpoint of it exists) cannot change: the error names the key and both values.
Keys that only say where or how fast the run computes (RUNTIME) may change at any time; the keys of
stage{N}.* only until stage N has a checkpoint; every other key (data, model, loss, train.seed, AMP) only
until stage 1 has one (stage 2 is trained on stage 1's encoder, so it inherits stage 1's settings).
"""
from __future__ import annotations

from rccl.run import RunDir
from rccl.train.config import ConfigError, flatten, load_config

# keys that change where or how fast the run computes, never what it computes
RUNTIME = {"name", "train.out", "train.device", "train.threads", "train.progress", "train.log_every",
           "train.keep_epochs", "data.workers", "data.backend", "data.dali_threads", "data.dali_prefetch",
           "data.cache_images", "demo.cache"}
RUNTIME_SECTIONS = ("eval.",)   # evaluation after training reads these; training does not


def changed_keys(saved: dict, cfg: dict) -> dict[str, tuple]:
    """{dotted key: (saved value, new value)} for every key whose value differs."""
    a, b = flatten(load_config(None, base=saved)), flatten(cfg)  # a key added since: its default on both sides
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def check_changes(run: RunDir, saved: dict, cfg: dict, started: dict[int, int]) -> dict[str, tuple]:
    """Raise a ConfigError naming the first changed key that a started stage trained with; return the
    changes (all allowed). `started`: {stage: epochs it has done} for each stage with a checkpoint."""
    changes = changed_keys(saved, cfg)
    for key, (old, new) in changes.items():
        if key in RUNTIME or key.startswith(RUNTIME_SECTIONS):
            continue
        stage = 2 if key.startswith("stage2.") else 1
        users = [s for s in started if s >= stage]
        if users:
            raise ConfigError(f"--resume {run.path}: {key} cannot change from {old!r} to {new!r}: stage {users[0]} "
                              f"already trained with {key}={old!r} ({started[users[0]]} epoch(s)); start a new run "
                              f"for another {key}")
    return changes


def stage1_done(s1: dict | None, cfg: dict) -> bool:
    return cfg["stage1"]["epochs"] == 0 or (s1 is not None and s1["epoch"] >= cfg["stage1"]["epochs"])


def finished(s2: dict | None, cfg: dict) -> bool:
    """The run holds its detector: stage 2 complete (all its epochs, or the CE baseline's copy)."""
    return s2 is not None and (bool(s2.get("complete")) or s2["epoch"] >= cfg["stage2"]["epochs"])

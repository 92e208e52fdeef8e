"""A preset made and prepared in one call, cached: the demo set rccl-train uses when given no dataset,
and the compression benchmark bench/paper_tables.py trains on."""
from __future__ import annotations

import os
from pathlib import Path

from rccl.data.synth.params import SYNTH_KEYS, PRESETS, preset
from rccl.data.synth.tree import make_synthetic

# The demo's parameters, kept under the names the tests and rccl.train.demo read (PRESETS is the source).
DEMO_SYNTH = PRESETS["demo"]["synth"]
DEMO_PREP = PRESETS["demo"]["prep"]


def make_prepared(cache_dir: str | os.PathLike, preset_name: str = "demo", *, workers: int | None = None,
                  progress: bool = True, log=print, **overrides) -> Path:
    """Make (once; cached) and prepare the synthetic preset `preset_name` under cache_dir; returns the
    manifest path. The tree goes to cache_dir/tree and the crops to cache_dir/prep. `overrides` replace the
    preset's synth or prep entries (e.g. artifact_strength=1.5, crop_size=96); a cache made with other
    settings is refused with the differences listed, so use a cache folder per setting."""
    from rccl.data.prep import prepare

    chosen = preset(preset_name)
    cache = Path(cache_dir)
    synth_kw = {**chosen["synth"], **{k: v for k, v in overrides.items() if k in SYNTH_KEYS}}
    prep_kw = {**chosen["prep"], **{k: v for k, v in overrides.items() if k not in SYNTH_KEYS}}
    tree = make_synthetic(cache / "tree", workers=workers, progress=progress, **synth_kw)
    return prepare("synthetic", tree, cache / "prep", workers=workers or 0, progress=progress, log=log, **prep_kw)


def make_demo(cache_dir: str | os.PathLike, *, workers: int | None = None, progress: bool = True, log=print,
              **overrides) -> Path:
    """make_prepared of the demo preset (the set rccl-train's demo trains on)."""
    return make_prepared(cache_dir, "demo", workers=workers, progress=progress, log=log, **overrides)

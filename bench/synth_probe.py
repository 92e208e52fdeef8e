"""Which cue separates a prepared synthetic set's fakes from its naturals, at raw, c23 and c40.

    python -m bench.synth_probe --preset compression [--quality raw] [--cache DIR] [--cnn] [--cnn-lowpass 16]
    python -m bench.synth_probe --preset compression --traces fragile     the set before issue 10's fix

The linear probes of rccl.data.synth.probe (ridge on the raw pixels, on 8x8 and 16x16 low-passed crops, on
per-channel colour statistics of the centre and border, on a local high-frequency-energy feature), each
trained on the train split and scored on the test split of one quality, the best of four regularisations
picked on the test set (generous to the probe); one JSON line per quality. With --cnn: a tiny CNN trained
on the raw train crops and scored on the test crops of every quality (the fast proxy of the cross-entropy
baseline: where it loses little to c40, the set has a cue c40 keeps); --cnn-lowpass N also trains it on
crops low-passed to NxN (a cue it still finds there is a low-frequency one). Frame AUCs throughout.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.paper_tables import default_cache, prepare_data
from rccl.data.manifest import read_manifest
from rccl.data.synth import TRACES, make_prepared, preset
from rccl.data.synth.probe import cnn_probe, probe_aucs

QUALITIES = ("raw", "c23", "c40")


def load_quality(rows: list[dict], quality: str):
    """(crops in [0, 1], labels, train mask) of one quality of a manifest."""
    sel = [r for r in rows if r["quality"] == quality]
    x = np.stack([np.asarray(Image.open(r["abspath"]), np.float32) / 255 for r in sel])
    return x, np.array([r["label"] for r in sel]), np.array([r["split"] == "train" for r in sel])


def manifest_for(preset_name: str, cache: Path, traces: str | None) -> Path:
    """The preset prepared: the bench's own cache folder (bench.paper_tables) as it is, or with another
    `traces` kind in a folder of its own."""
    if traces is None:
        return prepare_data(preset_name, cache, print)
    settings = preset(preset_name)
    settings["synth"]["traces"] = traces
    key = hashlib.sha1(json.dumps(settings, sort_keys=True, default=list).encode()).hexdigest()[:8]
    return Path(make_prepared(cache / f"synth-probe-{preset_name}-{traces}-{key}", preset_name, progress=False,
                              log=None, traces=traces))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="synth_probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="compression")
    p.add_argument("--quality", action="append", choices=QUALITIES,
                   help="raw, c23, c40 (repeatable; default: all three)")
    p.add_argument("--cache", default=None)
    p.add_argument("--traces", choices=TRACES, default=None, help="the preset with other fakes' traces")
    p.add_argument("--cnn", action="store_true", help="also the tiny CNN probe, trained on raw")
    p.add_argument("--cnn-lowpass", type=int, action="append", default=[], metavar="N",
                   help="also the CNN probe on crops low-passed to NxN (repeatable; implies --cnn)")
    p.add_argument("--cnn-steps", type=int, default=300)
    args = p.parse_args(argv)
    manifest = manifest_for(args.preset, Path(args.cache) if args.cache else default_cache(), args.traces)
    rows = read_manifest(manifest)
    qualities = args.quality or list(QUALITIES)
    data = {q: load_quality(rows, q) for q in dict.fromkeys(["raw", *qualities])}
    for q in qualities:
        x, y, train = data[q]
        aucs = probe_aucs(x, y, train)
        print(json.dumps({"preset": args.preset, "quality": q, "train": int(train.sum()),
                          "test": int((~train).sum()), **aucs}), flush=True)
    if args.cnn or args.cnn_lowpass:
        x, y, train = data["raw"]
        tests = {q: (data[q][0][~data[q][2]], data[q][1][~data[q][2]]) for q in qualities}
        for side in [None, *args.cnn_lowpass]:
            t0 = time.perf_counter()
            aucs = cnn_probe(x[train], y[train], tests, steps=args.cnn_steps, lowpass_side=side)
            print(json.dumps({"preset": args.preset, "probe": "cnn", "trained_on": "raw", "lowpass": side,
                              "steps": args.cnn_steps, "auc": aucs,
                              "seconds": round(time.perf_counter() - t0)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

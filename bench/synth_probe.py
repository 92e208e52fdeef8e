"""How separable a prepared synthetic set is by a linear probe on raw pixels, and by a local texture feature.

    python -m bench.synth_probe --preset compression [--quality raw] [--cache DIR]

Ridge regression on the flattened crops (each pixel centred on the training mean), trained on the train
split and scored on the test split, at four regularisations, the best one picked on the test set itself
(generous to the probe); and the same ridge on a pooled high-frequency-energy feature (log of the mean
|Laplacian| per 2x2 cell), which sees local traces such as missing grain or a seam (rccl.data.synth.probe).
Prints frame AUCs; tests/test_data_synth.py asserts the same of the demo set.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from bench.paper_tables import default_cache, prepare_data
from rccl.data.manifest import read_manifest
from rccl.data.synth.probe import probe_aucs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="synth_probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="compression")
    p.add_argument("--quality", action="append", help="raw, c23, c40 (repeatable; default: all three)")
    p.add_argument("--cache", default=None)
    args = p.parse_args(argv)
    manifest = prepare_data(args.preset, Path(args.cache) if args.cache else default_cache(), print)
    rows = read_manifest(manifest)
    for q in args.quality or ["raw", "c23", "c40"]:
        sel = [r for r in rows if r["quality"] == q]
        x = np.stack([np.asarray(Image.open(r["abspath"]), np.float32) / 255 for r in sel])
        y = np.array([r["label"] for r in sel])
        train = np.array([r["split"] == "train" for r in sel])
        print(json.dumps({"preset": args.preset, "quality": q, "train": int(train.sum()), "test": int((~train).sum()),
                          **probe_aucs(x, y, train)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How separable a prepared synthetic set is by a linear probe on raw pixels, and by a local texture feature.

    python -m bench.synth_probe --preset compression [--quality raw] [--cache DIR]

Ridge regression on the flattened crops (each pixel centred on the training mean), trained on the train
split and scored on the test split, at four regularisations, the best one picked on the test set itself
(generous to the probe); and the same ridge on a pooled high-frequency-energy feature (log of the mean
|Laplacian| per 2x2 cell), which sees local traces such as missing grain or a seam. Prints frame AUCs.
tests/test_data_synth.py asserts the same of the demo set.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import roc_auc_score

from bench.paper_tables import default_cache, prepare_data
from rccl.data.manifest import read_manifest


def probe_aucs(x: np.ndarray, y: np.ndarray, train: np.ndarray) -> dict:
    flat = x.reshape(len(x), -1)
    mu = flat[train].mean(0)
    xt, xe = flat[train] - mu, flat[~train] - mu
    target = y[train] * 2.0 - 1
    gram = xt @ xt.T
    pixels = {}
    for lam in (1e-2, 1.0, 100.0, 1e4):
        w = xt.T @ np.linalg.solve(gram + lam * np.eye(len(gram)), target)
        pixels[lam] = float(roc_auc_score(y[~train], xe @ w))
    gray = x.mean(3)
    lap = np.abs(4 * gray[:, 1:-1, 1:-1] - gray[:, :-2, 1:-1] - gray[:, 2:, 1:-1]
                 - gray[:, 1:-1, :-2] - gray[:, 1:-1, 2:])
    n = lap.shape[1] // 2
    feat = np.log(lap[:, :2 * n, :2 * n].reshape(len(x), n, 2, n, 2).mean((2, 4)).reshape(len(x), -1) + 1e-4)
    m, s = feat[train].mean(0), feat[train].std(0) + 1e-6
    ft, fe = (feat[train] - m) / s, (feat[~train] - m) / s
    w = np.linalg.solve(ft.T @ ft + 100 * np.eye(ft.shape[1]), ft.T @ target)
    return {"pixel_ridge_auc": pixels, "best_pixel_ridge_auc": max(pixels.values()),
            "local_hf_feature_auc": float(roc_auc_score(y[~train], fe @ w))}


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

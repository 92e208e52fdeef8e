"""How separable a prepared synthetic set is: a linear probe on raw pixels, and a local texture feature.

Ridge regression on the flattened crops (each pixel centred on the training mean), trained on the train
split and scored on the test split, at four regularisations, the best one picked on the test set itself
(generous to the probe); and the same ridge on a pooled high-frequency-energy feature (log of the mean
|Laplacian| per 2x2 cell), which sees local traces such as missing grain or a seam. A good synthetic set is
near chance for the first and well above it for the second (bench/synth_probe.py prints both for a preset;
tests/test_data_synth.py asserts them on the demo set).
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def probe_aucs(x: np.ndarray, y: np.ndarray, train: np.ndarray) -> dict:
    """x (n, H, W, 3) float crops in [0, 1], y (n,) labels 0/1, train (n,) bool: the frame AUCs of both probes
    on the test rows (~train)."""
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

"""How separable a prepared synthetic set is, and by which cue: probes that each answer one question.

All probes train on the train split and score frame AUC on the test split; the linear ones fit ridge
regression at four regularisations and keep the best one picked on the test set itself (generous to the
probe). Run at raw, c23 and c40 (bench/synth_probe.py), they say which kind of difference the fakes carry:

- `pixel_ridge`: the flattened crops (each pixel centred on the training mean). A good set is near chance:
  no fixed pixel pattern tells a fake.
- `lowpass_ridge`: the crops box-downsampled to 8x8 or 16x16. High where the fakes differ in where and how
  bright their face region is (a colour step, the blend region's shape): a cue compression keeps.
- `colour_stats_ridge`: per-channel mean and std of the crop's centre (the swapped inner face), of its
  border, centre minus border and its magnitude. High where the fakes carry a colour or contrast mismatch.
- `local_hf_feature`: log of the mean |Laplacian| per 2x2 cell. High where the fakes miss grain or carry a
  seam: the local traces heavy compression erases (it should fall towards chance at c40).
- `cnn_probe` (torch): a tiny CNN trained on one quality's train crops and scored on the test crops of
  every quality; the fast proxy of the cross-entropy baseline. Trained on low-passed crops
  (`lowpass=16`) it answers whether a non-linear low-frequency cue exists (identity mismatch inside the
  face, say) that a linear probe misses and c40 keeps.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

RIDGE_LAMBDAS = (1e-2, 1.0, 100.0, 1e4)


def _ridge_aucs(feat: np.ndarray, y: np.ndarray, train: np.ndarray, standardise: bool) -> dict:
    """Test AUCs of ridge regression on `feat` (n, d) at every RIDGE_LAMBDAS (dual form when d > n)."""
    m = feat[train].mean(0)
    s = feat[train].std(0) + 1e-6 if standardise else 1.0
    ft, fe = (feat[train] - m) / s, (feat[~train] - m) / s
    target = y[train] * 2.0 - 1
    out = {}
    for lam in RIDGE_LAMBDAS:
        if ft.shape[1] > ft.shape[0]:
            w = ft.T @ np.linalg.solve(ft @ ft.T + lam * np.eye(len(ft)), target)
        else:
            w = np.linalg.solve(ft.T @ ft + lam * np.eye(ft.shape[1]), ft.T @ target)
        out[lam] = float(roc_auc_score(y[~train], fe @ w))
    return out


def lowpass(x: np.ndarray, side: int) -> np.ndarray:
    """Crops (n, H, W, C) box-averaged to (n, side, side, C) (H and W divisible by side)."""
    n, h, w, c = x.shape
    return x.reshape(n, side, h // side, side, w // side, c).mean((2, 4))


def colour_stats(x: np.ndarray) -> np.ndarray:
    """(n, 24): per channel, mean and std of the centre half of the crop (the inner face), of the rest
    (border: hair, outline, background), centre minus border and its magnitude (a mismatch of random sign
    shows only in the magnitude)."""
    n, h, w, _ = x.shape
    centre = np.zeros((h, w), bool)
    centre[h // 4:h - h // 4, w // 4:w - w // 4] = True
    inner, outer = x[:, centre], x[:, ~centre]
    a = np.concatenate([inner.mean(1), inner.std(1)], 1)
    b = np.concatenate([outer.mean(1), outer.std(1)], 1)
    return np.concatenate([a, b, a - b, np.abs(a - b)], 1)


def local_hf_feature(x: np.ndarray) -> np.ndarray:
    """(n, cells): log of the mean |Laplacian| of the grey crop per 2x2 cell."""
    gray = x.mean(3)
    lap = np.abs(4 * gray[:, 1:-1, 1:-1] - gray[:, :-2, 1:-1] - gray[:, 2:, 1:-1]
                 - gray[:, 1:-1, :-2] - gray[:, 1:-1, 2:])
    n = lap.shape[1] // 2
    return np.log(lap[:, :2 * n, :2 * n].reshape(len(x), n, 2, n, 2).mean((2, 4)).reshape(len(x), -1) + 1e-4)


def probe_aucs(x: np.ndarray, y: np.ndarray, train: np.ndarray) -> dict:
    """x (n, H, W, 3) float crops in [0, 1], y (n,) labels 0/1, train (n,) bool: the frame AUCs of the linear
    probes on the test rows (~train). `*_auc` holds the best regularisation's; `pixel_ridge_auc` all four."""
    pixels = _ridge_aucs(x.reshape(len(x), -1), y, train, standardise=False)
    hf = _ridge_aucs(local_hf_feature(x), y, train, standardise=True)
    out = {"pixel_ridge_auc": pixels, "best_pixel_ridge_auc": max(pixels.values()),
           "local_hf_feature_auc": hf[100.0]}
    h = x.shape[1]
    for side in (8, 16):
        if h % side == 0:
            out[f"lowpass{side}_ridge_auc"] = max(_ridge_aucs(lowpass(x, side).reshape(len(x), -1), y, train,
                                                              standardise=False).values())
    out["colour_stats_ridge_auc"] = max(_ridge_aucs(colour_stats(x), y, train, standardise=True).values())
    return out


# ------------------------------------------------------------------------------------------ the CNN probe
def cnn_probe(x_train: np.ndarray, y_train: np.ndarray, tests: dict, *, steps: int = 300, batch: int = 32,
              lr: float = 3e-3, lowpass_side: int | None = None, seed: int = 0, threads: int = 2) -> dict:
    """Train a tiny CNN (4 conv layers, 24-64 channels, from scratch, Adam, random flips and shifts of up to
    4 px) on x_train (n, H, W, 3) in [0, 1] with labels y_train, and return its frame AUC on each
    tests[name] = (x, y). With `lowpass_side` every crop (train and test) is first box-downsampled to that
    side and scaled back up (nearest), so only its low frequencies reach the CNN. Seeded, CPU."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    gen = np.random.default_rng(seed)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)

    def prep(a):
        if lowpass_side:
            k = a.shape[1] // lowpass_side
            a = lowpass(a, lowpass_side).repeat(k, 1).repeat(k, 2)
        return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2), np.float32) * 2 - 1)

    def conv(cin, cout, k, stride):
        return [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    # a 5x5 stride-2 stem sees single-pixel traces (seams, grain, checkerboards) at a quarter of the cost
    net = nn.Sequential(*conv(3, 24, 5, 2), *conv(24, 32, 3, 2), *conv(32, 64, 3, 2), *conv(64, 64, 3, 1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 1))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    xt, yt = prep(x_train), torch.from_numpy(np.asarray(y_train, np.float32))
    pad = nn.functional.pad(xt, (4, 4, 4, 4), mode="replicate")
    h, w = xt.shape[2:]
    try:
        net.train()
        for _ in range(steps):
            idx = gen.integers(0, len(xt), batch)
            dy, dx = gen.integers(0, 9, 2)
            xb = pad[idx, :, dy:dy + h, dx:dx + w]
            if gen.uniform() < 0.5:
                xb = xb.flip(3)
            loss = nn.functional.binary_cross_entropy_with_logits(net(xb)[:, 0], yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        net.eval()
        out = {}
        with torch.no_grad():
            for name, (xe, ye) in tests.items():
                xe = prep(xe)
                score = torch.cat([net(xe[i:i + 256])[:, 0] for i in range(0, len(xe), 256)]).numpy()
                out[name] = float(roc_auc_score(ye, score))
        return out
    finally:
        torch.set_num_threads(old_threads)

"""How visible a self-blended pseudo-fake is to an ImageNet encoder before any training, per input size.

    python -m bench.blend_visibility --manifest PREP/manifest.jsonl [--sizes 64,96,128] [--n 1024] [--target-p 0]

For `n` natural training crops with landmarks (raw), one pseudo-fake each (rccl.data.blend.self_blend, one
seed), both resized to each input size and encoded by the pretrained EfficientNet-Lite0 the benches train
(model.weights=package:efficientnet-lite0, pooled features, eval mode). Per size:
  cos(natural, its pseudo-fake)   median cosine of a natural's features and its own pseudo-fake's: how little
                                  the blend moves the features (1 = not at all)
  cos(natural, other natural)     mean cosine between different people: how much the content moves them
  linear probe AUC                logistic regression on the frozen features (three quarters of the pairs to
                                  fit, the rest to test): is the blend linearly readable before training?
What a contrastive stage must do on real faces follows: pull naturals of different people together (their
cosine) while separating each from a pseudo-fake its features barely tell apart.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from bench.paper_tables import BenchError
from rccl.errors import RcclError


def pairs(manifest: Path, n: int, target_p: float, seed: int = 0):
    """(naturals, pseudo-fakes) uint8 (n, 3, S, S) from the manifest's raw training naturals with landmarks."""
    import torch
    from PIL import Image

    from rccl.data.blend import BlendParams, self_blend
    from rccl.data.manifest import read_manifest

    rows = [r for r in read_manifest(manifest) if r["split"] == "train" and r["quality"] == "raw" and r["label"] == 0
            and r.get("landmarks")][:n]
    if len(rows) < 64:
        raise BenchError(f"{manifest}: {len(rows)} raw training naturals with landmarks; give a manifest with >= 64")
    crops = torch.stack([torch.from_numpy(np.asarray(Image.open(r["abspath"]).convert("RGB")).copy()).permute(2, 0, 1)
                         for r in rows])
    landmarks = torch.tensor([r["landmarks"] for r in rows], dtype=torch.float32)
    made = self_blend(crops, landmarks, BlendParams(target_p=target_p), torch.Generator().manual_seed(seed))
    return made.naturals, made.fakes


def features(images, size: int, batch: int = 64):
    import torch
    import torch.nn.functional as F

    from rccl.model import build_model, input_normalization
    from rccl.train.config import load_config

    cfg = load_config(None, ["model.encoder=tf_efficientnet_lite0", "model.pretrained=false",
                             "model.weights=package:efficientnet-lite0"])
    encoder = build_model(cfg).encoder.eval()
    norm = input_normalization("tf_efficientnet_lite0")
    mean, std = torch.tensor(norm.mean).view(1, 3, 1, 1), torch.tensor(norm.std).view(1, 3, 1, 1)
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            x = images[i:i + batch].float() / 255
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            out.append(encoder((x - mean) / std))
    return torch.cat(out)


def visibility(naturals, fakes, size: int) -> dict:
    import torch.nn.functional as F
    from sklearn.linear_model import LogisticRegression

    from rccl.metrics import roc_auc

    fn, ff = features(naturals, size), features(fakes, size)
    un, uf = F.normalize(fn, dim=1), F.normalize(ff, dim=1)
    n = len(fn)
    others = (un @ un.T).sum() - n  # the mean off-diagonal cosine
    cut = 3 * n // 4
    x = np.concatenate([fn.numpy(), ff.numpy()])
    y = np.concatenate([np.zeros(n), np.ones(n)])
    fit = np.r_[0:cut, n:n + cut]
    test = np.r_[cut:n, n + cut:2 * n]
    clf = LogisticRegression(C=0.01, max_iter=5000).fit(x[fit], y[fit])
    return {"size": size, "pairs": n, "cos_own_fake": round(float((un * uf).sum(1).median()), 4),
            "cos_other_natural": round(float(others / (n * (n - 1))), 4),
            "linear_probe_auc": round(float(roc_auc(y[test], clf.decision_function(x[test]))), 4)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="blend_visibility", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", type=Path, required=True, help="a prepared manifest with landmarks")
    p.add_argument("--sizes", default="64,96,128", help="input sizes (default: %(default)s)")
    p.add_argument("--n", type=int, default=1024, help="natural crops (default: %(default)s)")
    p.add_argument("--target-p", type=float, default=0.0, help="data.blend_target_p of the blends (default: 0)")
    args = p.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
        if not args.manifest.is_file():
            raise BenchError(f"--manifest {args.manifest}: no such file")
        naturals, fakes = pairs(args.manifest, args.n, args.target_p)
        print("| input px | pairs | cos(natural, its pseudo-fake) | cos(natural, other natural) | linear probe AUC |")
        print("|---:|---:|---:|---:|---:|")
        for size in sizes:
            v = visibility(naturals, fakes, size)
            print(f"| {size} | {v['pairs']} | {v['cos_own_fake']:.4f} | {v['cos_other_natural']:.4f} | "
                  f"{v['linear_probe_auc']:.3f} |", flush=True)
        return 0
    except (RcclError, ValueError) as e:
        print(f"blend_visibility: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

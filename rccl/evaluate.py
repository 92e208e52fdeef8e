"""Evaluate a trained run on the test crops of its manifest, per quality, the way the paper's Table 2 does.

For each quality: the detector's fake probability for every crop (frame level) and the mean of a video's
frame scores (video level); AUC, ACC, TPR, TNR, FPR at threshold 0.5, EER and AP (fake is positive).
Writes RUN/metrics.json (atomically), and under RUN/eval/ a ROC curve and a score histogram per quality
as PNG plus the per-crop scores as CSV, so a plot can be redrawn without running the model again.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from rccl.data.manifest import read_manifest
from rccl.metrics import detection_metrics, roc_curve, video_scores
from rccl.plots import draw_roc, draw_score_histogram
from rccl.data.loaders import build_eval_loader
from rccl.errors import RcclError
from rccl.scoring import input_size, score_batches

QUALITIES = ("raw", "c23", "c40")


class EvaluationError(RcclError, ValueError):
    """Evaluation cannot start: a missing run folder, a quality absent from the manifest, an empty split."""


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def metrics_path(run_dir: str | os.PathLike, split: str = "test") -> Path:
    """RUN/metrics.json for the test split (the run-folder contract); RUN/metrics_<split>.json otherwise."""
    return Path(run_dir) / ("metrics.json" if split == "test" else f"metrics_{split}.json")


def run_manifest(cfg: dict, run_dir: str | os.PathLike) -> Path | None:
    """The manifest a run was trained on: data.manifest of its config, a relative path taken from the run
    folder when it exists there, else from the working directory; None when the config names none."""
    manifest = (cfg.get("data") or {}).get("manifest")
    if not manifest:
        return None
    manifest, run_dir = Path(manifest), Path(run_dir)
    if not manifest.is_absolute():
        manifest = (run_dir / manifest) if (run_dir / manifest).exists() else manifest.resolve()
    return manifest


def select_records(records: list[dict], qualities: Sequence[str], split: str, manifest: Path) -> dict[str, list[dict]]:
    """The rows of each quality in `split`; every problem is found before any scoring starts."""
    by_quality: dict[str, list[dict]] = {q: [] for q in qualities}
    present_qualities = sorted({r["quality"] for r in records})
    for r in records:
        if r["split"] == split and r["quality"] in by_quality:
            by_quality[r["quality"]].append(r)
    for q in qualities:
        if q not in present_qualities:
            raise EvaluationError(f"manifest {manifest}: no crops of quality {q!r} (it has: "
                                  f"{', '.join(present_qualities) or 'no rows at all'}); "
                                  f"prepare it with rccl-prep --qualities, or leave it out of --qualities")
        if not by_quality[q]:
            splits = sorted({r["split"] for r in records if r["quality"] == q})
            raise EvaluationError(f"manifest {manifest}: no {q!r} crops in split {split!r} "
                                  f"(the {q!r} crops are in: {', '.join(splits)})")
    return by_quality


def quality_metrics(records: list[dict], scores: np.ndarray) -> tuple[dict, dict]:
    """({"frame": metrics, "video": metrics}, curves for plotting). A one-class split gives None for the
    metrics it cannot define."""
    labels = np.array([r["label"] for r in records])
    videos = [(r["dataset"], r["video"]) for r in records]
    _, v_labels, v_scores = video_scores(videos, labels, scores)
    result = {"frame": detection_metrics(labels, scores), "video": detection_metrics(v_labels, v_scores)}
    curves = {}
    for level, (y, s) in (("frame", (labels, scores)), ("video", (v_labels, v_scores))):
        if result[level]["auc"] is not None:
            fpr, tpr, _ = roc_curve(y, s)
            curves[f"{level} (AUC {result[level]['auc']:.3f}, n={len(y)})"] = (fpr, tpr)
    return result, curves


def _write_text_atomic(path: Path, text: str) -> None:
    """Temporary file, fsync, rename: a kill leaves the old file or the new one. Readable as a plain
    open() would leave it (mkstemp's files are private to the owner)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _scores_csv(records: list[dict], scores: np.ndarray) -> str:
    buffer = io.StringIO()
    w = csv.writer(buffer)
    w.writerow(["path", "dataset", "video", "frame", "label", "fake_probability"])
    for r, s in zip(records, scores):
        w.writerow([r["path"], r["dataset"], r["video"], r["frame"], r["label"], f"{s:.6f}"])
    return buffer.getvalue()


def _pct(v) -> str:
    return "   n/a" if v is None else f"{100 * v:6.2f}"


def format_table(results: dict, split: str = "test") -> str:
    """The paper's Table 2 layout (TPR, TNR, AUC, ACC per quality; the paper's column headed FPR holds
    values like 99.80 and so is the TNR), then FPR, EER and AP; values in %, n/a where undefined."""
    qualities = list(results)
    lines = []
    for title, keys in ((f"{split} split, threshold 0.5, fake = positive (values in %)", ("tpr", "tnr", "auc", "acc")),
                        ("", ("fpr", "eer", "ap"))):
        width = 7 * len(keys)
        lines.append(title)
        lines.append(" " * 7 + "".join(f"{q:^{width}}" for q in qualities))
        lines.append(f"{'level':<7}" + "".join("".join(f"{k.upper():>7}" for k in keys) for _ in qualities))
        for level in ("frame", "video"):
            lines.append(f"{level:<7}" + "".join("".join(f" {_pct(results[q][level][k])}" for k in keys)
                                                 for q in qualities))
    counts = ", ".join(f"{q}: {results[q]['frame']['n']} crops ({results[q]['frame']['n_real']} natural, "
                       f"{results[q]['frame']['n_fake']} fake) in {results[q]['video']['n']} videos" for q in qualities)
    lines.append(counts)
    return "\n".join(lines)


def _note_undefined(quality: str, level: str, m: dict, out) -> None:
    if m["auc"] is None:
        present = "naturals" if m["n_fake"] == 0 else "fakes"
        unit = "crops" if level == "frame" else "videos"
        print(f"note: {quality} {level} level: only {present} ({m['n']} {unit}); AUC and EER are undefined "
              f"(null in metrics.json), the other metrics are reported", file=out)


def evaluate_run(run_dir: str | os.PathLike, qualities: Sequence[str] = QUALITIES, split: str = "test",
                 device: str | torch.device | None = None, batch_size: int = 64, *,
                 manifest: str | os.PathLike | None = None, num_workers: int = 0,
                 progress: bool = True, verbose: bool = True) -> dict:
    """Score the `split` crops of each quality with the run's stage-2 detector; returns
    {quality: {"frame": {...}, "video": {...}}} with METRIC_KEYS and counts, also written to
    metrics_path(run_dir, split). Plots and per-crop scores go to RUN/eval/."""
    from rccl.train.checkpoint import load_detector  # the training room; imported late so metrics work alone

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EvaluationError(f"run folder {run_dir}: no such folder (pass the RUN folder given to rccl-train)")
    qualities = list(dict.fromkeys(qualities))
    if not qualities:
        raise EvaluationError("no qualities to evaluate (e.g. --qualities raw,c23,c40)")
    device = torch.device(device) if device is not None else default_device()
    model, cfg = load_detector(run_dir, map_location=device)
    model.to(device).eval()
    try:
        input_size(cfg, f"{run_dir}/config.yaml")  # the evaluation loader resizes every crop to it
    except ValueError as e:
        raise EvaluationError(str(e)) from None
    manifest_path = Path(manifest) if manifest is not None else run_manifest(cfg, run_dir)
    if manifest_path is None:
        raise EvaluationError(f"{run_dir}/config.yaml: no data.manifest; pass the manifest explicitly (--manifest)")
    records = read_manifest(manifest_path, check_files=True)
    by_quality = select_records(records, qualities, split, manifest_path)

    out = sys.stdout if verbose else open(os.devnull, "w")
    results: dict[str, dict] = {}
    eval_dir = run_dir / "eval"
    try:
        for q in qualities:
            rows = by_quality[q]
            loader = build_eval_loader(cfg, rows, batch_size=batch_size, workers=num_workers)
            scores = score_batches(model, loader, device, desc=f"{q} {split}", progress=progress)
            results[q], curves = quality_metrics(rows, scores)
            for level in ("frame", "video"):
                _note_undefined(q, level, results[q][level], out)
            _write_text_atomic(eval_dir / f"{split}_{q}_scores.csv", _scores_csv(rows, scores))
            roc_png = eval_dir / f"{split}_{q}_roc.png"
            if curves:
                draw_roc(curves, f"ROC, {q}, {split} split", roc_png)
            else:  # one class only: no curve, and none left over from an earlier evaluation either
                roc_png.unlink(missing_ok=True)
            labels = np.array([r["label"] for r in rows])
            draw_score_histogram({"natural": scores[labels == 0], "fake": scores[labels == 1]},
                                 f"Frame scores, {q}, {split} split", eval_dir / f"{split}_{q}_hist.png")
        _write_text_atomic(metrics_path(run_dir, split), json.dumps(results, indent=2) + "\n")
        print(format_table(results, split), file=out)
        print(f"wrote {metrics_path(run_dir, split)} and plots in {eval_dir}", file=out)
    finally:
        if out is not sys.stdout:
            out.close()
    return results

"""The per-file picture of a prediction (`rccl-predict --report DIR`): can a person trust this score?

One PNG per file: the sampled frames with the face box that was scored drawn on them (no box: no face
was found there and the frame was not scored), each titled with its fake probability, and below them
the fake probability over the sampled frames with the file's mean. Drawn with matplotlib (Agg) and
written through rccl.fileio.
"""
from __future__ import annotations

import io
import math
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from rccl.fileio import write_bytes

MAX_THUMBNAILS = 16  # more sampled frames are subsampled evenly for the picture (the plot keeps them all)


def _clean(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")


def report_name(path: str | os.PathLike) -> str:
    """The PNG's file name for an input path: its name with anything but letters, digits, - and _ replaced."""
    return _clean(Path(path).name) + ".png"


def report_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """One PNG name per input path, distinct (compared without case, as some file systems do): the file's
    name as `report_name` gives it; where two paths would share one, the parent folders are prefixed, one
    at a time from the nearest, until they differ; a path given twice, or names still equal, get -2, -3."""
    parts = [[_clean(p) for p in Path(path).parts[:-1] if _clean(p)] for path in paths]
    names = [report_name(path) for path in paths]
    depth = 0
    while depth < max((len(p) for p in parts), default=0):
        lowered = [n.lower() for n in names]
        clashing = [i for i, n in enumerate(lowered) if lowered.count(n) > 1]
        if not clashing:
            break
        depth += 1
        for i in clashing:
            if len(parts[i]) >= depth:
                names[i] = f"{parts[i][-depth]}_{names[i]}"
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        count = seen[name.lower()] = seen.get(name.lower(), 0) + 1
        unique.append(name if count == 1 else f"{name.removesuffix('.png')}-{count}.png")
    return unique


def write_report(out_dir: str | os.PathLike, path: str | os.PathLike, frames: Sequence[np.ndarray],
                 boxes: Sequence[Sequence[int] | None], scores: Sequence[float | None],
                 fake_probability: float | None, note: str = "", name: str | None = None) -> Path:
    """Write OUT_DIR/NAME (default `report_name(path)`; rccl-predict passes `report_names` of all its
    files, so that two inputs never share a picture) for one file and return its path.

    frames: the sampled frames (RGB uint8); boxes: per frame the scored face box or None; scores: per
    frame the fake probability of its crop or None (no face); fake_probability: the file's score or None
    (skipped: `note` says why)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if not (len(frames) == len(boxes) == len(scores)):
        raise ValueError(f"report for {path}: {len(frames)} frames, {len(boxes)} boxes, {len(scores)} scores")
    shown = sorted(set(np.linspace(0, len(frames) - 1, min(MAX_THUMBNAILS, len(frames))).round().astype(int).tolist())) \
        if frames else []
    cols = min(4, max(1, len(shown)))
    rows = max(1, math.ceil(len(shown) / cols))
    fig = plt.figure(figsize=(3.2 * cols, 2.2 * rows + 2.6))
    grid = fig.add_gridspec(rows + 1, cols, height_ratios=[1.0] * rows + [1.1])
    for n, k in enumerate(shown):
        ax = fig.add_subplot(grid[n // cols, n % cols])
        ax.imshow(frames[k])
        if boxes[k] is not None:
            x0, y0, x1, y1 = boxes[k]
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=1.5))
        ax.set_title(f"sample {k}: " + (f"p(fake) {scores[k]:.2f}" if scores[k] is not None else "no face"),
                     fontsize=8, color="black" if scores[k] is not None else "red")
        ax.axis("off")
    ax = fig.add_subplot(grid[rows, :])
    xs = [k for k, s in enumerate(scores) if s is not None]
    ax.plot(xs, [scores[k] for k in xs], "o-", color="tab:red", markersize=3, label="p(fake) of the frame's face")
    if fake_probability is not None:
        ax.axhline(fake_probability, color="tab:blue", linestyle="--", label=f"file score {fake_probability:.3f}")
    ax.axhline(0.5, color="gray", linewidth=0.8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(-0.5, max(0, len(frames) - 0.5))
    ax.set_xlabel("sampled frame")
    ax.set_ylabel("p(fake)")
    ax.legend(loc="upper right", fontsize=8)
    found = sum(b is not None for b in boxes)
    verdict = ("skipped: " + note) if fake_probability is None else \
        f"p(fake) {fake_probability:.3f} ({'fake' if fake_probability > 0.5 else 'natural'})"
    fig.suptitle(f"{Path(path).name}: {verdict}; face in {found} of {len(frames)} sampled frames", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    target = Path(out_dir) / (name or report_name(path))
    write_bytes(target, buf.getvalue())
    return target

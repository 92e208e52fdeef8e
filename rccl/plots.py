"""ROC curves and score histograms as PNG, drawn with matplotlib (the Agg backend: no display needed).

Each plot is rendered into memory and written through rccl.fileio, so a reader never sees half a PNG.
The figures are built with the object API (Figure, not pyplot): nothing global is touched, and a caller's
own matplotlib state is left alone.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rccl.fileio import write_bytes

SIZE_INCHES = (6.4, 5.4)
DPI = 100
NATURAL, FAKE = "tab:green", "tab:red"


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    write_bytes(path, buffer.getvalue())
    return Path(path)


def draw_roc(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str,
             path: str | os.PathLike) -> Path:
    """ROC curves (legend text -> (fpr, tpr)) with the chance diagonal, on [0, 1] x [0, 1]."""
    fig = Figure(figsize=SIZE_INCHES, layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="chance")
    for name, (fpr, tpr) in curves.items():
        ax.plot(np.asarray(fpr), np.asarray(tpr), linewidth=2, label=name)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate (naturals called fake)",
           ylabel="true positive rate (fakes called fake)", title=title)
    ax.grid(True, color="0.9")
    ax.legend(loc="lower right")
    return _save(fig, path)


def draw_score_histogram(scores: Mapping[str, np.ndarray], title: str, path: str | os.PathLike, *,
                         threshold: float = 0.5, bins: int = 20) -> Path:
    """Histograms of scores in [0, 1], one per entry (legend text -> scores), each normalised to the
    fraction of its own entries so that classes of different sizes compare; the threshold dashed. The
    first entry is drawn green (naturals), the second red (fakes)."""
    fig = Figure(figsize=SIZE_INCHES, layout="constrained")
    ax = fig.add_subplot()
    edges = np.linspace(0.0, 1.0, bins + 1)
    width = (edges[1] - edges[0]) / max(len(scores), 1)  # classes side by side within a bin: none hides another
    colors = [NATURAL, FAKE, "tab:blue", "tab:orange", "tab:purple"]
    for i, (name, values) in enumerate(scores.items()):
        values = np.clip(np.asarray(values, dtype=float), 0, 1)
        fraction = np.histogram(values, edges)[0] / max(len(values), 1)
        ax.bar(edges[:-1] + i * width, fraction, width=width, align="edge", color=colors[i % len(colors)],
               alpha=0.75, label=f"{name} (n={len(values)})")
    ax.axvline(threshold, linestyle="--", color="0.2", linewidth=1, label=f"threshold {threshold:g}")
    ax.set(xlim=(0, 1), xlabel="fake probability", ylabel="fraction of the class", title=title)
    ax.grid(True, axis="y", color="0.9")
    ax.legend(loc="upper right")
    return _save(fig, path)

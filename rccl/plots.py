"""ROC curves and score histograms as PNG, drawn with Pillow alone (no matplotlib needed at run time).

Both plots share one frame: a square-ish axis box over [0, 1] on x, grid lines every 0.2, a title and a
legend. Files are written atomically (temporary file, then os.replace).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 640, 540
LEFT, RIGHT, TOP, BOTTOM = 72, 24, 48, 64  # margins around the axis box
COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]
GRID = (225, 225, 225)
INK = (30, 30, 30)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # a Pillow without FreeType: the bitmap font still reads
        return ImageFont.load_default()


class _Axes:
    """Maps data coordinates (x in [0, 1], y in [0, y_max]) to pixels and draws the frame."""

    def __init__(self, title: str, xlabel: str, ylabel: str, y_max: float = 1.0):
        self.image = Image.new("RGB", (WIDTH, HEIGHT), "white")
        self.draw = ImageDraw.Draw(self.image)
        self.y_max = y_max
        self.x0, self.y0 = LEFT, HEIGHT - BOTTOM
        self.x1, self.y1 = WIDTH - RIGHT, TOP
        font, small = _font(16), _font(13)
        self.small = small
        for k in range(6):
            fx = k / 5
            px, py = self.px(fx, fx * y_max)
            self.draw.line([(px, self.y0), (px, self.y1)], fill=GRID)
            self.draw.line([(self.x0, py), (self.x1, py)], fill=GRID)
            self.draw.text((px, self.y0 + 6), f"{fx:.1f}", fill=INK, font=small, anchor="mt")
            y_tick = f"{fx * y_max:.2f}" if y_max < 1 else f"{fx * y_max:.1f}"
            self.draw.text((self.x0 - 6, py), y_tick, fill=INK, font=small, anchor="rm")
        self.draw.rectangle([self.x0, self.y1, self.x1, self.y0], outline=INK)
        self.draw.text(((self.x0 + self.x1) / 2, TOP / 2), title, fill=INK, font=font, anchor="mm")
        self.draw.text(((self.x0 + self.x1) / 2, HEIGHT - 18), xlabel, fill=INK, font=small, anchor="mm")
        label = Image.new("RGBA", (int(self.y0 - self.y1), 20), (255, 255, 255, 0))
        ImageDraw.Draw(label).text((label.width / 2, 10), ylabel, fill=INK, font=small, anchor="mm")
        rotated = label.rotate(90, expand=True)
        self.image.paste(rotated, (8, int(self.y1)), rotated)

    def px(self, x: float, y: float) -> tuple[float, float]:
        return (self.x0 + x * (self.x1 - self.x0), self.y0 - (y / self.y_max) * (self.y0 - self.y1))

    def dashed(self, a: tuple[float, float], b: tuple[float, float], fill, dash: float = 7.0) -> None:
        (ax, ay), (bx, by) = self.px(*a), self.px(*b)
        length = float(np.hypot(bx - ax, by - ay))
        for start in np.arange(0.0, length, 2 * dash):
            t0, t1 = start / length, min(start + dash, length) / length
            self.draw.line([(ax + t0 * (bx - ax), ay + t0 * (by - ay)), (ax + t1 * (bx - ax), ay + t1 * (by - ay))],
                           fill=fill, width=1)

    def legend(self, entries: Sequence[tuple[str, tuple]], corner: str) -> None:
        line_h = 20
        w = 16 + max(self.draw.textlength(text, font=self.small) for text, _ in entries) + 28
        h = line_h * len(entries) + 8
        x = self.x1 - w - 10 if corner.endswith("right") else self.x0 + 10
        y = self.y0 - h - 10 if corner.startswith("lower") else self.y1 + 10
        self.draw.rectangle([x, y, x + w, y + h], fill="white", outline=GRID)
        for i, (text, color) in enumerate(entries):
            cy = y + 4 + line_h * i + line_h / 2
            self.draw.line([(x + 8, cy), (x + 30, cy)], fill=color, width=3)
            self.draw.text((x + 36, cy), text, fill=INK, font=self.small, anchor="lm")


def _tint(color: tuple, amount: float = 0.55) -> tuple:
    return tuple(int(c + (255 - c) * amount) for c in color)


def _save_atomic(image: Image.Image, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        image.save(tmp, format="PNG")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as a plain open() would leave it: mkstemp's files are owner-only
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def draw_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str, path: str | os.PathLike) -> Path:
    """One ROC curve per entry of `curves` (legend text -> (fpr, tpr)), the chance diagonal dashed."""
    axes = _Axes(title, "false positive rate (naturals called fake)", "true positive rate (fakes caught)")
    axes.dashed((0, 0), (1, 1), fill=(150, 150, 150))
    entries = []
    for i, (name, (fpr, tpr)) in enumerate(curves.items()):
        color = COLORS[i % len(COLORS)]
        points = [axes.px(float(x), float(y)) for x, y in zip(fpr, tpr)]
        axes.draw.line(points, fill=color, width=3, joint="curve")
        entries.append((name, color))
    if entries:
        axes.legend(entries, "lower right")
    return _save_atomic(axes.image, path)


def draw_score_histogram(scores: Mapping[str, np.ndarray], title: str, path: str | os.PathLike, *,
                         threshold: float = 0.5, bins: int = 20) -> Path:
    """Histograms of scores in [0, 1], one per entry (legend text -> scores), each normalised to the
    fraction of its own entries so that classes of different sizes compare; the threshold dashed."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    fractions = {name: np.histogram(np.clip(np.asarray(s, dtype=float), 0, 1), edges)[0] / max(len(s), 1)
                 for name, s in scores.items()}
    peak = max((float(f.max()) for f in fractions.values()), default=0.0)
    y_max = next((m for m in (0.05, 0.1, 0.2, 0.25, 0.5, 1.0) if peak <= m), 1.0)
    axes = _Axes(title, "fake probability", "fraction of the class", y_max=y_max)
    entries = []
    width = (edges[1] - edges[0]) / max(len(fractions), 1)  # classes side by side within a bin: none hides another
    for i, (name, frac) in enumerate(fractions.items()):
        color = COLORS[(i + 2) % len(COLORS)]  # green for the first (naturals), red for the second (fakes)
        for lo, f in zip(edges[:-1], frac):
            if f > 0:
                (ax, ay), (bx, by) = axes.px(lo + i * width, f), axes.px(lo + (i + 1) * width, 0)
                axes.draw.rectangle([ax, ay, bx, by], fill=_tint(color), outline=color)
        entries.append((f"{name} (n={len(scores[name])})", color))
    axes.dashed((threshold, 0), (threshold, y_max), fill=INK)
    if entries:
        axes.legend(entries, "upper right")
    return _save_atomic(axes.image, path)

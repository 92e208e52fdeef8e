"""Detection metrics: ROC curve, AUC, EER and AP from scikit-learn, ACC/TPR/TNR/FPR at a threshold.

The fake class (label 1) is the positive class and a score is the fake probability. Ties between scores
are handled as scikit-learn does: all crops with the same score cross a threshold together, so a tie
between a natural and a fake counts one half in the AUC. This module adds what scikit-learn leaves to the
caller: input checks with messages that name the problem, the EER read off the ROC curve, and None for a
metric the labels cannot define.

A metric that a set of labels cannot define (AUC with one class only, TPR without fakes) is None, not
NaN: None survives JSON, and a reader sees at once that the value is missing rather than a number.
"""
from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np
from sklearn import metrics as skm

from rccl.errors import RcclError

METRIC_KEYS = ("auc", "acc", "tpr", "tnr", "fpr", "eer", "ap")


class MetricsError(RcclError, ValueError):
    """Labels or scores that cannot be scored at all (empty, mismatched lengths, NaN, labels not 0/1)."""


class UndefinedMetricError(MetricsError):
    """A metric that the given labels do not define, e.g. a ROC curve with only one class present."""


def _check(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise MetricsError(f"labels and scores must be 1-D, got shapes {y.shape} and {s.shape}")
    if len(y) != len(s):
        raise MetricsError(f"labels and scores differ in length: {len(y)} labels, {len(s)} scores")
    if len(y) == 0:
        raise MetricsError("no labels and scores to score (empty input)")
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        raise MetricsError(f"labels must be 0 (natural) or 1 (fake); found {np.unique(y[bad]).tolist()}")
    if not np.isfinite(s).all():
        raise MetricsError(f"scores must be finite; {int((~np.isfinite(s)).sum())} of {len(s)} are NaN or infinite")
    return y.astype(np.int64), s


def _both_classes(y: np.ndarray, what: str) -> None:
    n_fake = int(y.sum())
    if n_fake == 0 or n_fake == len(y):
        present = "fakes" if n_fake == len(y) else "naturals"
        raise UndefinedMetricError(f"{what} undefined: only {present} present ({len(y)} samples)")


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds): a point per distinct score, starting at (0, 0) with threshold +inf.
    A crop is called fake at threshold t when its score is >= t."""
    y, s = _check(labels, scores)
    _both_classes(y, "ROC curve")
    fpr, tpr, thresholds = skm.roc_curve(y, s, drop_intermediate=False)
    thresholds = thresholds.astype(np.float64)
    thresholds[0] = np.inf  # scikit-learn >= 1.3 already says inf; older versions say max + 1
    return fpr, tpr, thresholds


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve (a tie between a natural and a fake counts one half)."""
    y, s = _check(labels, scores)
    _both_classes(y, "ROC AUC")
    return float(skm.roc_auc_score(y, s))


def equal_error_rate(labels, scores) -> float:
    """The rate at which false positives equal false negatives, read off the ROC curve by linear
    interpolation between the two points where FNR - FPR changes sign."""
    fpr, tpr, _ = roc_curve(labels, scores)
    gap = (1.0 - tpr) - fpr  # starts at 1, ends at -1, never increases
    i = int(np.argmax(gap <= 0))
    if gap[i] == 0:
        return float(fpr[i])
    t = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def average_precision(labels, scores) -> float:
    """Average precision without interpolation (scikit-learn's average_precision_score)."""
    y, s = _check(labels, scores)
    if int(y.sum()) == 0:
        raise UndefinedMetricError(f"average precision undefined: no fakes present ({len(y)} naturals)")
    return float(skm.average_precision_score(y, s))


def threshold_metrics(labels, scores, threshold: float = 0.5) -> dict:
    """ACC, TPR, TNR and FPR when a crop is called fake for score > threshold (for a probability from a
    softmax this is the classifier's argmax). TPR is None without fakes, TNR and FPR without naturals."""
    y, s = _check(labels, scores)
    called_fake = s > threshold
    n_fake = int(y.sum())
    n_real = len(y) - n_fake
    tp = int(np.sum(called_fake & (y == 1)))
    tn = int(np.sum(~called_fake & (y == 0)))
    return {
        "acc": (tp + tn) / len(y),
        "tpr": tp / n_fake if n_fake else None,
        "tnr": tn / n_real if n_real else None,
        "fpr": (n_real - tn) / n_real if n_real else None,
    }


def detection_metrics(labels, scores, threshold: float = 0.5) -> dict:
    """All of METRIC_KEYS plus the counts n, n_real, n_fake. A metric the labels do not define is None
    (with one class only: AUC and EER always, AP when there are no fakes, TPR or TNR/FPR)."""
    y, s = _check(labels, scores)
    out = {"auc": None, **threshold_metrics(y, s, threshold), "eer": None, "ap": None}
    if 0 < y.sum() < len(y):
        out["auc"] = roc_auc(y, s)
        out["eer"] = equal_error_rate(y, s)
    if y.sum() > 0:
        out["ap"] = average_precision(y, s)
    out.update(n=len(y), n_real=int(len(y) - y.sum()), n_fake=int(y.sum()))
    return {k: out[k] for k in (*METRIC_KEYS, "n", "n_real", "n_fake")}


def video_scores(videos: Sequence[Hashable], labels, scores) -> tuple[list, np.ndarray, np.ndarray]:
    """(video ids, their labels, the mean of their frames' scores), videos in order of first appearance.
    A video whose frames disagree on the label is an error that names it."""
    y, s = _check(labels, scores)
    if len(videos) != len(y):
        raise MetricsError(f"videos and labels differ in length: {len(videos)} videos, {len(y)} labels")
    index: dict = {}
    slot = np.fromiter((index.setdefault(v, len(index)) for v in videos), dtype=np.int64, count=len(videos))
    n = len(index)
    counts = np.bincount(slot, minlength=n)
    mean = np.bincount(slot, weights=s, minlength=n) / counts
    fake_frames = np.bincount(slot, weights=y, minlength=n)
    mixed = np.flatnonzero((fake_frames > 0) & (fake_frames < counts))
    if len(mixed):
        ids = list(index)
        raise MetricsError(f"video {ids[mixed[0]]!r} has frames labelled both natural and fake "
                           f"({len(mixed)} such video(s)); a video has one label")
    return list(index), (fake_frames > 0).astype(np.int64), mean


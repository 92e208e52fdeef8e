import numpy as np
import pytest

from rccl.metrics import (
    METRIC_KEYS,
    MetricsError,
    UndefinedMetricError,
    average_precision,
    detection_metrics,
    equal_error_rate,
    roc_auc,
    roc_curve,
    threshold_metrics,
    video_scores,
)

# a small case worked by hand (also scikit-learn's documented example): AUC 0.75, AP 0.8333...
LABELS = [0, 0, 1, 1]
SCORES = [0.1, 0.4, 0.35, 0.8]


def test_hand_computed_example():
    fpr, tpr, thr = roc_curve(LABELS, SCORES)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    assert thr[0] == np.inf and list(thr[1:]) == [0.8, 0.4, 0.35, 0.1]
    assert roc_auc(LABELS, SCORES) == pytest.approx(0.75)
    assert average_precision(LABELS, SCORES) == pytest.approx((1 + 2 / 3) / 2)
    # the curve passes through (fpr 0.5, fnr 0.5) exactly
    assert equal_error_rate(LABELS, SCORES) == pytest.approx(0.5)


def test_ties_count_one_half():
    # pairs (fake, natural): 0.5 vs 0.5 tie -> 1/2, 0.5 vs 0.2 -> 1, 0.9 vs both -> 2; 3.5 of 4
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(0.875)
    # all scores equal: chance, and the ROC is the diagonal in one step
    assert roc_auc([0, 1, 0, 1], [0.3] * 4) == pytest.approx(0.5)
    fpr, tpr, _ = roc_curve([0, 1, 0, 1], [0.3] * 4)
    assert list(fpr) == [0, 1] and list(tpr) == [0, 1]
    # AP with ties: one threshold, recall 1 at precision 1/2
    assert average_precision([0, 1, 0, 1], [0.3] * 4) == pytest.approx(0.5)


def test_eer_interpolates_between_roc_points():
    # ROC points (0,0), (0,1/3), (1/2,1/3), (1/2,1), (1,1); FNR-FPR: 1, 2/3, 1/6, -1/2 -> crossing on the
    # segment (1/2, 1/3)->(1/2, 1) at FPR 1/2, FNR 1/2
    labels = [1, 0, 1, 1, 0]
    scores = [0.9, 0.8, 0.7, 0.7, 0.1]
    assert equal_error_rate(labels, scores) == pytest.approx(0.5)
    # perfect separation: EER 0; perfectly wrong: EER 1
    assert equal_error_rate([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert equal_error_rate([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 1.0
    # fake, natural, fake, natural, fake from the top: points (0,0) (0,1/3) (1/2,1/3) (1/2,2/3) (1,2/3)
    # (1,1); FNR-FPR goes 1/6 -> -1/6 on the vertical step at FPR 1/2
    assert equal_error_rate([1, 0, 1, 0, 1], [5, 4, 3, 2, 1]) == pytest.approx(0.5)
    # a true interpolation along a diagonal (a tie of one fake and one natural)
    eer = equal_error_rate([1, 1, 0, 1, 0, 0], [0.9, 0.8, 0.5, 0.5, 0.2, 0.1])
    # points (0,0) (0,1/3) (0,2/3) (1/3,1): FNR-FPR is 1/3 then -1/3, so the crossing is mid-segment, 1/6
    assert eer == pytest.approx(1 / 6)


def test_threshold_metrics_at_one_half():
    labels = [0, 0, 0, 1, 1]
    scores = [0.2, 0.5, 0.7, 0.6, 0.4]  # 0.5 is not fake (score > threshold is fake)
    m = threshold_metrics(labels, scores)
    assert m == pytest.approx({"acc": 3 / 5, "tpr": 1 / 2, "tnr": 2 / 3, "fpr": 1 / 3})
    assert threshold_metrics(labels, scores, threshold=0.45)["tnr"] == pytest.approx(1 / 3)


def _pairwise_auc(labels, scores) -> float:
    """AUC by its definition: over every (fake, natural) pair, 1 when the fake scores higher, 1/2 on a tie."""
    fakes = [s for y, s in zip(labels, scores) if y == 1]
    naturals = [s for y, s in zip(labels, scores) if y == 0]
    wins = sum(1.0 if f > n else 0.5 if f == n else 0.0 for f in fakes for n in naturals)
    return wins / (len(fakes) * len(naturals))


def _swept_curve(labels, scores):
    """ROC points and AP by sweeping every distinct score as the threshold (score >= t is fake), highest
    first: AP = sum over thresholds of (recall gained) x (precision there)."""
    n_fake, n_real = sum(labels), len(labels) - sum(labels)
    fpr, tpr, ap, last_recall = [0.0], [0.0], 0.0, 0.0
    for t in sorted(set(scores), reverse=True):
        tp = sum(1 for y, s in zip(labels, scores) if s >= t and y == 1)
        fp = sum(1 for y, s in zip(labels, scores) if s >= t and y == 0)
        fpr.append(fp / n_real)
        tpr.append(tp / n_fake)
        ap += (tp / n_fake - last_recall) * (tp / (tp + fp))
        last_recall = tp / n_fake
    return fpr, tpr, ap


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n", [2, 7, 60])
def test_random_cases_match_the_definitions(seed, n):
    """Against the metrics' definitions written out by brute force here (not against a library)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    # rounded scores make many ties
    scores = np.round(rng.random(n) * 0.6 + 0.4 * labels, 1 if seed % 2 else 6)
    y, s = labels.tolist(), scores.tolist()
    assert roc_auc(labels, scores) == pytest.approx(_pairwise_auc(y, s), abs=1e-12)
    fpr_ref, tpr_ref, ap_ref = _swept_curve(y, s)
    assert average_precision(labels, scores) == pytest.approx(ap_ref, abs=1e-12)
    fpr, tpr, thr = roc_curve(labels, scores)
    np.testing.assert_allclose(fpr, fpr_ref)
    np.testing.assert_allclose(tpr, tpr_ref)
    fake = [v > 0.5 for v in s]
    m = threshold_metrics(labels, scores)
    assert m["acc"] == pytest.approx(sum(f == (t == 1) for f, t in zip(fake, y)) / n)
    assert m["tpr"] == pytest.approx(sum(f for f, t in zip(fake, y) if t == 1) / sum(y))
    assert m["tnr"] == pytest.approx(sum(not f for f, t in zip(fake, y) if t == 0) / (n - sum(y)))
    # EER: FNR equals FPR at the reported value, somewhere on the (piecewise-linear) curve
    eer = equal_error_rate(labels, scores)
    fnr = 1 - tpr
    assert any(
        min(fpr[i], fpr[i + 1]) - 1e-12 <= eer <= max(fpr[i], fpr[i + 1]) + 1e-12
        and min(fnr[i], fnr[i + 1]) - 1e-12 <= eer <= max(fnr[i], fnr[i + 1]) + 1e-12
        for i in range(len(fpr) - 1)
    )


def test_one_class_leaves_curve_metrics_undefined():
    with pytest.raises(UndefinedMetricError, match="only naturals"):
        roc_auc([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(UndefinedMetricError, match="only fakes"):
        equal_error_rate([1, 1], [0.1, 0.2])
    m = detection_metrics([0, 0, 0], [0.1, 0.7, 0.3])
    assert m["auc"] is None and m["eer"] is None and m["ap"] is None and m["tpr"] is None
    assert m["acc"] == pytest.approx(2 / 3) and m["tnr"] == pytest.approx(2 / 3) and m["fpr"] == pytest.approx(1 / 3)
    m = detection_metrics([1, 1], [0.9, 0.2])
    assert m["ap"] == pytest.approx(1.0) and m["auc"] is None and m["tnr"] is None and m["tpr"] == 0.5


def test_detection_metrics_keys_and_counts():
    m = detection_metrics(LABELS, SCORES)
    assert tuple(m)[:7] == METRIC_KEYS
    assert (m["n"], m["n_real"], m["n_fake"]) == (4, 2, 2)
    assert m["auc"] == pytest.approx(0.75)


@pytest.mark.parametrize(
    "labels, scores, message",
    [
        ([], [], "empty"),
        ([0, 1], [0.5], "differ in length"),
        ([0, 2], [0.5, 0.5], r"0 \(natural\) or 1 \(fake\); found \[2\]"),
        ([0, 1], [0.5, float("nan")], "finite"),
        ([[0, 1]], [[0.5, 0.5]], "1-D"),
    ],
)
def test_bad_input_is_named(labels, scores, message):
    with pytest.raises(MetricsError, match=message):
        detection_metrics(labels, scores)


def test_video_scores_average_frames():
    videos = ["a", "b", "a", "c", "b", "a"]
    labels = [0, 1, 0, 1, 1, 0]
    scores = [0.1, 0.8, 0.4, 0.3, 0.6, 0.1]
    ids, vl, vs = video_scores(videos, labels, scores)
    assert ids == ["a", "b", "c"]
    assert list(vl) == [0, 1, 1]
    np.testing.assert_allclose(vs, [0.2, 0.7, 0.3])


def test_video_with_mixed_labels_is_named():
    with pytest.raises(MetricsError, match="video 'b'"):
        video_scores(["a", "b", "b"], [0, 1, 0], [0.1, 0.2, 0.3])

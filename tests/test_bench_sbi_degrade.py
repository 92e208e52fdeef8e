"""bench/sbi_degrade.py without training: the degradations, the test crops it pairs across qualities, and a
probe of a run whose detector scores a crop's brightness (tiny_data's BrightnessDetector)."""
import json

import numpy as np
import pytest

from bench.paper_tables import BenchError
from bench.sbi_degrade import DEGRADATIONS, main, paired_test_crops, pseudo_fake_detail
from tiny_data import install_brightness_detector, make_tiny_manifest, make_tiny_run


def _detail(img: np.ndarray) -> float:
    """Mean absolute difference of horizontal neighbours: the crop's fine detail."""
    return float(np.abs(np.diff(img.astype(np.float32), axis=1)).mean())


def test_degradations_keep_the_crop_and_change_its_detail():
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    base = _detail(crop)
    for name, degrade in DEGRADATIONS.items():
        out = degrade(crop)
        assert out.shape == crop.shape and out.dtype == np.uint8, name
    assert np.array_equal(DEGRADATIONS["none"](crop), crop)
    for name in ("gaussian blur, sigma 1 px", "resolution / 2 (bilinear down and up)", "resolution / 4",
                 "JPEG quality 30"):
        assert _detail(DEGRADATIONS[name](crop)) < 0.8 * base, name
    smooth = np.asarray(DEGRADATIONS["gaussian blur, sigma 1 px"](crop))
    assert _detail(DEGRADATIONS["sharpened (x + 0.5 (x - blur))"](smooth)) > 1.1 * _detail(smooth)


# (quality, split, video, label, grey levels): c40 makes the naturals bright, i.e. "fake" to the detector
VIDEOS = [(q, "test", v, label, levels[q]) for v, label, levels in [
    ("real/a.mp4", 0, {"raw": [40, 60], "c23": [45, 65], "c40": [200, 210]}),
    ("fake/b.mp4", 1, {"raw": [200, 220], "c23": [205, 215], "c40": [210, 220]}),
] for q in ("raw", "c23", "c40")] + [("raw", "train", "real/t.mp4", 0, [10, 20])]


def test_probe_scores_every_degradation_and_the_sets_qualities(tmp_path, monkeypatch):
    install_brightness_detector(monkeypatch)
    run = make_tiny_run(tmp_path, VIDEOS)
    out = tmp_path / "res" / "degrade.json"
    assert main([str(run), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert (res["n_natural"], res["n_fake"]) == (2, 2)  # the raw test split only
    cells = res["runs"][str(run)]
    assert list(cells) == [*DEGRADATIONS, "the set's c23", "the set's c40"]
    for name in DEGRADATIONS:  # uniform grey crops: no degradation changes their brightness
        assert cells[name]["tnr"] == 1.0 and cells[name]["tpr"] == 1.0 and cells[name]["auc"] == 1.0, name
        assert cells[name]["natural_mean"] == pytest.approx(50 / 255, abs=2e-3), name
    assert cells["the set's c40"]["tnr"] == 0.0 and cells["the set's c40"]["natural_mean"] == pytest.approx(205 / 255, abs=1e-3)
    md = out.with_suffix(".md").read_text()
    assert "| the set's c40 | 0 / 80 / " in md and "true rccl (run)" in md
    assert res["pseudo_fake_detail"] == {} and "not measured (the manifest has no raw training naturals" in md


def test_pseudo_fakes_lose_detail_with_the_downscale_share(tmp_path):
    manifest = make_tiny_manifest(tmp_path, size=48, landmarks=True, identities=4, frames=8)
    d = pseudo_fake_detail(manifest)
    low, high = d["downscale_p 0"], d["downscale_p 1"]
    assert high["n"] > 0 and high["below"] == 1.0  # every source downscaled: less detail in every one
    assert low["median"] > high["median"]
    still = d["downscale_p 0, no zoom or shift"]  # sharpened and not resampled: more detail in every one
    assert still["below"] == 0.0 and still["median"] > low["median"]


def test_crops_need_every_quality_and_runs_one_manifest(tmp_path, monkeypatch):
    install_brightness_detector(monkeypatch)
    run = make_tiny_run(tmp_path / "a", [v for v in VIDEOS if not (v[0] == "c40" and v[3] == 1)])
    with pytest.raises(BenchError, match="2 raw test crops have no c40 copy"):
        paired_test_crops(tmp_path / "a" / "data" / "manifest.jsonl")
    other = make_tiny_run(tmp_path / "b", VIDEOS)
    assert main([str(run), str(other), "--out", str(tmp_path / "x.json")]) == 2
    assert main([str(tmp_path / "nothing"), "--out", str(tmp_path / "x.json")]) == 2


def test_probe_on_another_manifest_with_naturals_only(tmp_path, monkeypatch):
    """--manifest scores another set's test split (e.g. real photos for a detector trained elsewhere); with
    naturals alone the cells count the naturals called fake and have no AUC; a split without any natural is
    refused with the manifest's name."""
    install_brightness_detector(monkeypatch)
    run = make_tiny_run(tmp_path / "a", VIDEOS)
    make_tiny_run(tmp_path / "b", [v for v in VIDEOS if v[3] == 0])
    other = tmp_path / "b" / "data" / "manifest.jsonl"
    out = tmp_path / "n.json"
    assert main([str(run), "--manifest", str(other), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["manifest"] == str(other) and str(other) not in res["trained_on"] and (res["n_natural"], res["n_fake"]) == (2, 0)
    cell = res["runs"][str(run)]["the set's c40"]
    assert cell["tnr"] == 0.0 and cell["auc"] is None and cell["tpr"] is None
    assert "| the set's c40 | 0 / 80 / - |" in out.with_suffix(".md").read_text()
    make_tiny_run(tmp_path / "c", [v for v in VIDEOS if v[3] == 1 or v[1] == "train"])
    assert main([str(run), "--manifest", str(tmp_path / "c" / "data" / "manifest.jsonl"), "--out", str(out)]) == 2
    assert main([str(run), "--manifest", str(tmp_path / "none.jsonl"), "--out", str(out)]) == 2

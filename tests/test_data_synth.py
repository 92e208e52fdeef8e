"""The synthetic sets: Celeb-DF-v2 layout, deterministic by seed, real photo faces with --faces, and
learnable but not trivial (a linear model on raw pixels must not solve the demo; a local texture feature
does); the 'compression' preset's fragile fakes (colour-transferred, traces compression erases)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("av", reason="needs PyAV (pip install av): the synthetic sets are videos written with PyAV")

from rccl.data.layouts import read_layout  # noqa: E402
from rccl.data.manifest import read_manifest  # noqa: E402
from rccl.data.prep import prepare  # noqa: E402
from rccl.cli.synth import main as synth_main  # noqa: E402
from rccl.data.synth import PRESETS, SynthConfig, SynthError, make_demo, make_synthetic, preset  # noqa: E402
from rccl.data.synth.forge import LOOKALIKE_KEYS, source_face  # noqa: E402
from rccl.data.synth.plan import video_plan  # noqa: E402
from rccl.data.synth.probe import cnn_probe, colour_stats, lowpass, probe_aucs  # noqa: E402
from rccl.data.synth.render import Face  # noqa: E402

FACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"
TINY = dict(n_identities=3, videos_per_identity=2, n_youtube=1, n_frames=6, size=64, workers=1, progress=False)


def _digest(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_determinism(tmp_path):
    a = make_synthetic(tmp_path / "a", seed=3, **TINY)
    b = make_synthetic(tmp_path / "b", seed=3, **TINY)
    c = make_synthetic(tmp_path / "c", seed=4, **TINY)
    da, db, dc = _digest(a), _digest(b), _digest(c)
    assert da == db  # same seed: the same bytes, videos and boxes alike
    videos = [k for k in da if k.endswith(".mp4")]
    assert len(videos) == 3 * 2 * 2 + 1
    assert all(da[k] != dc[k] for k in videos)  # another seed: other videos
    layout = read_layout("synthetic", a)
    assert layout.problems == []
    recs = {r.video: r for r in layout.records}
    fake = recs["Celeb-synthesis/id0_id1_0000.mp4"]
    assert (fake.label, fake.source, fake.target, fake.split) == (1, "id0_0000", "id1", "train")
    assert recs["Celeb-real/id2_0001.mp4"].split == "test" and recs["YouTube-real/00000.mp4"].split == "test"
    assert (a / "boxes" / "Celeb-real" / "id0_0000.json").is_file()


def test_cached_and_refuses_other_parameters(tmp_path):
    out = make_synthetic(tmp_path / "s", **TINY)
    before = _digest(out)
    assert make_synthetic(tmp_path / "s", **TINY) == out and _digest(out) == before
    with pytest.raises(ValueError, match="other parameters.*seed"):
        make_synthetic(tmp_path / "s", seed=9, **TINY)
    with pytest.raises(ValueError, match="n_identities"):
        make_synthetic(tmp_path / "t", **{**TINY, "n_identities": 1})


def fake_difference_around_the_face(tree):
    """Mean absolute difference between frame 3 of id0's natural video and of its id1 fake, (inside the face
    box grown by 4 px, outside it)."""
    from rccl.data.video import read_frames
    import json

    real = read_frames(tree / "Celeb-real/id0_0000.mp4", [3])[3].astype(float)
    fake = read_frames(tree / "Celeb-synthesis/id0_id1_0000.mp4", [3])[3].astype(float)
    x0, y0, x1, y1 = json.loads((tree / "boxes/Celeb-real/id0_0000.json").read_text())["exact"][3]
    diff = np.abs(real - fake).mean(2)
    inside = np.zeros_like(diff, bool)
    inside[max(0, y0 - 4):y1 + 4, max(0, x0 - 4):x1 + 4] = True
    return diff[inside].mean(), diff[~inside].mean()


def test_fakes_differ_from_their_source_only_around_the_face(tmp_path):
    inside, outside = fake_difference_around_the_face(make_synthetic(tmp_path / "s", **TINY))
    assert inside > 8 and outside < 1.5


@pytest.mark.skipif(not (FACES / "identities").is_dir(), reason=f"real face photos not found at {FACES}/identities")
def test_photo_faces_are_found_by_dlib(tmp_path):
    out = make_synthetic(tmp_path / "s", faces_dir=FACES / "identities", **{**TINY, "size": 128, "n_frames": 4})
    rows = read_manifest(prepare("synthetic", out, tmp_path / "p", qualities=("raw",), pairs_per_video=1,
                                 crop_size=64, detect_size=320, workers=1, progress=False, log=None))
    assert len(rows) == 2 * 13
    assert sum(r["box_source"] == "dlib" for r in rows) >= len(rows) // 2
    assert (out / "identities.json").is_file()


@pytest.mark.slow
def test_demo_is_not_linearly_separable_but_has_local_artefacts(tmp_path):
    """On the demo set exactly as training gets it (raw crops): ridge regression on flattened pixels, with
    its best regularisation picked on the test set itself (generous to the probe), stays near chance;
    a hand-made local feature (pooled high-frequency energy) separates the classes."""
    rows = [r for r in read_manifest(make_demo(tmp_path, workers=2, progress=False, log=None)) if r["quality"] == "raw"]
    x = np.stack([np.asarray(Image.open(r["abspath"]), np.float32) / 255 for r in rows])
    y = np.array([r["label"] for r in rows])
    train = np.array([r["split"] == "train" for r in rows])
    assert 0.3 < y.mean() < 0.7 and train.mean() > 0.6 and (~train).sum() > 100

    aucs = probe_aucs(x, y, train)
    assert aucs["best_pixel_ridge_auc"] < 0.75, f"a linear probe on raw pixels separates the demo: {aucs}"
    assert aucs["local_hf_feature_auc"] > 0.8, f"the fakes' artefacts are too weak for a local texture feature: {aucs}"


# ------------------------------------------------------------------------------------------ compression preset
def test_compression_preset_plan_has_a_large_test_split():
    """The preset's plan (what the benchmark tests on): >= 100 test videos, half of the labelled ones fake,
    every test fake made from a test natural video (no source shared across the splits)."""
    cfg = SynthConfig(**preset("compression")["synth"])
    plan = video_plan(cfg)
    test = [it for it in plan if it["split"] == "test"]
    assert len(test) >= 100
    fakes = [it for it in test if it["kind"] == "fake"]
    reals = {(it["identity"], it["number"]) for it in test if it["kind"] == "real"}
    assert len(fakes) == len(reals) and {(it["identity"], it["number"]) for it in fakes} == reals
    assert cfg.traces == "lookalike" and PRESETS["demo"]["synth"].get("traces", "robust") == "robust"


def _face_means(out: Path, video: str, box_video: str, frame: int) -> np.ndarray:
    from rccl.data.video import read_frames
    import json

    img = read_frames(out / video, [frame])[frame].astype(float)
    x0, y0, x1, y1 = json.loads((out / "boxes" / box_video).read_text())["exact"][frame]
    cx, cy, h = (x0 + x1) // 2, (y0 + y1) // 2, (x1 - x0) // 4
    return img[cy - h:cy + h, cx - h:cx + h].reshape(-1, 3).mean(0)


def test_fragile_fakes_tiny(tmp_path):
    """A tiny fragile set: the layout, labels and splits of the plan; the same bytes for the same seed and
    other videos for another; fakes differ from their source only around the face, with the face's mean
    colour transferred (within a few levels of the source's), unlike the robust fakes' colour step."""
    tiny = {**TINY, "traces": "fragile"}
    a = make_synthetic(tmp_path / "a", seed=5, **tiny)
    b = make_synthetic(tmp_path / "b", seed=5, **tiny)
    c = make_synthetic(tmp_path / "c", seed=6, **tiny)
    r = make_synthetic(tmp_path / "r", seed=5, **TINY)
    da, db, dc, dr = _digest(a), _digest(b), _digest(c), _digest(r)
    assert da == db
    videos = [k for k in da if k.endswith(".mp4")]
    assert len(videos) == 3 * 2 * 2 + 1 and all(da[k] != dc[k] for k in videos)
    fakes = [k for k in videos if k.startswith("Celeb-synthesis/")]
    assert all(da[k] != dr[k] for k in fakes)  # other traces than the robust fakes'
    assert all(da[k] == dr[k] for k in videos if k not in fakes)  # the natural videos are the same
    layout = read_layout("synthetic", a)
    assert layout.problems == []
    labels = {(rec.label, rec.split) for rec in layout.records}
    assert labels == {(0, "train"), (0, "test"), (1, "train"), (1, "test")}
    assert sum(rec.label for rec in layout.records) == 6

    inside, outside = fake_difference_around_the_face(a)
    assert inside > 3 and outside < 1.5
    steps = []
    for root in (a, r):
        for video in fakes:
            src = video.replace("Celeb-synthesis/", "Celeb-real/").split("_")
            src_video = f"{src[0]}_{src[2]}"
            box = Path(src_video).with_suffix(".json").as_posix()
            steps.append(np.abs(_face_means(root, video, box, 3) - _face_means(root, src_video, box, 3)).max())
    fragile_steps, robust_steps = steps[:len(fakes)], steps[len(fakes):]
    assert max(fragile_steps) < np.median(robust_steps), (fragile_steps, robust_steps)


def test_lookalike_source_face_has_the_targets_colouring_and_its_own_shape():
    """A look-alike swap renders Y's face shape and skin detail in X's colours (skin, hair for brows and
    beard, iris, lips, beard or none); the other kinds render Y as it is."""
    cfg = SynthConfig(**{**preset("compression")["synth"], "traces": "lookalike"})
    face_x, face_y = Face(cfg, "id0", None, "a"), Face(cfg, "id5", None, "b")
    look = source_face(cfg, face_x, face_y)
    for key in LOOKALIKE_KEYS:
        assert np.array_equal(look.params[key], face_x.params[key]), key
    for key in ("eye_x", "eye_y", "mouth_w", "nose_y", "brow_dy", "texture"):
        assert np.array_equal(look.params[key], face_y.params[key]), key
    assert not np.array_equal(face_x.params["hair"], face_y.params["hair"])
    assert face_y.params["hair"] is not face_x.params["hair"]  # Y itself is left as it was
    fragile = SynthConfig(**{**preset("compression")["synth"], "traces": "fragile"})
    assert source_face(fragile, face_x, face_y) is face_y


def test_lookalike_fakes_tiny(tmp_path):
    """A tiny look-alike set: the same natural videos as the fragile set of that seed, other fakes, which
    differ from their source only around the face and keep its colour within a few levels (the robust
    fakes' colour step is larger)."""

    a = make_synthetic(tmp_path / "a", seed=5, **{**TINY, "traces": "lookalike"})
    f = make_synthetic(tmp_path / "f", seed=5, **{**TINY, "traces": "fragile"})
    da, df = _digest(a), _digest(f)
    videos = [k for k in da if k.endswith(".mp4")]
    fakes = [k for k in videos if k.startswith("Celeb-synthesis/")]
    assert len(fakes) == 6 and all(da[k] != df[k] for k in fakes)
    assert all(da[k] == df[k] for k in videos if k not in fakes)
    assert read_layout("synthetic", a).problems == []
    inside, outside = fake_difference_around_the_face(a)
    assert inside > 2 and outside < 1.5
    r = make_synthetic(tmp_path / "r", seed=5, **TINY)
    steps = {root: [] for root in (a, r)}
    for root in (a, r):  # the centre of the face: Y's features sit elsewhere in it than X's, a few levels
        for video in fakes:
            x, _, k = Path(video).stem.split("_")
            src, box = f"Celeb-real/{x}_{k}.mp4", f"Celeb-real/{x}_{k}.json"
            steps[root].append(np.abs(_face_means(root, video, box, 3) - _face_means(root, src, box, 3)).max())
    assert np.median(steps[a]) < 5 < np.median(steps[r]), steps


# ------------------------------------------------------------------------------------------ the probes
def _toy_crops(kind: str, n: int = 240, side: int = 16, seed: int = 0):
    """Toy crops: smooth random images; the fakes (odd rows) carry one kind of trace."""
    rng = np.random.default_rng(seed)
    x = 0.5 + 0.1 * lowpass(rng.standard_normal((n, side, side, 3)), 4).repeat(side // 4, 1).repeat(side // 4, 2)
    x += rng.normal(0, 0.02, x.shape)  # grain, on every crop
    y = np.arange(n) % 2
    c = slice(side // 4, side - side // 4)
    if kind == "colour":  # a colour step of random sign in the centre: no fixed pixel pattern
        x[y == 1, c, c] += rng.choice([-0.08, 0.08], (int(y.sum()), 1, 1, 3))
    elif kind == "grain":  # the centre's grain gone
        x[y == 1, c, c] = lowpass(x[y == 1], side // 2).repeat(2, 1).repeat(2, 2)[:, c, c]
    train = np.arange(n) < n * 2 // 3
    return x.astype(np.float32), y, train


def test_probe_features_shapes():
    x = np.random.default_rng(0).uniform(0, 1, (5, 16, 16, 3)).astype(np.float32)
    assert lowpass(x, 8).shape == (5, 8, 8, 3)
    assert np.allclose(lowpass(x, 1)[:, 0, 0], x.mean((1, 2)))
    stats = colour_stats(x)
    assert stats.shape == (5, 24)
    assert np.allclose(stats[:, 12:18], stats[:, :6] - stats[:, 6:12])
    assert np.allclose(stats[:, 18:], np.abs(stats[:, 12:18]))


def test_probes_each_see_their_own_cue():
    """A colour step of random sign is invisible to the pixel ridge and seen by the colour statistics; a
    centre without grain is seen by the high-frequency feature, not by the colour statistics' means."""
    aucs = probe_aucs(*_toy_crops("colour"))
    assert aucs["best_pixel_ridge_auc"] < 0.7 and aucs["colour_stats_ridge_auc"] > 0.9, aucs
    aucs = probe_aucs(*_toy_crops("grain"))
    assert aucs["local_hf_feature_auc"] > 0.9 and aucs["best_pixel_ridge_auc"] < 0.7, aucs
    aucs = probe_aucs(*_toy_crops("none"))
    assert max(v for k, v in aucs.items() if k.endswith("_auc") and isinstance(v, float)) < 0.7, aucs


@pytest.mark.slow
def test_cnn_probe_learns_a_cue_and_its_lowpass_variant_misses_grain():
    """The CNN probe (seeded) learns missing grain from 16-px toy crops; low-passed to 4x4 it cannot."""
    x, y, train = _toy_crops("grain")
    tests = {"test": (x[~train], y[~train])}
    assert cnn_probe(x[train], y[train], tests, steps=200, lr=1e-2, threads=1)["test"] > 0.9
    assert cnn_probe(x[train], y[train], tests, steps=200, lr=1e-2, threads=1, lowpass_side=4)["test"] < 0.7


def test_synth_rejects_unknown_traces_and_preset(tmp_path, capsys):
    with pytest.raises(SynthError, match="traces must be one of robust, fragile"):
        make_synthetic(tmp_path / "s", **{**TINY, "traces": "subtle"})
    with pytest.raises(SynthError, match="unknown synthetic preset 'nope'"):
        preset("nope")


def test_cli_preset_and_flag_overrides(tmp_path, capsys):
    """rccl-synth --preset compression takes the preset's values; flags given override them; a bad value is
    a clear error with exit status 2."""
    from rccl.cli.synth import build_parser, synth_kwargs

    kw = synth_kwargs(build_parser().parse_args(["--out", "x", "--preset", "compression", "--frames", "6"]))
    assert kw == {**PRESETS["compression"]["synth"], "n_frames": 6}
    assert synth_kwargs(build_parser().parse_args(["--out", "x"])) == {}
    assert synth_main(["--out", str(tmp_path / "s"), "--identities", "1", "--no-progress"]) == 2
    assert "rccl-synth: error: n_identities must be at least 2" in capsys.readouterr().err
    assert synth_main(["--out", str(tmp_path / "g"), "--device", "cuda", "--no-progress"]) == 2
    assert "rccl-synth computes on the CPU only" in capsys.readouterr().err and not (tmp_path / "g").exists()
    out = tmp_path / "t"
    assert synth_main(["--out", str(out), "--preset", "compression", "--identities", "3",
                       "--videos-per-identity", "2", "--test-videos-per-identity", "1", "--youtube", "1",
                       "--frames", "4", "--size", "64", "--workers", "1", "--no-progress"]) == 0
    import json
    made = json.loads((out / "synth.json").read_text())
    assert made["traces"] == "lookalike" and made["n_frames"] == 4


# ------------------------------------------------------------------------------------------ trace strengths
def test_trace_strengths_scale_only_their_own_trace():
    """generator_down, seam_scale and checker_scale change the fragile/lookalike fakes' per-video draws and
    nothing else: at their defaults the draws are the ones trees were made with before the keys existed."""
    from rccl.data.synth.forge import fake_params

    base = SynthConfig(**preset("compression")["synth"])
    default = fake_params(base, "id0_id1_0000")
    changed = fake_params(SynthConfig(**{**preset("compression")["synth"], "generator_down": (1.1, 1.2),
                                         "seam_scale": 2.0, "checker_scale": 0.5}), "id0_id1_0000")
    assert 1.4 <= default["down"] <= 2.0 and 1.1 <= changed["down"] <= 1.2
    assert changed["seam"] == pytest.approx(2 * default["seam"])
    np.testing.assert_allclose(changed["checker"], 0.5 * default["checker"])
    for key in ("misalign", "feather", "colour", "flicker"):
        np.testing.assert_array_equal(changed[key], default[key])


def test_trace_strengths_are_recorded_only_when_changed(tmp_path):
    """synth.json omits the strengths at their defaults (older trees stay recognised) and holds them when
    changed; a cached tree made with other strengths is refused, naming the key."""
    assert not {"generator_down", "seam_scale", "checker_scale"} & set(SynthConfig().record())
    changed = SynthConfig(generator_down=(1.1, 1.3), seam_scale=2.0).record()
    assert changed["generator_down"] == [1.1, 1.3] and changed["seam_scale"] == 2.0
    assert "checker_scale" not in changed
    kw = {**TINY, "traces": "lookalike", "n_frames": 2, "generator_down": [1.1, 1.3]}
    out = make_synthetic(tmp_path / "s", **kw)
    assert make_synthetic(tmp_path / "s", **kw) == out  # [lo, hi] from JSON/YAML: the same tree
    with pytest.raises(SynthError, match="other parameters.*generator_down"):
        make_synthetic(tmp_path / "s", **{**kw, "generator_down": (1.4, 2.0)})


@pytest.mark.parametrize("bad, message", [
    ({"generator_down": (0.9, 1.2)}, r"generator_down must be \[lo, hi\] with 1 <= lo <= hi.*\[0.9, 1.2\]"),
    ({"generator_down": (1.5, 1.2)}, r"generator_down must be \[lo, hi\] with 1 <= lo <= hi"),
    ({"generator_down": 1.5}, r"generator_down must be two numbers \[lo, hi\], got 1.5"),
    ({"seam_scale": -1}, r"seam_scale must be >= 0, got -1"),
    ({"checker_scale": -0.5}, r"checker_scale must be >= 0, got -0.5"),
])
def test_trace_strengths_bad_values(tmp_path, bad, message):
    with pytest.raises(SynthError, match=message):
        make_synthetic(tmp_path / "s", **{**TINY, **bad})
    assert not (tmp_path / "s").exists()  # refused before anything is written


def test_cli_trace_strength_flags():
    from rccl.cli.synth import build_parser, synth_kwargs

    kw = synth_kwargs(build_parser().parse_args(["--out", "x", "--preset", "compression", "--generator-down",
                                                 "1.1", "1.3", "--seam-scale", "2", "--checker-scale", "0"]))
    assert kw["generator_down"] == [1.1, 1.3] and kw["seam_scale"] == 2.0 and kw["checker_scale"] == 0.0

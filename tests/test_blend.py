"""Self-blending (rccl.data.blend): the pseudo-fake's geometry, the per-crop reasons of unusable landmark sets,
the training records of each data.fakes mode, the sampler's same-frame pairs and the torch loader."""
import numpy as np
import pytest
import torch
from matplotlib.path import Path as PolygonPath
from scipy.ndimage import distance_transform_edt
from scipy.spatial import ConvexHull

from rccl.data.blend import BLEND_KEY, LandmarkDataError, self_blend, training_set, why_no_landmarks
from rccl.data.blend.mask import reach
from rccl.data.blend.params import DEFAULT_PARAMS
from rccl.data.loaders import build_train_loader
from rccl.data.manifest import read_manifest
from rccl.data.pairing import ForgeryPairSampler
from rccl.errors import RcclError
from rccl.train.config import ConfigError, load_config
from tiny_data import ellipse_landmarks, make_tiny_manifest, tiny_overrides

SIZE = 160


def _textured_crop(seed: int) -> torch.Tensor:
    """A crop with texture at every scale (a flat crop would hide the frequency jitter)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.nn.functional.interpolate(torch.rand(1, 3, 10, 10, generator=g), size=(SIZE, SIZE), mode="bilinear")
    img = 0.2 + 0.5 * coarse + 0.15 * torch.rand(1, 3, SIZE, SIZE, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def _hull_pixels(points: np.ndarray, size: int) -> np.ndarray:
    """(size, size) bool: pixel centres inside the convex hull of points (an independent rasteriser)."""
    hull = points[ConvexHull(points).vertices]
    c = np.arange(size) + 0.5
    xx, yy = np.meshgrid(c, c)
    return PolygonPath(hull).contains_points(np.stack([xx.ravel(), yy.ravel()], 1)).reshape(size, size)


@pytest.mark.parametrize("seed", range(6))
def test_pseudo_fake_geometry(seed):
    """Outside the hull dilated by reach() the pseudo-fake is its source crop bit for bit; well inside it
    differs; the mask is continuous (no step between neighbouring pixels) and has a soft boundary band.
    The face is an upright ellipse off the crop's centre: a hull read with x and y swapped lies elsewhere
    (703 of the pixels outside change then; a centred circle is its own transpose and would hide it)."""
    lm = np.array(ellipse_landmarks(SIZE, rx=0.27, ry=0.4, cx=0.45, cy=0.57), dtype=np.float32)
    crop = _textured_crop(seed)
    g = torch.Generator().manual_seed(100 + seed)
    fake, mask, natural = self_blend(crop.repeat(4, 1, 1, 1), torch.from_numpy(lm).repeat(4, 1, 1), generator=g)
    hull = _hull_pixels(lm, SIZE)
    r = reach(SIZE)
    outside = distance_transform_edt(~hull) > r
    core = distance_transform_edt(hull) > r
    assert outside.sum() > 0.1 * SIZE * SIZE and core.sum() > 200, "the test's face must leave both regions"
    for k in range(4):
        diff = (fake[k].int() - crop[0].int()).abs().amax(dim=0).numpy()
        assert (diff[outside] == 0).all() and (mask[k, 0].numpy()[outside] == 0).all()
        assert (diff[core] > 0).mean() > 0.95
        m = mask[k, 0]
        assert m[torch.from_numpy(core)].min() > 0.2  # the blend ratio's smallest is 0.25
        steps = max((m[:, 1:] - m[:, :-1]).abs().max().item(), (m[1:] - m[:-1]).abs().max().item())
        assert steps < 0.25, f"the mask jumps by {steps:.2f} between neighbouring pixels"
        band = ((m > 0.02) & (m < 0.98 * m.max())).sum().item()
        assert band > 2 * np.pi * 0.3 * SIZE  # a soft ring at least one pixel wide all around


def test_draws_differ_and_repeat_with_the_generator():
    crop, lm = _textured_crop(0).repeat(3, 1, 1, 1), torch.tensor(ellipse_landmarks(SIZE)).repeat(3, 1, 1)
    a, ma, _ = self_blend(crop, lm, generator=torch.Generator().manual_seed(1))
    b, mb, _ = self_blend(crop, lm, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and torch.equal(ma, mb)
    assert not torch.equal(a[0], a[1]) and not torch.equal(ma[0], ma[1])  # every sample its own draws
    assert set(DEFAULT_PARAMS.ratios) >= {0.25, 1.0}


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="uint8"):
        self_blend(torch.zeros(1, 3, 8, 8), torch.zeros(1, 68, 2))
    with pytest.raises(ValueError, match="square"):
        self_blend(torch.zeros(1, 3, 8, 10, dtype=torch.uint8), torch.zeros(1, 68, 2))
    with pytest.raises(ValueError, match="landmarks"):
        self_blend(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(1, 68, 2))


# -- landmark sets and training records ------------------------------------------------------------------
def _row(path, label=0, **extra):
    return {"path": path, "label": label, "video": f"v/{path}", "identity": "" if label else "id0", "pair": 0,
            "quality": "raw", "source": "", "target": "", "crop_size": 64, **extra}


@pytest.mark.parametrize("landmarks, reason", [
    ("absent", "no landmarks column"),
    (None, "no usable landmark fit at preparation (the fit left the face)"),
    ([[1.0, 2.0]] * 5, "shape [5, 2]"),
    ("nan", "non-finite"),
    ([[32.0, 32.0]] * 68, "hull covers 0.0%"),
    ("outside", "outside the 64x64 crop"),
    ("text", "not a list of numbers"),
])
def test_unusable_landmark_sets_give_the_crops_reason(landmarks, reason):
    good = ellipse_landmarks(64)
    value = {"nan": [[float("nan"), 1.0]] + good[1:], "outside": [[x + 100, y] for x, y in good],
             "text": "abc"}.get(landmarks, landmarks) if isinstance(landmarks, str) else landmarks
    row = _row("bad.png", landmarks_problem="the fit left the face") if landmarks == "absent" else \
        _row("bad.png", landmarks=value, landmarks_problem="the fit left the face")
    if landmarks == "absent":
        row.pop("landmarks", None)
    assert reason in why_no_landmarks(row)
    records = [row, _row("ok.png", landmarks=good), _row("fake.png", label=1)]
    chosen = training_set(records, "sbi")
    assert chosen.without_landmarks == [f"bad.png: {why_no_landmarks(row)}"]
    assert "bad.png: " in chosen.describe() and reason in chosen.describe()
    with pytest.raises(LandmarkDataError, match=r"none of the 1 natural training crops.*first: bad.png: "):
        training_set([row, _row("fake.png", label=1)], "sbi")


def test_training_set_modes():
    good = ellipse_landmarks(64)
    records = [_row("a.png", landmarks=good), _row("b.png", landmarks=good), _row("f.png", label=1)]
    assert training_set(records, "real").records == records
    sbi = training_set(records, "sbi").records
    assert [r["label"] for r in sbi] == [0, 0, 1, 1] and [r[BLEND_KEY] for r in sbi[2:]] == [0, 1]
    assert sbi[2]["source"] == "sbi:v/a.png" and sbi[2]["target"] == "sbi:id0" and sbi[2]["path"] == "a.png"
    mixed = training_set(records, "mixed").records
    assert [r["path"] for r in mixed] == ["a.png", "b.png", "f.png", "a.png", "b.png"]
    assert [r.get(BLEND_KEY) for r in mixed] == [None, None, None, 0, 1]
    with pytest.raises(ValueError, match="data.fakes must be one of real, sbi, mixed"):
        training_set(records, "fake")


def test_config_knows_the_mode():
    assert load_config(None, ["data.fakes=sbi"])["data"]["fakes"] == "sbi"
    with pytest.raises(ConfigError, match="'data.fakes' must be one of real, sbi, mixed"):
        load_config(None, ["data.fakes=blended"])
    assert load_config(None, ["data.blend_downscale_p=0"])["data"]["blend_downscale_p"] == 0
    with pytest.raises(ConfigError, match="'data.blend_downscale_p' must be"):
        load_config(None, ["data.blend_downscale_p=1.5"])


def _detail(x: torch.Tensor) -> torch.Tensor:
    """Per sample: mean absolute difference of horizontal neighbours (the fine detail)."""
    return (x[..., 1:] - x[..., :-1]).abs().mean(dim=(1, 2, 3))


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_downscale_share_decides_which_sources_lose_detail(p):
    from rccl.data.blend.jitter import frequency_and_move
    from rccl.data.blend.params import BlendParams

    images = torch.cat([_textured_crop(s) for s in range(16)]).float() / 255
    identity = torch.eye(2, 3).expand(len(images), 2, 3)  # no move: only the frequency jitter acts
    out = frequency_and_move(images, identity, BlendParams(downscale_p=p), torch.Generator().manual_seed(0))
    lost = _detail(out) < _detail(images)
    if p == 0.0:
        assert not lost.any()  # every source sharpened
    elif p == 1.0:
        assert lost.all()  # every source downscaled
    else:
        assert 0 < lost.sum() < len(images)


@pytest.mark.parametrize("seed", range(3))
def test_target_branch_jitters_the_natural_and_keeps_the_pair_equal_outside(seed):
    """SBI's 50/50 (data.blend_target_p): at 1 every natural the pseudo-fake is blended into is the crop
    jittered in place (it differs from the crop everywhere, no move), the pseudo-fake equals that natural bit
    for bit beyond the reach and differs from it well inside the hull (the source is the moved, unjittered
    crop); at 0 the naturals are the crops themselves and the draws are those of target_p's absence."""
    from rccl.data.blend.params import BlendParams

    lm = torch.from_numpy(np.array(ellipse_landmarks(SIZE, rx=0.3, ry=0.3, cy=0.5), dtype=np.float32)).repeat(4, 1, 1)
    crop = _textured_crop(seed).repeat(4, 1, 1, 1)
    hull = _hull_pixels(lm[0].numpy(), SIZE)
    outside, core = distance_transform_edt(~hull) > reach(SIZE), distance_transform_edt(hull) > reach(SIZE)
    fake, mask, natural = self_blend(crop, lm, BlendParams(target_p=1.0), torch.Generator().manual_seed(seed))
    for k in range(4):
        assert (natural[k] != crop[k]).any(dim=0).float().mean() > 0.5  # jittered (colour has a floor)
        diff = (fake[k].int() - natural[k].int()).abs().amax(dim=0).numpy()
        assert (diff[outside] == 0).all() and (diff[core] > 0).mean() > 0.95
    # the natural's jitter is in place: its large-scale layout is the crop's (no shift or zoom)
    low = lambda x: torch.nn.functional.avg_pool2d(x.float(), 16)  # noqa: E731
    assert (low(natural) - low(crop)).abs().mean(dim=(1, 2, 3)).max() < 40
    fake0, mask0, natural0 = self_blend(crop, lm, BlendParams(target_p=0.0), torch.Generator().manual_seed(seed))
    assert torch.equal(natural0, crop)
    g = torch.Generator().manual_seed(seed)
    again = self_blend(crop, lm, BlendParams(), g)  # target_p's default, 0 until measured otherwise
    assert torch.equal(again.fakes, fake0) and torch.equal(again.masks, mask0)
    half = self_blend(crop.repeat(8, 1, 1, 1), lm.repeat(8, 1, 1), BlendParams(target_p=0.5),
                      torch.Generator().manual_seed(seed))
    jittered = (half.naturals != crop.repeat(8, 1, 1, 1)).flatten(1).any(1)
    assert 0 < jittered.sum() < 32


# -- sampler and loader ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_sbi")
    manifest = make_tiny_manifest(root / "data", size=24, landmarks=True)
    records = [r for r in read_manifest(manifest) if r["split"] == "train" and r["quality"] == "raw"]
    return manifest, root, records


@pytest.mark.parametrize("pairing", ["instance", "temporal", "semantic"])
def test_sampler_pairs_each_pseudo_fake_with_its_source(tiny, pairing):
    _, _, records = tiny
    chosen = training_set(records, "sbi").records
    sampler = ForgeryPairSampler(chosen, 6, pairing, seed=0)
    assert len(sampler) == sum(r["label"] == 0 for r in chosen) // 3
    for batch in sampler:
        for (natural, _), (fake, partner) in zip(batch[0::2], batch[1::2]):
            assert chosen[natural]["label"] == 0 and chosen[fake][BLEND_KEY] == natural
            assert BLEND_KEY in chosen[partner]  # a pseudo-fake's partner is a pseudo-fake
            if pairing == "temporal" and partner != fake:
                src, other = chosen[chosen[fake][BLEND_KEY]], chosen[chosen[partner][BLEND_KEY]]
                assert (src["video"], src["pair"]) == (other["video"], other["pair"])
    assert pairing == "instance" or sampler.stats[pairing] > 0


def test_mixed_batches_alternate_pseudo_and_dataset_fakes(tiny):
    _, _, records = tiny
    chosen = training_set(records, "mixed").records
    sampler = ForgeryPairSampler(chosen, 8, "instance", seed=0)
    for batch in sampler:
        fakes = [a for a, _ in batch[1::2]]
        naturals = [a for a, _ in batch[0::2]]
        assert [chosen[f].get(BLEND_KEY) for f in fakes[0::2]] == naturals[0::2]
        assert all(BLEND_KEY not in chosen[f] and chosen[f]["label"] == 1 for f in fakes[1::2])


def test_loader_makes_pseudo_fakes(tiny):
    manifest, root, records = tiny
    cfg = load_config(None, tiny_overrides(manifest, root / "runs", **{"data.fakes": "sbi"}))
    chosen = training_set(records, "sbi").records
    sampler = ForgeryPairSampler(chosen, 6, "instance", seed=0)
    batches = list(build_train_loader(cfg, chosen, sampler))
    assert len(batches) == len(sampler)
    b = batches[0]
    assert b["view1"].shape == (6, 3, 16, 16) and b["label"].tolist() == [0, 1] * 3
    assert all(BLEND_KEY in chosen[i] for i in b["index"][1::2].tolist())
    # without augmentation a pseudo-fake is its source crop with the blended face: never the crop itself
    plain = build_train_loader(cfg, chosen, sampler).dataset
    plain.transform = lambda image: image
    twins = [(i, r[BLEND_KEY]) for i, r in enumerate(chosen) if BLEND_KEY in r]
    for (fake, source), item in zip(twins, plain.__getitems__([(f, s, 7 + f) for f, s in twins])):
        assert item["label"] == 1 and item["view2"].shape == item["view1"].shape
        assert not torch.equal(item["view1"], item["view2"]), f"pseudo-fake {fake} is its source crop {source}"
    assert build_train_loader(cfg, chosen, sampler).dataset.blend_params.downscale_p == 0.5  # the config's key
    # with the target taking the jitters, the natural in the batch is the one its pseudo-fake was blended into
    cfg1 = {**cfg, "data": {**cfg["data"], "blend_target_p": 1.0}}
    dataset = build_train_loader(cfg1, chosen, sampler).dataset
    assert dataset.blend_params.target_p == 1.0
    batch = next(iter(sampler))
    images = dataset._batch_images([(a, p, 7) for a, p in batch])
    for natural, fake in zip([a for a, _ in batch[0::2]], [a for a, _ in batch[1::2]]):
        assert chosen[fake][BLEND_KEY] == natural
        assert not torch.equal(images[natural], dataset.image(natural))  # jittered, not the file's crop
    cfg0 = {**cfg, "data": {**cfg["data"], "blend_downscale_p": 0.0}}
    assert build_train_loader(cfg0, chosen, sampler).dataset.blend_params.downscale_p == 0.0
    # auto picks the torch loader for pseudo-fakes; dali is refused with the reason
    auto = {**cfg, "data": {**cfg["data"], "backend": "auto"}}
    assert len(list(build_train_loader(auto, chosen, sampler))) == len(sampler)
    with pytest.raises(RcclError, match="DALI loader does not make self-blended pseudo-fakes"):
        build_train_loader({**cfg, "data": {**cfg["data"], "backend": "dali"}}, chosen, sampler)


def test_training_run_records_the_mode(tiny):
    """A short run with naturals only: the mode is in the run's config.yaml and in the evaluation summary."""
    from rccl.evaluate import summary_table
    from rccl.train.runner import train

    manifest, root, _ = tiny
    cfg = load_config(None, tiny_overrides(manifest, root / "runs", **{"data.fakes": "sbi", "stage1.epochs": 1}))
    run = train(cfg)
    assert run.config()["data"]["fakes"] == "sbi"
    assert "data.fakes=sbi" in summary_table(run) and "never seen" in summary_table(run)


def test_dali_loader_refuses_pseudo_fakes_when_called_directly(tiny):
    from rccl.data.loaders import dali_available

    if not dali_available():
        pytest.skip("NVIDIA DALI is not installed (pip install -e .[dali])")
    from rccl.data.dali_loader import DaliDataError, build_dali_train_loader

    manifest, root, records = tiny
    cfg = load_config(None, tiny_overrides(manifest, root / "runs", **{"data.backend": "dali"}))
    chosen = training_set(records, "sbi").records
    with pytest.raises(DaliDataError, match="does not make self-blended pseudo-fakes"):
        build_dali_train_loader(cfg, chosen, ForgeryPairSampler(chosen, 6, "instance", seed=0))


def test_a_ranks_share_of_the_batch_blends_as_one_process_with_the_target_jitter(tiny):
    """Under torchrun a rank blends only its share of the global batch, from the draws of its rows
    (rccl.data.blend.draws): with data.blend_target_p > 0 its pseudo-fakes and the naturals they are
    blended into are exactly one process's."""
    manifest, root, records = tiny
    cfg = load_config(None, tiny_overrides(manifest, root / "runs", **{"data.fakes": "sbi", "data.blend_target_p": 0.5}))
    chosen = training_set(records, "sbi").records
    sampler = ForgeryPairSampler(chosen, 8, "instance", seed=0)
    dataset = build_train_loader(cfg, chosen, sampler).dataset
    batch = next(iter(sampler))
    members = sorted({i for pair in batch for i in pair})
    share = sorted({i for pair in batch[4:] for i in pair})  # the second of two ranks
    jittered = 0
    for seed in range(4):
        torch.manual_seed(seed)  # the draws' seed, as _batch_images sets it from the global batch's first item
        whole = dataset._images(members)
        torch.manual_seed(seed)
        part = dataset._images(share, members)
        assert set(part) == set(share)
        jittered += sum(not torch.equal(whole[i], dataset.image(i)) for i in share if BLEND_KEY not in chosen[i])
        for i in share:
            assert torch.equal(part[i], whole[i]), (seed, i)
    assert jittered > 0  # some naturals of the share took the jitters

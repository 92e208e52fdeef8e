"""bench/real_tables.py without training: its rows and their configs (every row resolves, the real-sbi rows
differ from their config by the loss kind and their setting's keys), the data settings and their cache
keys, UTKFace's age filter, merging runs (a stale hash replaces a row) and the markdown's paired
comparison and real-video table."""
from __future__ import annotations

import pytest

from bench.paper_tables import BenchError
from bench.real_tables import (BENCH_CONFIG, KIND, ROWS, SETTING_DATA, SETTING_OVERRIDES, data_key, main, merge_run, parse_only,
                               read_bench_config, render_markdown, row_overrides, row_run_name, setting_data,
                               utkface_adults)
from bench.paper_tables import training_config


def _metrics(raw, c40, tnr=0.9):
    return {q: {"auc": a, "tnr": tnr, "class_gap": 0.5} for q, a in (("raw", raw), ("c23", (raw + c40) / 2), ("c40", c40))}


def test_rows_resolve_and_differ_as_their_settings_say():
    settings, overrides = read_bench_config(BENCH_CONFIG)
    assert settings["crop_size"] in (96, 128, 160) and f"data.image_size={settings['crop_size']}" in overrides
    for setting, method, config in ROWS:
        cfg = training_config(config, row_overrides(setting, method, overrides))
        fakes = "real" if setting.startswith("swaps") else "sbi"
        assert cfg["data"]["fakes"] == fakes, (setting, method)
        assert cfg["loss"]["kind"] == KIND[method], (setting, method)
        assert cfg["model"]["weights"] == "package:efficientnet-lite0"  # offline everywhere
    base = training_config("configs/real/sbi.yaml", row_overrides("real-sbi", "CE", overrides))
    swaps = training_config("configs/tables/table2_ours.yaml", row_overrides("swaps", "Ours", overrides))
    for setting, extra in SETTING_OVERRIDES.items():
        config, reference = (("configs/tables/table2_ours.yaml", swaps) if setting.startswith("swaps")
                             else ("configs/real/sbi.yaml", base))
        cfg = training_config(config, row_overrides(setting, "Ours" if setting.startswith("swaps") else "CE", overrides))
        # e.g. data.augment.jpeg_p: the section keys that hold the setting's overrides change, nothing else
        keys = {".".join(e.split("=", 1)[0].split(".")[:2]) for e in extra}
        changed = {f"{s}.{k}" for s in cfg if isinstance(cfg[s], dict) for k in cfg[s] if cfg[s][k] != reference[s][k]}
        assert changed == keys, (setting, changed)
    # the 4ep rows are the recipe at its first budget: half the shipped stage-1 epochs
    half = training_config("configs/real/sbi.yaml", row_overrides("real-sbi 4ep", "CE", overrides))
    assert 2 * half["stage1"]["epochs"] == base["stage1"]["epochs"]


def test_parse_only_and_run_names():
    assert [r[:2] for r in parse_only(["swaps"])] == [("swaps", "CE"), ("swaps", "Sup. Con"), ("swaps", "Ours")]
    assert [r[:2] for r in parse_only(["real-sbi:Ours,sbi:CE"])] == [("sbi", "CE"), ("real-sbi", "Ours")]
    with pytest.raises(BenchError, match="no such row"):
        parse_only(["swaps:Nope"])
    assert row_run_name("real-sbi -target", "Sup. Con", 2) == "real-sbi-target-sup-con-s2"


def test_data_keys_and_utkface_filter(tmp_path):
    settings, _ = read_bench_config(BENCH_CONFIG)
    assert data_key(settings) == data_key(dict(settings)) != data_key({**settings, "crop_size": 64})
    for name in ("17_0_0_1.jpg.chip.jpg", "18_1_2_2.jpg.chip.jpg", "59_0_4_3.jpg.chip.jpg", "60_0_0_4.jpg.chip.jpg",
                 "notaface.jpg"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in utkface_adults(tmp_path)] == ["18_1_2_2.jpg.chip.jpg", "59_0_4_3.jpg.chip.jpg"]
    with pytest.raises(BenchError, match="no UTKFace photos"):
        utkface_adults(tmp_path / "nothing")


def test_settings_with_their_own_data():
    settings, overrides = read_bench_config(BENCH_CONFIG)
    assert setting_data(settings, "real-sbi") == settings
    for setting, changed in SETTING_DATA.items():
        assert setting in {s for s, _, _ in ROWS}
        data = setting_data(settings, setting)
        assert {k for k in data if data[k] != settings[k]} == set(changed) and data_key(data) != data_key(settings)
    # "real-sbi 3x": three times the naturals for about the steps of the shipped recipe on the bench's naturals
    big, base = (training_config("configs/real/sbi.yaml", row_overrides(s, "CE", overrides)) for s in ("real-sbi 3x", "real-sbi"))
    ratio = (SETTING_DATA["real-sbi 3x"]["photos"] * big["stage1"]["epochs"]) / (settings["photos"] * base["stage1"]["epochs"])
    assert SETTING_DATA["real-sbi 3x"]["photos"] >= 2.5 * settings["photos"] and 0.9 <= ratio <= 1.2


def test_crop_size_needs_its_own_out(tmp_path, capsys):
    assert main(["--crop-size", "96", "--list"]) == 2
    assert "--crop-size makes another data set" in capsys.readouterr().err
    assert main(["--crop-size", "96", "--list", "--out", str(tmp_path / "x.json")]) == 0


def test_merge_and_markdown():
    results = {"rows": []}
    real = {"frame_auc": 0.75, "natural_tnr": 0.6, "naturals_below_every_method": False, "natural_video_mean": 0.3,
            "method_means": {"Deepfakes": 0.9, "Face2Face": 0.4}, "videos": {"ffpp:a.mp4": {"label": 0, "score": 0.2, "crops": 16}}}
    for seed, (ours, sup, ce) in enumerate([(0.9, 0.8, 0.7), (0.85, 0.8, 0.6), (0.88, 0.81, 0.65)]):
        merge_run(results, "swaps", "Ours", "o.yaml", "h3", seed, _metrics(0.99, ours), None, 60, 50)
        merge_run(results, "swaps", "Sup. Con", "s.yaml", "h2", seed, _metrics(0.99, sup), None, 60, 50)
        merge_run(results, "swaps", "CE", "c.yaml", "h1", seed, _metrics(0.99, ce), None, 60, 50)
    merge_run(results, "real-sbi", "CE", "r.yaml", "h4", 0, _metrics(0.9, 0.8), real, 60, 50)
    merge_run(results, "swaps x2", "Ours", "o.yaml", "h5", 1, _metrics(0.99, 0.75), None, 60, 50)
    assert [(r["setting"], r["method"]) for r in results["rows"]] == [
        ("swaps", "CE"), ("swaps", "Sup. Con"), ("swaps", "Ours"), ("real-sbi", "CE"), ("swaps x2", "Ours")]  # ROWS' order
    md = render_markdown(results, "cmd", {("swaps", "CE"): "h1", ("swaps", "Sup. Con"): "h2", ("swaps", "Ours"): "new",
                                          ("real-sbi", "CE"): "h4"})
    assert "**Stale rows**: swaps:Ours" in md and "| swaps | Ours (stale) | 3 |" in md
    assert "| Ours − Sup. Con | +0.0 / +0.0 / +0.0 (mean +0.0 ± 0.0) |" in md
    assert "+10.0 / +5.0 / +7.0 (mean +7.3 ± 2.5, separates)" in md  # c40, Ours − Sup. Con
    # across settings: paired on the seeds both have (seed 1 only), named with their settings
    assert "| swaps x2 Ours − swaps CE | +0.0 (mean +0.0) | +7.5 (mean +7.5) | +15.0 (mean +15.0) |" in md
    assert "| real-sbi | CE | 1 | 75.0 | 60.0 | 1/1 | 0/1 |" in md  # the naturals' mean is below, not every natural and "| ffpp:a.mp4 | 0 |" in md
    merge_run(results, "swaps", "Ours", "o.yaml", "new", 0, _metrics(0.5, 0.5), None, 60, 50)
    assert list(next(r for r in results["rows"] if r["method"] == "Ours" and r["setting"] == "swaps")["runs"]) == ["0"]

"""bench/paper_tables.py without training: row selection, the overrides every row runs with (valid on every
shipped row config), rows with identical resolved configs found by their hash and run once, merging parts
of a run into the results JSON (with the training replaced by a stand-in), the markdown beside it."""
from __future__ import annotations

import json
import threading

import pytest
import torch
import yaml

pytest.importorskip("av", reason="needs PyAV (pip install av): the bench's data is synthetic video written with PyAV")

import bench.paper_tables as pt  # noqa: E402
from bench.paper_tables import (ROW_OVERRIDES, BENCH_CONFIG, PAPER, ROOT, ROWS, BenchError, config_hash,  # noqa: E402
                                data_key, find_row, row_key, row_overrides, run_name,
                                load_results, merge_result, parse_only, parse_seeds, plan_runs, plan_units,
                                read_bench_config, render_markdown, training_config)
from rccl.data.synth import PRESETS  # noqa: E402
from rccl.data.transforms import eval_transform, train_transform  # noqa: E402
from rccl.train.config import load_config  # noqa: E402


def _metrics(auc_raw, auc_c40):
    return {q: {"auc": a, "acc": a - 0.05, "video_auc": a} for q, a in
            (("raw", auc_raw), ("c23", (auc_raw + auc_c40) / 2), ("c40", auc_c40))}


def test_rows_are_the_papers():
    assert [n for t, n, _ in ROWS if t == "2"] == ["Xception", "Sup. Con", "Ours"]
    paper_rows = {(t, n) for t, n, _ in ROWS if t != "2c"}
    assert len(paper_rows) == 17 and set(PAPER) == paper_rows
    # the control rows each undo one of the bench's two changes, and only that
    controls = [row_key(t, n) for t, n, _ in ROWS if t == "2c"]
    assert set(controls) == set(ROW_OVERRIDES) and len(controls) == 4


def test_control_rows_differ_from_their_table2_row_by_their_overrides_only():
    _, overrides = read_bench_config(BENCH_CONFIG)
    for table, row, config in ROWS:
        if table != "2c":
            continue
        base = load_config(ROOT / config, overrides)
        cfg = load_config(ROOT / config, row_overrides(row_key(table, row), overrides))
        changed = {f"model.{k}" for k in cfg["model"] if cfg["model"][k] != base["model"][k]}
        assert changed and changed <= {"model.proj_out_bn", "model.weights", "model.pretrained", "model.allow_scratch"}
        assert {k: v for k, v in cfg.items() if k != "model"} == {k: v for k, v in base.items() if k != "model"}
    assert run_name("configs/tables/table2_ours.yaml", 1, "2c:Ours, paper projector") == "table2_ours-ours--paper-projector-s1"
    assert run_name("configs/tables/table2_ours.yaml", 1, "2:Ours") == "table2_ours-s1"
    assert PAPER[("2", "Ours")]["auc"] == (99.86, 99.66, 78.44)


def test_parse_only_and_seeds():
    assert [r[1] for r in parse_only(["2"])] == ["Xception", "Sup. Con", "Ours"]
    assert [r[1] for r in parse_only(["2:Ours,3:Class-level"])] == ["Ours", "Class-level"]
    assert [r[1] for r in parse_only(["5:+ 32 pos., 16 neg."])] == ["+ 32 pos., 16 neg."]  # a comma in the name
    assert [r[1] for r in parse_only(["2:Ours", "2:Ours"])] == ["Ours"]
    with pytest.raises(BenchError, match="--only '2:Nope': no such row"):
        parse_only(["2:Nope"])
    assert parse_seeds("0,1,2") == [0, 1, 2]
    for bad in ("a", "0,0", ""):
        with pytest.raises(BenchError, match="--seeds"):
            parse_seeds(bad)


def test_bench_overrides_apply_to_every_row_config():
    """Every shipped row config, with the bench's demo-scale overrides, resolves (no unknown key), keeps its
    own method keys, and gets the demo-scale budget."""
    preset_name, overrides = read_bench_config(BENCH_CONFIG)
    budget = yaml.safe_load(BENCH_CONFIG.read_text(encoding="utf-8"))["overrides"]  # the file as written
    assert preset_name in PRESETS
    for table, row, config in ROWS:
        bare = load_config(ROOT / config)
        cfg = load_config(ROOT / config, overrides)
        # the pretrained encoder, its weights from an installed package (no network)
        assert cfg["model"]["encoder"] == budget["model"]["encoder"] == "tf_efficientnet_lite0", config
        assert cfg["model"]["weights"] == "package:efficientnet-lite0" and cfg["model"]["proj_out_bn"], config
        assert cfg["data"]["image_size"] == budget["data"]["image_size"], config
        assert cfg["stage1"]["epochs"] == budget["stage1"]["epochs"], config
        assert cfg["loss"] == bare["loss"] and cfg["data"]["pairing"] == bare["data"]["pairing"], config


def test_bench_training_views_are_not_resampled():
    """The bench's augmentation keeps every pixel where it was (no resized crop: its resampling smoothed the
    1-2 px traces c40 erases, bench/RESULTS.md): without flip and jitter a training view is the eval view."""
    _, overrides = read_bench_config(BENCH_CONFIG)
    cfg = load_config(ROOT / ROWS[0][2], overrides)
    augment = {**cfg["data"]["augment"], "flip": 0.0, "color_jitter": 0.0}
    size = cfg["data"]["image_size"]
    image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    for _ in range(5):  # the crop's draw is random: every draw must pass the pixels through
        assert torch.equal(train_transform(size, augment)(image), eval_transform(size)(image))
    resized = train_transform(size, {**augment, "scale": [0.6, 1.0]})  # the demo's crop does resample
    assert not all(torch.equal(resized(image), eval_transform(size)(image)) for _ in range(5))


def test_merge_parts_and_replace_a_seed(tmp_path):
    results = load_results(tmp_path / "none.json")
    assert results == {"seeds": [], "rows": []}
    merge_result(results, "2", "Ours", "c.yaml", 1, _metrics(0.9, 0.7), 10.0)
    merge_result(results, "2", "Xception", "x.yaml", 0, _metrics(0.95, 0.6), 12.0)
    merge_result(results, "2", "Ours", "c.yaml", 0, _metrics(0.8, 0.6), 11.0)
    assert [r["row"] for r in results["rows"]] == ["Xception", "Ours"]  # the paper's order
    ours = find_row(results, "2", "Ours")
    assert ours["seeds"] == [1, 0] and ours["metrics"]["raw"]["auc"] == [0.9, 0.8]
    merge_result(results, "2", "Ours", "c.yaml", 1, _metrics(0.85, 0.65), 9.0)  # a rerun replaces its seed
    assert ours["seeds"] == [0, 1] and ours["metrics"]["c40"]["auc"] == [0.6, 0.65] and ours["seconds"] == [11.0, 9.0]
    assert all(len(v) == 2 for q in ours["metrics"].values() for v in q.values())
    assert results["seeds"] == [0, 1]
    md = render_markdown(results, "python -m bench.paper_tables --only 2")
    line = next(ln for ln in md.splitlines() if ln.startswith("| Ours |"))
    assert "| 2 | 82.50 ± 3.54 |" in line and "99.86/99.66/78.44" in line
    assert "Table 3" not in md  # rows not run are not listed


def test_results_file_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{", encoding="utf-8")
    with pytest.raises(BenchError, match="not valid JSON"):
        load_results(bad)
    bad.write_text("{}", encoding="utf-8")
    with pytest.raises(BenchError, match="no 'rows' list"):
        load_results(bad)


def test_identical_rows_share_one_run():
    """The hash of the resolved configs finds the rows the paper's numbers say are one setting: Sup. Con of
    Tables 2, 3 (Instance-level), 5 and 6; Table 4 Smooth = Table 5 "+ 32 pos., 16 neg." = Table 6 "As
    negatives". Every other row is its own run."""
    preset_name, overrides = read_bench_config(BENCH_CONFIG)
    plan = plan_runs(overrides, data_key(preset_name))
    assert set(plan) == {f"{t}:{n}" for t, n, _ in ROWS}
    groups = {}
    for key, p in plan.items():
        groups.setdefault(p["hash"], []).append(key)
    shared = sorted(sorted(g) for g in groups.values() if len(g) > 1)
    assert shared == [["2:Sup. Con", "3:Instance-level", "5:Sup. Con", "6:Sup. Con"],
                      ["4:Smooth", "5:+ 32 pos., 16 neg.", "6:As negatives"]]
    assert len(groups) == 16  # 12 distinct paper configs + 4 controls
    assert plan["6:Sup. Con"]["owner"] == "2:Sup. Con" and plan["6:Sup. Con"]["config"] == "configs/tables/table2_supcon.yaml"
    assert plan["6:As negatives"]["owner"] == "4:Smooth"
    assert plan["2:Ours"]["owner"] == "2:Ours" and plan["2:Ours"]["hash"] != plan["4:Smooth"]["hash"]


def test_the_hash_is_the_resolved_config_not_the_file(tmp_path, monkeypatch):
    """Two files that resolve alike (other names, other comments, a default spelled out) share a hash; one
    changed key, another data set, or another bench override gives another hash."""
    monkeypatch.setattr(pt, "ROOT", tmp_path)
    base = (ROOT / "configs" / "celebdf.yaml").resolve()
    (tmp_path / "a.yaml").write_text(f"base: {base}\nname: a\n", encoding="utf-8")
    (tmp_path / "b.yaml").write_text(f"# same setting\nbase: {base}\nname: b\nloss:\n  negatives: 16\n", encoding="utf-8")
    (tmp_path / "c.yaml").write_text(f"base: {base}\nname: c\nloss:\n  negatives: 8\n", encoding="utf-8")
    rows = [("9", "A", "a.yaml"), ("9", "B", "b.yaml"), ("9", "C", "c.yaml")]
    _, overrides = read_bench_config(BENCH_CONFIG)
    plan = plan_runs(overrides, "set-1", rows)
    assert plan["9:B"] == {"hash": plan["9:A"]["hash"], "owner": "9:A", "config": "a.yaml"}
    assert plan["9:C"]["owner"] == "9:C" and plan["9:C"]["hash"] != plan["9:A"]["hash"]
    assert plan_runs(overrides, "set-2", rows)["9:A"]["hash"] != plan["9:A"]["hash"]
    assert plan_runs(overrides + ["stage1.epochs=3"], "set-1", rows)["9:A"]["hash"] != plan["9:A"]["hash"]
    assert "name" not in training_config("a.yaml", overrides)
    assert config_hash({"x": 1}, "d") == config_hash({"x": 1}, "d") != config_hash({"x": 2}, "d")


def test_plan_units_runs_each_config_once_per_seed():
    plan = {"2:Sup. Con": {"hash": "h1", "owner": "2:Sup. Con", "config": "s.yaml"},
            "5:Sup. Con": {"hash": "h1", "owner": "2:Sup. Con", "config": "s.yaml"},
            "2:Ours": {"hash": "h2", "owner": "2:Ours", "config": "o.yaml"}}
    rows = [("2", "Sup. Con", "s.yaml"), ("2", "Ours", "o.yaml"), ("5", "Sup. Con", "s5.yaml")]
    results = load_results(ROOT / "no-such-file.json")
    assert plan_units(rows, [0, 1], plan, results, force=False, verify=False) == [
        ("2:Sup. Con", 0), ("2:Ours", 0), ("2:Sup. Con", 1), ("2:Ours", 1)]  # seed-major, Sup. Con once
    assert plan_units(rows[2:], [0], plan, results, force=False, verify=False) == [("2:Sup. Con", 0)]
    merge_result(results, "2", "Sup. Con", "s.yaml", 0, _metrics(0.7, 0.6), 5.0, config_hash="h1")
    merge_result(results, "5", "Sup. Con", "s5.yaml", 0, _metrics(0.7, 0.6), 5.0, config_hash="h1",
                 same_as="2:Sup. Con")
    merge_result(results, "2", "Ours", "o.yaml", 0, _metrics(0.7, 0.6), 5.0, config_hash="old")  # stale
    assert plan_units(rows, [0], plan, results, force=False, verify=False) == [("2:Ours", 0)]
    assert plan_units(rows, [0], plan, results, force=True, verify=False) == [("2:Sup. Con", 0), ("2:Ours", 0)]
    assert plan_units(rows, [0, 1], plan, results, force=False, verify=True) == [("2:Sup. Con", 0)]


def test_a_result_of_another_config_replaces_the_stale_seeds():
    results = {"seeds": [], "rows": []}
    merge_result(results, "2", "Ours", "c.yaml", 0, _metrics(0.9, 0.7), 10.0, 20.0, config_hash="old")
    merge_result(results, "2", "Ours", "c.yaml", 1, _metrics(0.8, 0.7), 10.0, 20.0, config_hash="old")
    merge_result(results, "2", "Ours", "c.yaml", 2, _metrics(0.6, 0.5), 11.0, 21.0, config_hash="new")
    ours = find_row(results, "2", "Ours")
    assert ours["seeds"] == [2] and ours["metrics"]["raw"]["auc"] == [0.6] and ours["cpu_seconds"] == [21.0]
    assert ours["config_hash"] == "new" and results["seeds"] == [2]


def _fake_run(calls, lock):
    def run_one(label, config, seed, overrides, manifest, runs, nice, lock_path=None, keep=False):
        with lock:
            calls.append((label, seed))
        base = 0.5 + 0.01 * seed + 0.001 * len(config)
        return _metrics(base + 0.3, base), 60.0 + seed, 50.0 + seed
    return run_one


def test_main_runs_in_parts_and_merges(tmp_path, monkeypatch, capsys):
    """Two calls (Table 2 seed 0, then Table 5 seeds 0-1) fill one JSON: the shared run (2:Sup. Con = 5:Sup.
    Con) is not repeated for seed 0, every row of the shared config is filled from it and says so, the
    totals count each run once; --verify reruns what is recorded and compares."""
    calls = []
    monkeypatch.setattr(pt, "run_one", _fake_run(calls, threading.Lock()))
    monkeypatch.setattr(pt, "prepare_data", lambda *a, **k: tmp_path / "manifest.jsonl")
    out = tmp_path / "t.json"
    assert pt.main(["--only", "2", "--seeds", "0", "--out", str(out)]) == 0
    assert sorted(calls) == [("2:Ours", 0), ("2:Sup. Con", 0), ("2:Xception", 0)]
    calls.clear()
    assert pt.main(["--only", "5", "--seeds", "0,1", "--out", str(out), "--jobs", "3"]) == 0
    assert sorted(calls) == [("2:Sup. Con", 1), ("4:Smooth", 0), ("4:Smooth", 1), ("5:+ 32 pos.", 0),
                             ("5:+ 32 pos.", 1), ("5:+ 32 pos., 32 neg.", 0), ("5:+ 32 pos., 32 neg.", 1)]
    results = json.loads(out.read_text(encoding="utf-8"))
    sup5, sup2, sup6 = find_row(results, "5", "Sup. Con"), find_row(results, "2", "Sup. Con"), find_row(results, "6", "Sup. Con")
    assert sup5["same_as"] == "2:Sup. Con" and sup2["same_as"] is None and sup6["same_as"] == "2:Sup. Con"
    assert sorted(sup5["seeds"]) == sorted(sup2["seeds"]) == [0, 1]
    assert sup5["metrics"] == sup2["metrics"] and sup5["config"] == "configs/tables/table5_supcon.yaml"
    assert find_row(results, "6", "As negatives")["same_as"] == "4:Smooth"
    assert find_row(results, "3", "Temporal-level") is None  # not run
    assert results["seeds"] == [0, 1]
    assert results["totals"]["runs"] == 3 + 7 and results["totals"]["cpu_s"] == 10 * 50.0 + 4 * 1.0
    md = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "| Sup. Con | 2 |" in md and "| 2:Sup. Con |" in md
    printed = capsys.readouterr().out
    assert "paper_tables: 7 run(s) (4 distinct configs x seeds [0, 1]), 3 at a time; at 0.8 CPU min a run" in printed
    assert "paper_tables: start 4:Smooth seed 1 (configs/tables/table4_smooth.yaml" in printed
    assert "(also 3:Instance-level, 5:Sup. Con, 6:Sup. Con)" in printed and "ETA" in printed
    calls.clear()
    assert pt.main(["--only", "5:Sup. Con", "--seeds", "0", "--out", str(out)]) == 0  # all recorded
    assert calls == []
    before = out.read_text(encoding="utf-8")
    assert pt.main(["--only", "6:Sup. Con", "--seeds", "0", "--verify", "--out", str(out)]) == 0
    assert calls == [("2:Sup. Con", 0)] and out.read_text(encoding="utf-8") == before
    assert "verify: worst |AUC difference| 0.0000 (within 0.02)" in capsys.readouterr().out


def test_a_failed_run_is_reported_and_the_rest_kept(tmp_path, monkeypatch, capsys):
    def run_one(label, config, seed, *a, **k):
        if label == "2:Ours":
            raise BenchError(f"{label} seed {seed}: rccl-train exited 1: boom")
        return _metrics(0.8, 0.7), 1.0, 1.0
    monkeypatch.setattr(pt, "run_one", run_one)
    monkeypatch.setattr(pt, "prepare_data", lambda *a, **k: tmp_path / "manifest.jsonl")
    out = tmp_path / "t.json"
    assert pt.main(["--only", "2", "--seeds", "0", "--out", str(out), "--jobs", "1"]) == 1
    assert "2:Ours seed 0: rccl-train exited 1: boom" in capsys.readouterr().out
    results = json.loads(out.read_text(encoding="utf-8"))
    assert [(r["table"], r["row"]) for r in results["rows"]] == [  # the paper's order; Ours not there
        ("2", "Xception"), ("2", "Sup. Con"), ("3", "Instance-level"), ("5", "Sup. Con"), ("6", "Sup. Con")]
    assert pt.main(["--jobs", "0", "--out", str(out)]) == 2


def test_run_child_records_wall_and_cpu(tmp_path):
    import sys
    rc, wall, cpu = pt.run_child([sys.executable, "-c", "import time; t = time.process_time()\n"
                                  "while time.process_time() - t < 0.3: pass\nraise SystemExit(3)"], tmp_path / "x.log")
    assert rc == 3 and wall >= 0.3 and 0.25 <= cpu <= wall + 0.1
    assert (tmp_path / "x.log").read_text(encoding="utf-8").startswith(sys.executable)


def test_merge_combines_parts_written_to_other_files(tmp_path, monkeypatch, capsys):
    """Parts run with their own --out (e.g. side by side) merge into one file; a part measured with another
    config hash is skipped with a note; a missing file is an error."""
    calls = []
    monkeypatch.setattr(pt, "run_one", _fake_run(calls, threading.Lock()))
    monkeypatch.setattr(pt, "prepare_data", lambda *a, **k: tmp_path / "manifest.jsonl")
    a, b, out = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "all.json"
    assert pt.main(["--only", "2:Xception", "--seeds", "0", "--out", str(a)]) == 0
    assert pt.main(["--only", "6", "--seeds", "0,1", "--out", str(b)]) == 0
    stale = json.loads(a.read_text(encoding="utf-8"))
    stale["rows"][0]["config_hash"] = "0ld"
    (tmp_path / "stale.json").write_text(json.dumps(stale), encoding="utf-8")
    calls.clear()
    assert pt.main(["--only", "2:Xception", "--seeds", "0", "--out", str(out), "--merge", str(a), "--merge", str(b),
                    "--merge", str(tmp_path / "stale.json")]) == 0
    assert calls == []  # everything asked for came from the parts
    assert "2:Xception was measured with another config or data set" in capsys.readouterr().out
    results = json.loads(out.read_text(encoding="utf-8"))
    assert find_row(results, "2", "Xception")["seeds"] == [0]
    assert sorted(find_row(results, "3", "Instance-level")["seeds"]) == [0, 1]  # 6:Sup. Con's run, shared
    assert find_row(results, "6", "As negatives")["same_as"] == "4:Smooth"
    assert results["totals"]["runs"] == 1 + 6
    assert pt.main(["--out", str(out), "--merge", str(tmp_path / "nope.json")]) == 2


def test_synth_set_makes_another_data_set(tmp_path, monkeypatch, capsys):
    """--synth-set changes the preset's tree: another data key (so other config hashes), only with its own
    --out; without it the key is the preset's alone (the recorded results' hashes stay valid); a key that
    is no tree parameter is refused."""
    assert pt.parse_synth_set(["generator_down=[1.15, 1.4]", "seam_scale=2"]) == {
        "generator_down": [1.15, 1.4], "seam_scale": 2}
    with pytest.raises(BenchError, match="--synth-set 'crop_size=96': give KEY=VALUE with KEY one of seed"):
        pt.parse_synth_set(["crop_size=96"])
    assert data_key("compression", {}) == data_key("compression")
    assert data_key("compression", {"seam_scale": 2}) != data_key("compression")
    assert pt.main(["--only", "2:Xception", "--synth-set", "seam_scale=2"]) == 2
    assert "--synth-set makes another data set: give --out FILE" in capsys.readouterr().err
    calls, prepared = [], []

    def prepare(preset_name, cache, log, synth_set=None):
        prepared.append(synth_set)
        return tmp_path / "m.jsonl"

    monkeypatch.setattr(pt, "run_one", _fake_run(calls, threading.Lock()))
    monkeypatch.setattr(pt, "prepare_data", prepare)
    out = tmp_path / "t.json"
    assert pt.main(["--only", "2:Xception", "--seeds", "0", "--synth-set", "seam_scale=2", "--out", str(out)]) == 0
    assert calls == [("2:Xception", 0)] and prepared == [{"seam_scale": 2}]


def test_stage1_summary_and_paired_comparison(tmp_path):
    (tmp_path / "epochs.csv").write_text(
        "stage,epoch,loss,lr,seconds,views_per_s,accuracy,class_gap,mean_cosine,collapsed_loss,at_collapse,pairing\n"
        "1,1,5.5,0.01,1,1,,0.02,0.0,4.1431,0.0,\n1,2,3.5,0.0,1,1,,1.7,0.0,4.1431,0.0,\n2,1,0.3,0.01,1,1,0.9,,,,,\n")
    assert pt.stage1_summary(tmp_path) == {"loss_first": 5.5, "loss_last": 3.5, "collapsed_loss": 4.1431,
                                           "train_class_gap": 1.7}
    results = load_results(tmp_path / "none.json")
    for seed, (ours, supcon) in enumerate(((0.97, 0.99), (0.98, 0.96))):
        merge_result(results, "2", "Ours", "o.yaml", seed, _metrics(ours, ours - 0.1), 1.0)
        merge_result(results, "2", "Sup. Con", "s.yaml", seed, _metrics(supcon, supcon - 0.2), 1.0)
    lines = pt.paired_comparison(results)
    auc = next(line for line in lines if line.startswith("| 2:Ours − Sup. Con | AUC"))
    # raw: -2.0 and +2.0 points (mean 0.0, sd 2.8); c40: +8.0 and +12.0 (mean +10.0)
    assert "-2.0 / +2.0 (mean +0.0 ± 2.8)" in auc and "+8.0 / +12.0 (mean +10.0 ± 2.8)" in auc
    assert not any(line.startswith("| 2:Ours − Xception") for line in lines)  # no CE row: no pair


def test_a_record_of_another_config_is_never_verified_and_the_tables_say_it(tmp_path, monkeypatch, capsys):
    """A row recorded with another config hash than the current code gives (the issue-25 symptom: --verify
    said 'nothing to run' for a stale record): --verify names the row, both hashes and refuses (exit 1)
    without running it; --list and the markdown mark it stale; a plain run replaces it."""
    calls = []
    monkeypatch.setattr(pt, "run_one", _fake_run(calls, threading.Lock()))
    monkeypatch.setattr(pt, "prepare_data", lambda *a, **k: tmp_path / "manifest.jsonl")
    out = tmp_path / "t.json"
    assert pt.main(["--only", "2:Ours", "--seeds", "0", "--out", str(out)]) == 0
    results = json.loads(out.read_text(encoding="utf-8"))
    now = find_row(results, "2", "Ours")["config_hash"]
    find_row(results, "2", "Ours")["config_hash"] = "0123456789ab"  # as if recorded before a defaults change
    out.write_text(json.dumps(results), encoding="utf-8")
    calls.clear()
    capsys.readouterr()
    assert pt.main(["--only", "2:Ours", "--seeds", "0", "--verify", "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert calls == [] and "nothing to run" not in printed
    assert f"2:Ours seed 0 was recorded with config hash 0123456789ab, but the current code" in printed
    assert f"give {now}: the record belongs to another config" in printed
    assert pt.main(["--only", "2:Ours", "--list", "--out", str(out)]) == 0
    assert "recorded seeds [0] STALE (recorded with 0123456789ab)" in capsys.readouterr().out
    plan = plan_runs(read_bench_config(BENCH_CONFIG)[1], data_key(read_bench_config(BENCH_CONFIG)[0]))
    md = render_markdown(json.loads(out.read_text(encoding="utf-8")), "cmd", plan)
    assert "**Stale rows (1)**" in md and f"- 2:Ours: 0123456789ab → {now}" in md and "| Ours (stale) | 1 |" in md
    assert "Stale" not in render_markdown(json.loads(out.read_text(encoding="utf-8")), "cmd")  # no plan, no claim
    assert pt.main(["--only", "2:Ours", "--seeds", "1", "--verify", "--out", str(out)]) == 1  # seed not recorded
    assert "none of the selected rows/seeds is in the JSON" in capsys.readouterr().out
    assert pt.main(["--only", "2:Ours", "--seeds", "0", "--out", str(out)]) == 0  # a plain run replaces it
    assert calls == [("2:Ours", 0)]
    assert find_row(json.loads(out.read_text(encoding="utf-8")), "2", "Ours")["config_hash"] == now
    assert "Stale" not in out.with_suffix(".md").read_text(encoding="utf-8")

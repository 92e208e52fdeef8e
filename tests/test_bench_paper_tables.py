"""bench/paper_tables.py without training: row selection, the overrides every row runs with (valid on every
shipped row config), merging parts of a run into the results JSON, the markdown beside it."""
from __future__ import annotations

import pytest
import yaml

from bench.paper_tables import (BENCH_CONFIG, PAPER, ROOT, ROWS, BenchError, find_row, load_results, merge_result,
                                parse_only, parse_seeds, read_bench_config, render_markdown)
from rccl.data.synth import PRESETS
from rccl.train.config import load_config


def _metrics(auc_raw, auc_c40):
    return {q: {"auc": a, "acc": a - 0.05, "video_auc": a} for q, a in
            (("raw", auc_raw), ("c23", (auc_raw + auc_c40) / 2), ("c40", auc_c40))}


def test_rows_are_the_papers():
    assert [n for t, n, _ in ROWS if t == "2"] == ["Xception", "Sup. Con", "Ours"]
    assert len(ROWS) == 17 and set(PAPER) == {(t, n) for t, n, _ in ROWS}
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
        assert cfg["model"]["encoder"] == budget["model"]["encoder"] == "resnet10t", config
        assert cfg["data"]["image_size"] == budget["data"]["image_size"], config
        assert cfg["stage1"]["epochs"] == budget["stage1"]["epochs"], config
        assert cfg["loss"] == bare["loss"] and cfg["data"]["pairing"] == bare["data"]["pairing"], config


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

"""bench/sbi_tables.py without training: its rows and their configs (each resolves with the paper-tables
budget and trains on the fakes it says), row selection, the rccl-eval command, per-video scores from
rccl-eval's CSV, and the markdown of a results file."""
import pytest

from bench.paper_tables import BENCH_CONFIG, ROOT, BenchError, read_bench_config, training_config
from bench.real_videos import CROSS, eval_command, summarize, video_scores
from bench.sbi_tables import (ROWS, build_parser, load_results, merge_run, parse_only, render_markdown, row_overrides,
                              row_run_name)


def test_rows_pair_each_method_with_and_without_the_sets_fakes():
    _, overrides = read_bench_config(BENCH_CONFIG)
    methods = {}
    for setting, method, config in ROWS:
        cfg = training_config(config, row_overrides(setting, overrides))
        assert cfg["data"]["fakes"] == {"sbi": "sbi", "true": "real", "mixed": "mixed", "sbi+jpeg": "sbi",
                                        "sbi-sharp": "sbi"}[setting]
        assert cfg["data"]["augment"]["jpeg_p"] == (0.5 if setting == "sbi+jpeg" else 0.0), (setting, config)
        assert cfg["data"]["blend_downscale_p"] == (0 if setting == "sbi-sharp" else 0.5), (setting, config)
        # the paper-tables budget: its encoder (with its weights) and epochs
        assert cfg["model"]["encoder"] == "tf_efficientnet_lite0" and cfg["stage1"]["epochs"] == 10, config
        methods.setdefault(method, {})[setting] = cfg
    assert set(methods) == {"CE", "Sup. Con", "Ours"}
    for method, by_setting in methods.items():  # sbi and true differ in data.fakes alone
        sbi, true = dict(by_setting["sbi"]), dict(by_setting["true"])
        sbi["data"] = {**sbi["data"], "fakes": "real"}
        assert sbi == true, method
    for method in ("CE", "Ours"):  # the diagnostics differ from sbi in their one key alone
        jpeg, sharp, sbi = dict(methods[method]["sbi+jpeg"]), dict(methods[method]["sbi-sharp"]), methods[method]["sbi"]
        jpeg["data"] = {**jpeg["data"], "augment": {**jpeg["data"]["augment"], "jpeg_p": 0.0}}
        sharp["data"] = {**sharp["data"], "blend_downscale_p": 0.5}
        assert jpeg == sbi and sharp == sbi, method
    assert [c[0] for c in CROSS] == ["ffpp", "dfdc"]


def test_run_folders_are_distinct_per_row():
    names = {row_run_name(s, c, 0) for s, _, c in ROWS}
    assert len(names) == len(ROWS)
    assert row_run_name("sbi", "configs/sbi/ours.yaml", 2) == "ours-s2"
    assert row_run_name("sbi+jpeg", "configs/sbi/ours.yaml", 2) == "ours-sbi-jpeg-s2"


def test_parse_only_and_arguments():
    assert parse_only(None) == ROWS
    assert [r[1] for r in parse_only(["sbi"])] == ["CE", "Sup. Con", "Ours"]
    assert [r[:2] for r in parse_only(["sbi+jpeg:Ours"])] == [("sbi+jpeg", "Ours")]
    assert parse_only(["true:Ours,sbi:Ours"]) == [ROWS[2], ROWS[5]]  # in ROWS' order
    with pytest.raises(BenchError, match="--only 'sbi:Nope': no such row"):
        parse_only(["sbi:Nope"])
    args = build_parser().parse_args(["--only", "sbi:CE", "--seeds", "0", "--no-cross", "--nice", "5"])
    assert (args.only, args.seeds, args.no_cross, args.nice) == (["sbi:CE"], "0", True, 5)


def test_list_runs_nothing(capsys):
    from bench.sbi_tables import main

    assert main(["--list", "--only", "mixed"]) == 0
    out = capsys.readouterr().out
    assert "mixed:Ours" in out and "data.fakes=mixed" in out and "rccl-eval --manifest" in out
    assert main(["--seeds", "x"]) == 2


def test_eval_command_and_video_scores(tmp_path):
    cmd = eval_command(tmp_path / "run", tmp_path / "m.jsonl", "ffpp", "c23", "test")
    assert cmd[1:3] == ["-m", "rccl.cli.evaluate"] and cmd[cmd.index("--split") + 1] == "test"
    assert cmd[cmd.index("--manifest") + 1] == str(tmp_path / "m.jsonl")
    csv = tmp_path / "s.csv"
    csv.write_text("path,dataset,video,frame,label,fake_probability\n"
                   "a,ffpp,v1.mp4,0,1,0.2\nb,ffpp,v1.mp4,1,1,0.4\nc,ffpp,v0.mp4,0,0,0.1\n")
    assert video_scores(csv) == {"v1.mp4": {"label": 1, "score": 0.3, "crops": 2},
                                 "v0.mp4": {"label": 0, "score": 0.1, "crops": 1}}


def test_real_video_summary():
    """The frame AUC pools every crop; TNR/TPR at the detector's threshold; a natural video must score below
    every fake method's mean for naturals_below_every_method."""
    frames = ([{"video": "ffpp:original_sequences/youtube/c23/videos/004.mp4", "label": 0, "score": s} for s in (0.1, 0.6)]
              + [{"video": "ffpp:manipulated_sequences/Deepfakes/c23/videos/519_515.mp4", "label": 1, "score": s}
                 for s in (0.7, 0.9)]
              + [{"video": "dfdc:train_sample_videos/a.mp4", "label": 1, "score": s} for s in (0.2, 0.8)])
    s = summarize(frames)
    assert s["frame_auc"] == pytest.approx(7 / 8) and s["natural_tnr"] == 0.5 and s["fake_tpr"] == 0.75
    assert s["method_means"] == {"DFDC": 0.5, "Deepfakes": 0.8} and s["natural_video_max"] == 0.35
    assert s["naturals_below_every_method"] and s["crops"] == 6
    frames[0]["score"] = 0.9  # the natural video's mean (0.75) passes DFDC's
    assert not summarize(frames)["naturals_below_every_method"]
    with pytest.raises(BenchError, match="no real-sample crops"):
        summarize([])


def test_results_and_markdown(tmp_path):
    results = load_results(tmp_path / "none.json")
    metrics = {q: {"auc": a, "video_auc": a, "tnr": a - 0.5} for q, a in (("raw", 0.9), ("c23", 0.8), ("c40", 0.7))}
    videos = {"ffpp:x.mp4": {"label": 1, "score": 0.6, "crops": 16}}
    merge_run(results, "true", "Ours", ROWS[5][2], "h1", 0, metrics, videos, 60, 55)
    merge_run(results, "sbi", "Ours", ROWS[2][2], "h2", 0, metrics, videos, 60, 55)
    merge_run(results, "sbi", "Ours", ROWS[2][2], "h2", 1, {**metrics, "raw": {"auc": 0.8}}, {}, 60, 65)
    assert [(r["setting"], sorted(r["runs"])) for r in results["rows"]] == [("sbi", ["0", "1"]), ("true", ["0"])]
    md = render_markdown(results, "python -m bench.sbi_tables")
    assert "| sbi | Ours | 2 | 85.00 ± 7.07 | 80.00 ± 0.00 |" in md
    assert "| 90.00 | 70.00 | 40/30/20 | 0.9 |" in md  # true Ours: video AUC raw, c40, TNR per quality, CPU min
    assert "| ffpp:x.mp4 | 1 | 0.600 | 0.600 |" in md and "Far too few" in md
    merge_run(results, "sbi", "Ours", ROWS[2][2], "h3", 0, metrics, {}, 60, 55)  # another config: runs reset
    assert sorted(results["rows"][0]["runs"]) == ["0"]
    assert (ROOT / ROWS[0][2]).is_file()


def test_a_broken_results_file_is_named_and_left_alone(tmp_path):
    broken = tmp_path / "sbi.json"
    broken.write_text("{ cut off", encoding="utf-8")
    with pytest.raises(BenchError, match=r"sbi\.json: not valid JSON"):
        load_results(broken)
    other = tmp_path / "other.json"
    other.write_text('{"seeds": 3}', encoding="utf-8")
    with pytest.raises(BenchError, match="not a sbi_tables results file"):
        load_results(other)
    assert broken.read_text(encoding="utf-8") == "{ cut off"
    assert load_results(tmp_path / "none.json") == {"rows": []}

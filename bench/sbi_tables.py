"""What self-blending buys: CE, Sup. Con and the method trained on the synthetic compression set's natural
videos only (data.fakes=sbi: self-blended pseudo-fakes, the set's fakes never seen) against the same
budget trained on its true fakes, tested on its fakes at raw / c23 / c40; then every run scored on the
real FF++ and DFDC samples of ../shared/data/real (the cross-dataset protocol, rccl-eval --manifest),
per video: far too few videos for an AUC, so the table lists each video's mean fake probability.

    python -m bench.sbi_tables                         every row, seeds 0,1,2 (rows/seeds in the JSON kept)
    python -m bench.sbi_tables --only sbi:Ours --seeds 0
    python -m bench.sbi_tables --list                  the rows, their configs and the commands; run nothing

Rows (ROWS): setting "sbi" (configs/sbi/{ce,supcon,ours}.yaml), "true" (configs/tables/table2_*.yaml, the
same methods on the set's fakes: the rows of bench/paper_tables.py), "mixed" (configs/sbi/ours_mixed.yaml)
and two diagnostics, the sbi configs with SETTING_OVERRIDES: "sbi+jpeg" (the training views JPEG-compressed
at random: does a detector that saw compressed naturals stop calling compressed naturals fake?) and
"sbi-sharp" (no pseudo-fake made by a resolution loss: does it stop reading lost detail as fake?).
Every row runs with the budget of bench/paper_tables.yaml (its overrides and synthetic preset), on that
preset prepared afresh in its own cache folder (the pseudo-fakes need rccl-prep's landmarks, which a cache
made before them lacks). A run is a subprocess of the public CLIs: rccl-train (which evaluates the set's test
split), then rccl-eval --manifest on each real sample's split; the results JSON (bench/results/sbi_tables.json)
and its markdown are rewritten after every run. Runs go one at a time (--jobs is paper_tables'); --nice N.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

from bench.paper_tables import (BENCH_CONFIG, QUALITIES, ROOT, BenchError, config_hash, default_cache,
                                parse_seeds, read_bench_config, read_results_file, run_bench, run_name, run_one,
                                select_setting_rows, table_parser, training_config)
from bench.real_videos import CROSS, REAL, per_video, prepare_real, score_run
from rccl.fileio import write_json, write_text

OUT_JSON = ROOT / "bench" / "results" / "sbi_tables.json"

# (setting, method, config)
ROWS = [
    ("sbi", "CE", "configs/sbi/ce.yaml"),
    ("sbi", "Sup. Con", "configs/sbi/supcon.yaml"),
    ("sbi", "Ours", "configs/sbi/ours.yaml"),
    ("true", "CE", "configs/tables/table2_xception.yaml"),
    ("true", "Sup. Con", "configs/tables/table2_supcon.yaml"),
    ("true", "Ours", "configs/tables/table2_ours.yaml"),
    ("mixed", "Ours", "configs/sbi/ours_mixed.yaml"),
    ("sbi+jpeg", "CE", "configs/sbi/ce.yaml"),
    ("sbi+jpeg", "Ours", "configs/sbi/ours.yaml"),
    ("sbi-sharp", "CE", "configs/sbi/ce.yaml"),
    ("sbi-sharp", "Ours", "configs/sbi/ours.yaml"),
]
SETTINGS = {"sbi": "naturals + self-blended pseudo-fakes (the set's fakes never seen)",
            "true": "naturals + the set's own fakes", "mixed": "naturals + the set's fakes + pseudo-fakes",
            "sbi+jpeg": "sbi, every training view JPEG-compressed with probability 0.5 (quality: the default "
                        "data.augment.jpeg_quality)",
            "sbi-sharp": "sbi, no pseudo-fake source loses resolution (data.blend_downscale_p=0: all sharpened)"}
# A setting's overrides on top of the budget's (the same budget: one key changes). Trained on raw, the sbi
# detectors call the set's compressed naturals fake (their TNR column); the diagnostics test two remedies:
# compressed training views, and pseudo-fakes that are never made by a resolution loss.
SETTING_OVERRIDES = {"sbi+jpeg": ["data.augment.jpeg_p=0.5"], "sbi-sharp": ["data.blend_downscale_p=0"]}


def row_overrides(setting: str, overrides: list[str]) -> list[str]:
    return list(overrides) + SETTING_OVERRIDES.get(setting, [])


def row_run_name(setting: str, config: str, seed: int) -> str:
    """The run folder: the config's stem (paper_tables' run_name), with the setting for one that has
    overrides (it shares its config file with an sbi row)."""
    name = run_name(config, seed)
    if setting in SETTING_OVERRIDES:
        stem, _, s = name.rpartition("-")
        name = f"{stem}-{''.join(c if c.isalnum() else '-' for c in setting)}-{s}"
    return name
def parse_only(values: list[str] | None) -> list[tuple[str, str, str]]:
    return select_setting_rows(values, ROWS)


def prepare_data(preset_name: str, cache: Path, log) -> Path:
    """The preset with landmarks, made and prepared once (its own folder: a paper_tables cache has none)."""
    from bench.paper_tables import data_key
    from rccl.data.synth import make_prepared

    folder = cache / data_key(preset_name).replace("paper-tables-", "sbi-tables-")
    t0 = time.perf_counter()
    manifest = make_prepared(folder, preset_name, progress=False, log=None)
    log(f"sbi_tables: data {manifest} ({time.perf_counter() - t0:.0f} s)")
    return Path(manifest)


def cross_scores(run_dir: Path, real: dict[str, Path], nice: int) -> dict[str, dict]:
    """{"NAME:VIDEO": {...}} for every video of the real samples that has crops (bench.real_videos)."""
    return per_video(score_run(run_dir, real, nice))


def load_results(path: Path) -> dict:
    return read_results_file(path, "sbi_tables", {"rows": []})


def merge_run(results: dict, setting: str, method: str, config: str, chash: str, seed: int, metrics: dict,
              videos: dict, wall: float, cpu: float) -> None:
    entry = next((r for r in results["rows"] if (r["setting"], r["method"]) == (setting, method)), None)
    if entry is None or entry["config_hash"] != chash:
        if entry is not None:
            results["rows"].remove(entry)
        entry = {"setting": setting, "method": method, "config": config, "config_hash": chash, "runs": {}}
        results["rows"].append(entry)
    entry["runs"][str(seed)] = {"metrics": metrics, "videos": videos, "seconds": round(wall, 1), "cpu_seconds": round(cpu, 1)}
    results["rows"].sort(key=lambda r: [(s, m) for s, m, _ in ROWS].index((r["setting"], r["method"])))


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    m = 100 * statistics.fmean(values)
    return f"{m:.2f}" if len(values) < 2 else f"{m:.2f} ± {100 * statistics.stdev(values):.2f}"


def render_markdown(results: dict, command: str) -> str:
    lines = ["# Self-blending on the synthetic compression set (bench/sbi_tables.py)", "",
             "Frame-level AUC (and video-level AUC) in percent on the set's test split, mean ± sd over the seeds (n);",
             "every row at the budget of bench/paper_tables.yaml. Settings: "
             + "; ".join(f"{k}: {v}" for k, v in SETTINGS.items()) + ".",
             f"Generated by `{command}`.", "",
             "TNR: the share of the test naturals called natural (fake probability < 0.5), mean over the seeds.", "",
             "| setting | method | n | AUC raw | AUC c23 | AUC c40 | video AUC raw | video AUC c40 | TNR raw/c23/c40 "
             "| CPU min/run |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in results["rows"]:
        runs = list(r["runs"].values())
        auc = {q: [x["metrics"][q]["auc"] for x in runs if x["metrics"][q].get("auc") is not None] for q in QUALITIES}
        vid = {q: [x["metrics"][q].get("video_auc") for x in runs if x["metrics"][q].get("video_auc") is not None]
               for q in ("raw", "c40")}
        tnr = {q: [x["metrics"][q]["tnr"] for x in runs if x["metrics"][q].get("tnr") is not None] for q in QUALITIES}
        tnr_cell = "/".join(f"{100 * statistics.fmean(tnr[q]):.0f}" if tnr[q] else "-" for q in QUALITIES)
        cpu = statistics.fmean(x["cpu_seconds"] for x in runs) / 60 if runs else 0
        lines.append(f"| {r['setting']} | {r['method']} | {len(runs)} | " + " | ".join(_mean_sd(auc[q]) for q in QUALITIES)
                     + f" | {_mean_sd(vid['raw'])} | {_mean_sd(vid['c40'])} | {tnr_cell} | {cpu:.1f} |")
    videos = sorted({v for r in results["rows"] for x in r["runs"].values() for v in x["videos"]})
    if videos:
        lines += ["", "## Cross-dataset: the real FF++ / DFDC samples, per video", "",
                  "Mean fake probability of a video's crops (mean over the seeds); label 1 = fake. Far too few "
                  "videos for an AUC: read each row as a score, not a rate.", "",
                  "| video | label | " + " | ".join(f"{r['setting']} {r['method']}" for r in results["rows"]) + " |",
                  "|---|---:|" + "---:|" * len(results["rows"])]
        for v in videos:
            label = next(x["videos"][v]["label"] for r in results["rows"] for x in r["runs"].values() if v in x["videos"])
            cells = []
            for r in results["rows"]:
                s = [x["videos"][v]["score"] for x in r["runs"].values() if v in x["videos"]]
                cells.append(f"{statistics.fmean(s):.3f}" if s else "-")
            lines.append(f"| {v} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write(results: dict, out: Path, command: str) -> None:
    write_json(out, results)
    write_text(out.with_suffix(".md"), render_markdown(results, command))


# ------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    p = table_parser("sbi_tables", __doc__, rows="SETTING[:METHOD]", rows_help="e.g. sbi, sbi:Ours, true:CE); default: all",
                     out=OUT_JSON, bench_config=BENCH_CONFIG, runs=ROOT / "runs" / "sbi_tables",
                     checkpoints_help="keep each run's checkpoints (~60 MB a run; bench/sbi_degrade.py needs them)")
    p.add_argument("--real", type=Path, default=REAL, help="the real samples' folder (default: %(default)s)")
    p.add_argument("--no-cross", action="store_true", help="skip the cross-dataset scores")
    p.add_argument("--list", action="store_true", help="print the rows and their commands; run nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_bench("sbi_tables", _main, args,
                     " ".join(["python -m bench.sbi_tables", *(argv if argv is not None else sys.argv[1:])]))


def _main(args, command: str) -> int:
    rows, seeds = parse_only(args.only), parse_seeds(args.seeds)
    preset_name, overrides = read_bench_config(args.bench_config)
    missing = [c for _, _, c in rows if not (ROOT / c).is_file()]
    if missing:
        raise BenchError(f"row configs not found: {', '.join(missing)}")
    hashes = {(s, c): config_hash(training_config(c, row_overrides(s, overrides)), f"sbi-tables-{preset_name}")
              for s, _, c in rows}
    if args.list:
        for setting, method, config in rows:
            cfg = training_config(config, row_overrides(setting, overrides))
            extra = " ".join(SETTING_OVERRIDES.get(setting, []))
            print(f"{setting}:{method:<9} {config}  data.fakes={cfg['data']['fakes']}{'  ' + extra if extra else ''}"
                  f"  hash {hashes[setting, config]}")
        print(f"budget: {args.bench_config} (preset {preset_name}); seeds {seeds}; then rccl-eval --manifest on "
              + ", ".join(f"{n} ({q}, splits {'/'.join(s)})" for n, _, _, q, s in CROSS))
        return 0
    cache = args.cache or default_cache()
    log = lambda m: print(m, flush=True)  # noqa: E731
    manifest = prepare_data(preset_name, cache, log)
    real = {} if args.no_cross else prepare_real(args.real, cache, log)
    results = load_results(args.out)
    for seed in seeds:
        for setting, method, config in rows:
            entry = next((r for r in results["rows"] if (r["setting"], r["method"]) == (setting, method)), None)
            chash = hashes[setting, config]
            if not args.force and entry and entry["config_hash"] == chash and str(seed) in entry["runs"]:
                continue
            label = f"{setting}:{method}"
            log(f"sbi_tables: {label} seed {seed} ...")
            name = row_run_name(setting, config, seed)
            metrics, wall, cpu = run_one(label, config, seed, row_overrides(setting, overrides), manifest, args.runs,
                                         args.nice, keep_checkpoints=True, name=name)
            run_dir = args.runs / name
            videos = cross_scores(run_dir, real, args.nice) if real else {}
            if not args.keep_checkpoints:
                shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
            merge_run(results, setting, method, config, chash, seed, metrics, videos, wall, cpu)
            write(results, args.out, command)
            log(f"sbi_tables: {label} seed {seed}: AUC raw {metrics['raw']['auc']:.3f}, c40 {metrics['c40']['auc']:.3f}"
                f" ({wall / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

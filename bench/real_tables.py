"""Real faces: the paper's Table 2 on real photographs and their face swaps, and detectors trained on the
real naturals alone (self-blending), tested on the swaps they never saw and on the real FF++/DFDC videos.

    python -m bench.real_tables                          every row, seeds 0,1,2 (rows/seeds in the JSON kept)
    python -m bench.real_tables --only swaps --seeds 0   one setting (or SETTING:METHOD), one seed
    python -m bench.real_tables --list                   the rows, their configs, hashes and what is recorded

Data (made once, cached; bench/real_tables.yaml names every setting): UTKFace's adults (ages 18-59) of
../shared/data/natural/utkface, `rccl-swap` (a seeded draw of `photos` targets, one donor each of the same
gender and race, splits 0.7 / 0.15 / 0.15), `rccl-prep --dataset folder` at the bench's crop size with
raw / c23 / c40 (an image's c23/c40: a one-frame H.264 copy by the videos' x264 path).

Rows (ROWS) by setting:
  swaps     Table 2 (configs/tables/table2_*.yaml): trained on the tree's natural photos and their swaps
  sbi       configs/sbi/*.yaml: trained on the same naturals alone (self-blended pseudo-fakes; the swaps never
            seen), the recipe the synthetic bench used
  real-sbi  configs/real/sbi.yaml (the recipe for real faces, docs/self_blending.md) with each loss.kind
  and diagnostic settings (SETTING_OVERRIDES): real-sbi with one part of the recipe undone, real-sbi 4ep at
  the recipe's first budget (half the stage-1 steps; its diagnostics were measured there), real-sbi 12ep
  (a longer stage 1), real-sbi 3x (three times the naturals at about the same steps), swaps x2 (twice the
  stage-1 steps), swaps t0.3 and swaps x2 t0.3 (the contrastive losses at temperature 0.3), swaps t0.3
  -margin / -hard / -mixed (the method at τ 0.3 without one part) and k4 (with 4 hard positives a class).
  A setting in SETTING_DATA trains and tests on its own tree (real-sbi 3x: 4,400 targets; `--list` prints its
  cache folder); the JSON's `data` names the bench's tree, and a row's config hash includes its own.
Every run is rccl-train (bench overrides on its config, evaluated on the tree's test split at raw / c23 /
c40), then, for a naturals-only row, the ten real sample videos through rccl-eval (bench.real_videos). The
swaps and sbi rows run at the budget of bench/real_tables.yaml; the real-sbi rows at their config's own
budget (the bench sets only what it must: data, seed, threads, evaluation). A row's seeds carry its config
hash: when the code, config, overrides or data change, they are stale and rerun.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import fcntl
import hashlib
import json
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

import yaml

from bench.paper_tables import (QUALITIES, ROOT, BenchError, config_hash, default_cache, parse_seeds,
                                read_results_file, run_bench, run_one, select_setting_rows,
                                table_parser, training_config)
from bench.real_videos import REAL, prepare_real, score_run, summarize
from rccl.fileio import write_json, write_text

BENCH_CONFIG = ROOT / "bench" / "real_tables.yaml"
OUT_JSON = ROOT / "bench" / "results" / "real_tables.json"
UTKFACE = ROOT.parent / "shared" / "data" / "natural" / "utkface"

ROWS = [
    ("swaps", "CE", "configs/tables/table2_xception.yaml"),
    ("swaps", "Sup. Con", "configs/tables/table2_supcon.yaml"),
    ("swaps", "Ours", "configs/tables/table2_ours.yaml"),
    ("sbi", "CE", "configs/sbi/ce.yaml"),
    ("sbi", "Sup. Con", "configs/sbi/supcon.yaml"),
    ("sbi", "Ours", "configs/sbi/ours.yaml"),
    ("real-sbi", "CE", "configs/real/sbi.yaml"),
    ("real-sbi", "Sup. Con", "configs/real/sbi.yaml"),
    ("real-sbi", "Ours", "configs/real/sbi.yaml"),
    ("real-sbi -jpeg", "CE", "configs/real/sbi.yaml"),
    ("real-sbi -c23", "CE", "configs/real/sbi.yaml"),
    ("real-sbi 12ep", "CE", "configs/real/sbi.yaml"),
    ("real-sbi 3x", "CE", "configs/real/sbi.yaml"),
    ("real-sbi -target", "CE", "configs/real/sbi.yaml"),
    ("real-sbi 4ep", "CE", "configs/real/sbi.yaml"),
    ("real-sbi 4ep", "Sup. Con", "configs/real/sbi.yaml"),
    ("real-sbi 4ep", "Ours", "configs/real/sbi.yaml"),
    ("real-sbi 4ep -target", "CE", "configs/real/sbi.yaml"),
    ("real-sbi 4ep t0.1", "Ours", "configs/real/sbi.yaml"),
    ("real-sbi 4ep -blur", "CE", "configs/real/sbi.yaml"),
    ("swaps x2", "CE", "configs/tables/table2_xception.yaml"),
    ("swaps x2", "Ours", "configs/tables/table2_ours.yaml"),
    ("swaps t0.3", "Sup. Con", "configs/tables/table2_supcon.yaml"),
    ("swaps t0.3", "Ours", "configs/tables/table2_ours.yaml"),
    ("swaps t0.3 -margin", "Ours", "configs/tables/table2_ours.yaml"),
    ("swaps t0.3 -hard", "Ours", "configs/tables/table2_ours.yaml"),
    ("swaps t0.3 -mixed", "Ours", "configs/tables/table2_ours.yaml"),
    ("swaps t0.3 k4", "Ours", "configs/tables/table2_ours.yaml"),
    ("swaps x2 t0.3", "Sup. Con", "configs/tables/table2_supcon.yaml"),
    ("swaps x2 t0.3", "Ours", "configs/tables/table2_ours.yaml"),
    ("swaps x2 t0.3 -hard", "Ours", "configs/tables/table2_ours.yaml"),
    ("swaps x2 t0.3 k4", "Ours", "configs/tables/table2_ours.yaml"),
]
SETTINGS = {"swaps": "naturals + their face swaps (Table 2 configs, the bench's budget)",
            "sbi": "the naturals alone, configs/sbi (the synthetic bench's recipe), the bench's budget",
            "real-sbi": "the naturals alone, configs/real/sbi at its own budget (8 stage-1 epochs)",
            "real-sbi -jpeg": "real-sbi, no JPEG training views (data.augment.jpeg_p=0)",
            "real-sbi -c23": "real-sbi, trained on the raw naturals only (data.train_qualities=[raw])",
            "real-sbi 12ep": "real-sbi with 1.5x its stage-1 steps (stage1.epochs=12): does a longer schedule help?",
            "real-sbi 3x": "real-sbi on 3x the naturals (its own tree: 4,400 targets, about 3,070 training naturals) for "
                           "3 stage-1 epochs (about the same steps): do more people help the videos?",
            "real-sbi -target": "real-sbi, every jitter on the source (data.blend_target_p=0)",
            "real-sbi 4ep": "real-sbi at half its steps (stage1.epochs=4: the recipe's first budget)",
            "real-sbi 4ep -target": "real-sbi 4ep, every jitter on the source (data.blend_target_p=0)",
            "real-sbi 4ep t0.1": "real-sbi 4ep at the paper's temperature (loss.temperature=0.1)",
            "real-sbi 4ep -blur": "real-sbi 4ep without the whole-view Gaussian blur (data.augment.blur_p=0)",
            "swaps t0.3": "swaps at temperature 0.3 (loss.temperature=0.3; the paper's 0.1): does every seed learn?",
            "swaps t0.3 -margin": "swaps t0.3, the method without its margin (loss.margin=0)",
            "swaps t0.3 -hard": "swaps t0.3, the method without its hard positives (loss.bank_size=0)",
            "swaps t0.3 -mixed": "swaps t0.3, the method without its mixed negatives (loss.negatives=0)",
            "swaps t0.3 k4": "swaps t0.3, the method with 4 hard positives a class (loss.bank_size=4): the paper's "
                             "share of an anchor's positives (16 of 16 + 63 at batch 128; 4 of 4 + 15 at 32)",
            "swaps x2 t0.3": "swaps at temperature 0.3 with twice the stage-1 steps (both overrides above)",
            "swaps x2 t0.3 -hard": "swaps x2 t0.3, the method without its hard positives (loss.bank_size=0)",
            "swaps x2 t0.3 k4": "swaps x2 t0.3, the method with 4 hard positives a class (loss.bank_size=4)",
            "swaps x2": "swaps with twice the stage-1 steps (stage1.epochs=8): does the method's stage 1 learn?"}
HALF = "stage1.epochs=4"
SETTING_OVERRIDES = {"real-sbi -jpeg": ["data.augment.jpeg_p=0"], "real-sbi -c23": ["data.train_qualities=[raw]"],
                     "real-sbi 12ep": ["stage1.epochs=12"], "real-sbi 3x": ["stage1.epochs=3"], "real-sbi -target": ["data.blend_target_p=0"],
                     "real-sbi 4ep": [HALF], "real-sbi 4ep -target": ["data.blend_target_p=0", HALF],
                     "real-sbi 4ep t0.1": ["loss.temperature=0.1", HALF],
                     "real-sbi 4ep -blur": ["data.augment.blur_p=0", HALF], "swaps x2": ["stage1.epochs=8"],
                     "swaps t0.3": ["loss.temperature=0.3"],
                     "swaps t0.3 -margin": ["loss.temperature=0.3", "loss.margin=0"],
                     "swaps t0.3 -hard": ["loss.temperature=0.3", "loss.bank_size=0"],
                     "swaps t0.3 -mixed": ["loss.temperature=0.3", "loss.negatives=0"],
                     "swaps t0.3 k4": ["loss.temperature=0.3", "loss.bank_size=4"],
                     "swaps x2 t0.3": ["stage1.epochs=8", "loss.temperature=0.3"],
                     "swaps x2 t0.3 -hard": ["stage1.epochs=8", "loss.temperature=0.3", "loss.bank_size=0"],
                     "swaps x2 t0.3 k4": ["stage1.epochs=8", "loss.temperature=0.3", "loss.bank_size=4"]}
# the settings trained on another data set than bench/real_tables.yaml's (its `data` with these keys replaced)
SETTING_DATA = {"real-sbi 3x": {"photos": 4400}}
KIND = {"CE": "ce", "Sup. Con": "supcon", "Ours": "rccl"}
# what every real-sbi run gets from the bench: its own data and evaluation, one thread and no loader workers
# (two runs share 2 cores; the views are seeded per item, so workers change no number)
REAL_SBI_OVERRIDES = ["train.threads=1", "data.workers=0", "train.progress=false", "train.keep_epochs=1", "eval.qualities=[raw, c23, c40]"]


def read_bench_config(path: Path) -> tuple[dict, list[str]]:
    """(the data settings, the training overrides of the swaps and sbi rows) from bench/real_tables.yaml."""
    from bench.paper_tables import flatten_overrides

    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(cfg, dict) or not isinstance(cfg.get("data"), dict) or not isinstance(cfg.get("overrides"), dict):
        raise BenchError(f"{path}: expected the keys 'data' (the tree's settings) and 'overrides'")
    return cfg["data"], list(flatten_overrides(cfg["overrides"]))


def row_overrides(setting: str, method: str, overrides: list[str]) -> list[str]:
    if setting.startswith("real-sbi"):
        return [*REAL_SBI_OVERRIDES, f"loss.kind={KIND[method]}", *SETTING_OVERRIDES.get(setting, [])]
    return [*overrides, *SETTING_OVERRIDES.get(setting, [])]


def setting_data(settings: dict, setting: str) -> dict:
    """The data settings a setting trains and tests on: bench/real_tables.yaml's unless SETTING_DATA says."""
    return {**settings, **SETTING_DATA.get(setting, {})}


def row_run_name(setting: str, method: str, seed: int) -> str:
    return f"{re.sub('[^a-z0-9]+', '-', (setting + ' ' + method).lower()).strip('-')}-s{seed}"


def parse_only(values: list[str] | None) -> list[tuple[str, str, str]]:
    return select_setting_rows(values, ROWS)


# ------------------------------------------------------------------------------------------ data
def utkface_adults(folder: Path, ages=(18, 59)) -> list[Path]:
    """UTKFace's photos of people aged ages[0]..ages[1] (its file names: AGE_GENDER_RACE_DATETIME...)."""
    photos = sorted(p for p in folder.rglob("*.jpg") if re.match(r"^\d+_\d_\d_", p.name))
    if not photos:
        raise BenchError(f"{folder}: no UTKFace photos (AGE_GENDER_RACE_DATETIME.jpg.chip.jpg) found")
    return [p for p in photos if ages[0] <= int(p.name.split("_")[0]) <= ages[1]]


def data_key(settings: dict, prefix: str = "real-tables-") -> str:
    """The data set's identity: a hash of its settings (the cache folder's name; part of every config hash)."""
    text = json.dumps(settings, sort_keys=True)
    return prefix + hashlib.sha1(text.encode()).hexdigest()[:8]


def prepare_data(settings: dict, cache: Path, log, utkface: Path = UTKFACE) -> Path:
    """The swap tree (made once per tree settings) and its crops (once per crop size); returns the manifest."""
    from rccl.data.prep import prepare
    from rccl.data.swap import SwapSettings, make_swap_tree

    tree = cache / data_key({k: v for k, v in settings.items() if k != "crop_size"}, "real-tables-tree-")
    prep = cache / data_key(settings)
    if not (tree / "swap_report.json").is_file():
        tree.mkdir(parents=True, exist_ok=True)
        photos = utkface_adults(utkface, tuple(settings["ages"]))
        listing = cache / f"{tree.name}-photos.txt"
        write_text(listing, "".join(f"{p}\n" for p in photos))
        t0 = time.perf_counter()
        make_swap_tree(listing, tree, SwapSettings(swaps=1, fractions=tuple(settings["splits"]), seed=settings["seed"],
                                                  limit=settings["photos"], pair_within=settings["pair_within"]),
                       workers=2, overwrite=True, progress=False)
        log(f"real_tables: swap tree {tree} ({time.perf_counter() - t0:.0f} s)")
    t0 = time.perf_counter()
    manifest = prepare("folder", tree, prep, qualities=QUALITIES, crop_size=settings["crop_size"], progress=False,
                       log=None)
    log(f"real_tables: data {manifest} ({time.perf_counter() - t0:.0f} s)")
    return Path(manifest)


# ------------------------------------------------------------------------------------------ results
def load_results(path: Path) -> dict:
    return read_results_file(path, "real_tables", {"rows": []})


def merge_run(results: dict, setting: str, method: str, config: str, chash: str, seed: int, metrics: dict,
              real: dict | None, wall: float, cpu: float) -> None:
    """One run into its row; a row recorded with another config hash is replaced (its seeds are stale)."""
    entry = next((r for r in results["rows"] if (r["setting"], r["method"]) == (setting, method)), None)
    if entry is None or entry["config_hash"] != chash:
        if entry is not None:
            results["rows"].remove(entry)
        entry = {"setting": setting, "method": method, "config": config, "config_hash": chash, "runs": {}}
        results["rows"].append(entry)
    entry["runs"][str(seed)] = {"metrics": metrics, "real": real, "seconds": round(wall, 1), "cpu_seconds": round(cpu, 1)}
    order = [(s, m) for s, m, _ in ROWS]
    results["rows"].sort(key=lambda r: order.index((r["setting"], r["method"])) if (r["setting"], r["method"]) in order
                         else len(order))


def _pct(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    m = 100 * statistics.fmean(values)
    return f"{m:.1f}" if len(values) < 2 else f"{m:.1f} ± {100 * statistics.stdev(values):.1f}"


def _plain(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{statistics.fmean(values):.2f}" + (f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else "")


def _metric(runs: list[dict], q: str, key: str) -> list:
    return [x["metrics"][q].get(key) for x in runs]


def render_markdown(results: dict, command: str, hashes: dict | None = None) -> str:
    stale = {(r["setting"], r["method"]) for r in results["rows"]
             if hashes and (r["setting"], r["method"]) in hashes and hashes[r["setting"], r["method"]] != r["config_hash"]}
    lines = ["# Real faces (bench/real_tables.py)", "",
             f"Data: {results.get('data', '?')}. Trained on the tree's train split, tested on its test split (natural "
             "photos and face swaps) at raw / c23 / c40: frame AUC and TNR (naturals called natural at 0.5) in "
             "percent, mean ± sd over the seeds (n). Settings: " + "; ".join(f"{k}: {v}" for k, v in SETTINGS.items())
             + ".", "Stage-1 loss: mean of its first and last epoch (its value at identical embeddings, the collapse "
             "point); class gap: of the raw test crops' projections.", f"Generated by `{command}`.", ""]
    if stale:
        lines += [f"**Stale rows**: {', '.join(f'{s}:{m}' for s, m in sorted(stale))} were measured with another "
                  "config hash than the code gives now.", ""]
    lines += ["| setting | method | n | AUC raw | AUC c23 | AUC c40 | raw→c40 drop | TNR raw/c23/c40 "
              "| stage-1 loss first → last (collapsed) | class gap | CPU min/run |",
              "|---|---|---:|---:|---:|---:|---:|---|---|---:|---:|"]
    for r in results["rows"]:
        runs = list(r["runs"].values())
        auc = {q: _metric(runs, q, "auc") for q in QUALITIES}
        drop = [a - b for a, b in zip(auc["raw"], auc["c40"])]
        tnr = "/".join(f"{100 * statistics.fmean(v):.0f}" if (v := [x for x in _metric(runs, q, "tnr") if x is not None])
                       else "-" for q in QUALITIES)
        s1 = [x["metrics"].get("stage1", {}) for x in runs]
        loss = "-"
        if any(s.get("loss_first") is not None for s in s1):
            collapsed = [s.get("collapsed_loss") for s in s1]
            loss = (f"{_plain([s.get('loss_first') for s in s1])} → {_plain([s.get('loss_last') for s in s1])}"
                    + (f" ({_plain(collapsed)})" if any(c is not None for c in collapsed) else ""))
        cpu = statistics.fmean(x["cpu_seconds"] for x in runs) / 60
        name = r["method"] + (" (stale)" if (r["setting"], r["method"]) in stale else "")
        lines.append(f"| {r['setting']} | {name} | {len(runs)} | " + " | ".join(_pct(auc[q]) for q in QUALITIES)
                     + f" | {_pct(drop)} | {tnr} | {loss} | {_plain(_metric(runs, 'raw', 'class_gap'))} | {cpu:.1f} |")
    lines += paired_lines(results)
    lines += real_video_lines(results)
    return "\n".join(lines) + "\n"


PAIRS = ((("swaps", "Ours"), ("swaps", "Sup. Con")), (("swaps", "Ours"), ("swaps", "CE")),
         (("swaps", "Sup. Con"), ("swaps", "CE")),
         # the method with twice the stage-1 steps against the baselines at theirs (a diagnostic: not one budget)
         (("swaps x2", "Ours"), ("swaps", "CE")), (("swaps x2", "Ours"), ("swaps", "Sup. Con")),
         # the contrastive losses at temperature 0.3: the method against CE at the same number of steps
         (("swaps t0.3", "Ours"), ("swaps", "CE")), (("swaps t0.3", "Ours"), ("swaps t0.3", "Sup. Con")),
         (("swaps t0.3 -margin", "Ours"), ("swaps t0.3", "Ours")), (("swaps t0.3 -hard", "Ours"), ("swaps t0.3", "Ours")),
         (("swaps t0.3 -mixed", "Ours"), ("swaps t0.3", "Ours")), (("swaps t0.3 k4", "Ours"), ("swaps t0.3", "Ours")),
         (("swaps t0.3 k4", "Ours"), ("swaps", "CE")), (("swaps t0.3 k4", "Ours"), ("swaps t0.3", "Sup. Con")),
         (("swaps t0.3 -hard", "Ours"), ("swaps", "CE")), (("swaps t0.3 -hard", "Ours"), ("swaps t0.3", "Sup. Con")),
         (("swaps x2 t0.3", "Ours"), ("swaps x2", "CE")),
         (("swaps x2 t0.3", "Ours"), ("swaps x2 t0.3", "Sup. Con")), (("swaps x2 t0.3", "Sup. Con"), ("swaps x2", "CE")),
         (("swaps x2", "CE"), ("swaps", "CE")),
         # the method without its hard positives at 8 epochs, against the baselines at the same steps
         (("swaps x2 t0.3 -hard", "Ours"), ("swaps x2", "CE")),
         (("swaps x2 t0.3 -hard", "Ours"), ("swaps x2 t0.3", "Sup. Con")),
         (("swaps x2 t0.3 -hard", "Ours"), ("swaps x2 t0.3", "Ours")),
         (("swaps x2 t0.3 k4", "Ours"), ("swaps x2", "CE")), (("swaps x2 t0.3 k4", "Ours"), ("swaps x2 t0.3", "Sup. Con")))


def paired_lines(results: dict) -> list[str]:
    """Per-seed AUC differences of the Table-2 rows (same seed, same data: shared noise), with whether they
    separate: the same sign in every seed and a mean larger than the seeds' sd."""
    rows = {(r["setting"], r["method"]): r for r in results["rows"]}
    out = ["", "## Table 2 on real faces, paired by seed", "",
           "AUC difference A − B in points per seed (mean ± sd); 'separates': the same sign in every seed and "
           "|mean| > sd.", "", "| A − B | raw | c23 | c40 |", "|---|---|---|---|"]
    for a, b in PAIRS:
        ra, rb = rows.get(a), rows.get(b)
        if not ra or not rb:
            continue
        seeds = sorted(set(ra["runs"]) & set(rb["runs"]), key=int)
        if not seeds:
            continue
        cells = []
        for q in QUALITIES:
            d = [100 * (ra["runs"][s]["metrics"][q]["auc"] - rb["runs"][s]["metrics"][q]["auc"]) for s in seeds]
            sd = statistics.stdev(d) if len(d) > 1 else 0.0
            sep = len(d) > 1 and (all(x > 0 for x in d) or all(x < 0 for x in d)) and abs(statistics.fmean(d)) > sd
            cells.append(" / ".join(f"{x:+.1f}" for x in d) + f" (mean {statistics.fmean(d):+.1f}"
                         + (f" ± {sd:.1f}" if len(d) > 1 else "") + (", separates" if sep else "") + ")")
        name = (f"{a[1]} − {b[1]}" if a[0] == b[0] == "swaps" else
                f"{a[0]}: {a[1]} − {b[1]}" if a[0] == b[0] else f"{a[0]} {a[1]} − {b[0]} {b[1]}")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out


def real_video_lines(results: dict) -> list[str]:
    rows = [r for r in results["rows"] if any(x.get("real") for x in r["runs"].values())]
    if not rows:
        return []
    out = ["", "## The ten real FF++ / DFDC sample videos (bench/real_videos.py)", "",
           "Frame AUC over their 160 crops, natural TNR per frame at 0.5, and each video's mean fake probability "
           "(mean over the seeds). Too few videos for a video-level AUC. Seeds in which the 4 natural videos' mean "
           "score is below the mean score of every fake method (Deepfakes, FaceSwap, Face2Face, NeuralTextures, "
           "DFDC), and in which every natural video is.", "",
           "| setting | method | n | frame AUC | natural TNR | naturals' mean below every method (seeds) | "
           "every natural below every method (seeds) |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        real = [x["real"] for x in r["runs"].values() if x.get("real")]
        mean_below = sum(bool(x.get("method_means")) and x.get("natural_video_mean") is not None
                         and x["natural_video_mean"] < min(x["method_means"].values()) for x in real)
        below = sum(bool(x["naturals_below_every_method"]) for x in real)
        out.append(f"| {r['setting']} | {r['method']} | {len(real)} | {_pct([x['frame_auc'] for x in real])} | "
                   f"{_pct([x['natural_tnr'] for x in real])} | {mean_below}/{len(real)} | {below}/{len(real)} |")
    videos = sorted({v for r in rows for x in r["runs"].values() if x.get("real") for v in x["real"]["videos"]})
    out += ["", "| video | label | " + " | ".join(f"{r['setting']} {r['method']}" for r in rows) + " |",
            "|---|---:|" + "---:|" * len(rows)]
    for v in videos:
        label = next(x["real"]["videos"][v]["label"] for r in rows for x in r["runs"].values()
                     if x.get("real") and v in x["real"]["videos"])
        cells = []
        for r in rows:
            s = [x["real"]["videos"][v]["score"] for x in r["runs"].values() if x.get("real") and v in x["real"]["videos"]]
            cells.append(f"{statistics.fmean(s):.3f}" if s else "-")
        out.append(f"| {v} | {label} | " + " | ".join(cells) + " |")
    return out


@contextlib.contextmanager
def locked(out: Path):
    """An exclusive flock on OUT.lock: bench processes sharing one results file record their runs in turn."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write(results: dict, out: Path, command: str, hashes: dict | None = None) -> None:
    write_json(out, results)
    write_text(out.with_suffix(".md"), render_markdown(results, command, hashes))


# ------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    p = table_parser("real_tables", __doc__, rows="SETTING[:METHOD]", rows_help="e.g. swaps, real-sbi:Ours); default: all",
                     out=OUT_JSON, bench_config=BENCH_CONFIG, runs=ROOT / "runs" / "real_tables",
                     checkpoints_help="keep each run's checkpoints (bench/sbi_degrade.py needs them)")
    p.add_argument("--real", type=Path, default=REAL, help="the real sample videos (default: %(default)s)")
    p.add_argument("--utkface", type=Path, default=UTKFACE, help="UTKFace's folder (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=2, help="runs at once, one thread each (default: %(default)s)")
    p.add_argument("--crop-size", type=int, default=None,
                   help="prepare the tree at this crop size and train the swaps/sbi rows at it (the crop-size "
                        "measurement): another data set, so give --out too")
    p.add_argument("--list", action="store_true", help="print the rows, hashes and what is recorded; run nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_bench("real_tables", _main, args,
                     " ".join(["python -m bench.real_tables", *(argv if argv is not None else sys.argv[1:])]))


def _main(args, command: str) -> int:
    rows, seeds = parse_only(args.only), parse_seeds(args.seeds)
    if args.jobs < 1:
        raise BenchError(f"--jobs {args.jobs}: give at least 1")
    settings, overrides = read_bench_config(args.bench_config)
    if args.crop_size is not None:
        if args.out == OUT_JSON:
            raise BenchError("--crop-size makes another data set: give --out FILE (the default JSON holds the "
                             f"{settings['crop_size']} px results)")
        settings = {**settings, "crop_size": args.crop_size}
        overrides = [*overrides, f"data.image_size={args.crop_size}"]
    missing = [c for _, _, c in rows if not (ROOT / c).is_file()]
    if missing:
        raise BenchError(f"row configs not found: {', '.join(missing)}")
    key = data_key(settings)
    hashes = {(s, m): config_hash(training_config(c, row_overrides(s, m, overrides)), data_key(setting_data(settings, s)))
              for s, m, c in ROWS}
    results = load_results(args.out)
    if args.list:
        for setting, method, config in rows:
            entry = next((r for r in results["rows"] if (r["setting"], r["method"]) == (setting, method)), None)
            recorded = "not recorded" if entry is None else f"seeds {sorted(entry['runs'], key=int)}" + (
                "" if entry["config_hash"] == hashes[setting, method] else f" STALE (recorded {entry['config_hash']})")
            extra = " ".join(row_overrides(setting, method, overrides) if setting.startswith("real-sbi") else [])
            print(f"{setting}:{method:<9} {config}  hash {hashes[setting, method]}  {recorded}"
                  + (f"  [{extra}]" if extra else ""))
        print(f"data: {settings} -> cache folder {key}")
        for setting, changed in SETTING_DATA.items():
            print(f"data of {setting}: {changed} -> cache folder {data_key(setting_data(settings, setting))}")
        return 0
    cache = (args.cache or default_cache()).expanduser()
    log = lambda m: print(m, flush=True)  # noqa: E731
    results["data"] = f"{settings} ({key})"
    units = []
    for seed in seeds:
        for setting, method, config in rows:
            entry = next((r for r in results["rows"] if (r["setting"], r["method"]) == (setting, method)), None)
            if args.force or not (entry and entry["config_hash"] == hashes[setting, method] and str(seed) in entry["runs"]):
                units.append((setting, method, config, seed))
    manifests = {}  # each data set the runs need, made before they start in parallel
    for data in (setting_data(settings, setting) for setting in dict.fromkeys(u[0] for u in units)):
        if data_key(data) not in manifests:
            manifests[data_key(data)] = prepare_data(data, cache, log, args.utkface)
    real = None
    if any(not u[0].startswith("swaps") for u in units):  # prepared once, before the runs start in parallel
        real = prepare_real(args.real, cache, log, settings["crop_size"])

    def job(unit):
        setting, method, config, seed = unit
        label, name = f"{setting}:{method}", row_run_name(setting, method, seed)
        log(f"real_tables: {label} seed {seed} ...")
        manifest = manifests[data_key(setting_data(settings, setting))]
        metrics, wall, cpu = run_one(label, config, seed, row_overrides(setting, method, overrides), manifest,
                                     args.runs, args.nice, keep_checkpoints=True, name=name)
        videos = None if setting.startswith("swaps") else summarize(score_run(args.runs / name, real, args.nice))
        if not args.keep_checkpoints:
            shutil.rmtree(args.runs / name / "checkpoints", ignore_errors=True)
        return metrics, videos, wall, cpu

    failures = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(job, unit): unit for unit in units}
        for future in concurrent.futures.as_completed(futures):
            setting, method, config, seed = futures[future]
            try:
                metrics, videos, wall, cpu = future.result()
            except BenchError as e:
                failures += 1
                log(f"real_tables: {e}")
                continue
            with locked(args.out):  # another bench process may have recorded runs since this one started
                results = {**load_results(args.out), "data": results["data"]}
                merge_run(results, setting, method, config, hashes[setting, method], seed, metrics, videos, wall, cpu)
                write(results, args.out, command, hashes)
            log(f"real_tables: {setting}:{method} seed {seed}: AUC raw {metrics['raw']['auc']:.3f}, c40 "
                f"{metrics['c40']['auc']:.3f}" + (f", real videos frame AUC {videos['frame_auc']:.3f}, natural TNR "
                                                  f"{videos['natural_tnr']:.2f}" if videos else "")
                + f" ({wall / 60:.1f} min)")
    with locked(args.out):
        write({**load_results(args.out), "data": results["data"]}, args.out, command, hashes)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Regenerate the rows of the paper's Tables 2-6 at demo scale, trained on raw and tested on raw/c23/c40.

    python -m bench.paper_tables                          every row, seeds 0,1,2 (rows/seeds already in
                                                          the JSON are kept; --force reruns them)
    python -m bench.paper_tables --only 2:Ours --only "2:Sup. Con" --seeds 0,1,2
    python -m bench.paper_tables --only 2:Xception --seeds 0 --verify   rerun, compare with the JSON
    python -m bench.paper_tables --list                   the rows, their configs and which rows share a run
    python -m bench.paper_tables --only 2:Xception --synth-set seam_scale=2 --out /tmp/v/pt.json
                                                          on a variant of the preset's fakes (own --out)

Each row is its shipped config (configs/tables/table*_*.yaml, on the paper's base configs/celebdf.yaml)
with the demo-scale overrides of bench/paper_tables.yaml (encoder, input size, budget), on the rccl-synth
preset that file names (made and prepared once, cached). Every run is a subprocess of the public CLI
(`python -m rccl.cli.train --config ROW KEY=VALUE...`), its log in RUNS/NAME.log; its frame- and
video-level metrics are read from RUN/metrics.json.

Rows whose resolved training configs are identical (the paper's own numbers say so for e.g. Table 2
"Sup. Con" = Table 3 "Instance-level" = Table 5/6 "Sup. Con") are ONE run per seed: the bench hashes each
row's resolved config (its config file, the bench overrides, the data set; not the run's name) and runs a
hash once, reported in every row that has it; those rows say `"same_as": "TABLE:ROW"` (the first row of the
paper's order with that config). A row's recorded seeds carry that hash: when the config, the overrides or
the data set change, its old seeds are stale and are rerun.

`--jobs N` (default 2) runs N trainings at once, each on `train.threads` (bench/paper_tables.yaml: 1)
torch thread(s): on 2 cores two one-thread runs finish sooner than two two-thread runs in a row (the
demo-scale model's small ops do not scale to two threads, and one-thread runs are steadier). `--lock FILE`
holds a shared flock on FILE during each run (the machine's CPU lock). Every run records its wall and CPU
seconds; after each run the JSON (bench/results/paper_tables.json) and the markdown beside it are
rewritten, so an interrupted bench keeps what it measured and a later call (another --only, other
--seeds) adds to it.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import csv
import fcntl
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from rccl.errors import RcclError
from rccl.fileio import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
BENCH_CONFIG = ROOT / "bench" / "paper_tables.yaml"
OUT_JSON = ROOT / "bench" / "results" / "paper_tables.json"
QUALITIES = ("raw", "c23", "c40")
REPRO_TOLERANCE = 0.02  # |AUC difference| a rerun of a row with the same seed may show (thread scheduling)

# (table, the paper's row name, config file). Tables 3-6 in the paper report TPR/FPR/ACC only.
ROWS = [
    ("2", "Xception", "configs/tables/table2_xception.yaml"),
    ("2", "Sup. Con", "configs/tables/table2_supcon.yaml"),
    ("2", "Ours", "configs/tables/table2_ours.yaml"),
    # Controls (not paper rows): Table 2's contrastive rows with one of the bench's two changes undone
    ("2c", "Sup. Con, paper projector", "configs/tables/table2_supcon.yaml"),
    ("2c", "Ours, paper projector", "configs/tables/table2_ours.yaml"),
    ("2c", "Sup. Con, from scratch", "configs/tables/table2_supcon.yaml"),
    ("2c", "Ours, from scratch", "configs/tables/table2_ours.yaml"),
    ("3", "Instance-level", "configs/tables/table3_instance.yaml"),
    ("3", "Temporal-level", "configs/tables/table3_temporal.yaml"),
    ("3", "Forgery semantical", "configs/tables/table3_semantic.yaml"),
    ("3", "Class-level", "configs/tables/table3_class.yaml"),
    ("4", "Linear", "configs/tables/table4_linear.yaml"),
    ("4", "Linear + smooth", "configs/tables/table4_linear_smooth.yaml"),
    ("4", "Smooth", "configs/tables/table4_smooth.yaml"),
    ("5", "Sup. Con", "configs/tables/table5_supcon.yaml"),
    ("5", "+ 32 pos.", "configs/tables/table5_pos32.yaml"),
    ("5", "+ 32 pos., 16 neg.", "configs/tables/table5_pos32_neg16.yaml"),
    ("5", "+ 32 pos., 32 neg.", "configs/tables/table5_pos32_neg32.yaml"),
    ("6", "Sup. Con", "configs/tables/table6_supcon.yaml"),
    ("6", "As fakes", "configs/tables/table6_as_fakes.yaml"),
    ("6", "As negatives", "configs/tables/table6_as_negatives.yaml"),
]
# What a control row changes, applied after the bench's overrides: the paper's projector (no output batch
# norm) on the pretrained encoder, or the chosen projector on the same encoder from random weights.
SCRATCH = ["model.weights=null", "model.pretrained=false", "model.allow_scratch=true"]
ROW_OVERRIDES = {
    "2c:Sup. Con, paper projector": ["model.proj_out_bn=false"],
    "2c:Ours, paper projector": ["model.proj_out_bn=false"],
    "2c:Sup. Con, from scratch": SCRATCH,
    "2c:Ours, from scratch": SCRATCH,
}

# The paper's numbers (Celeb-DF-v2, Xception at 299 px, trained on raw), in percent: AUC where the paper
# gives it (Table 2 only), ACC for every row. Read from the paper's Tables 2-6.
PAPER = {
    ("2", "Xception"): {"auc": (99.45, 99.03, 78.99), "acc": (97.12, 95.68, 44.10)},
    ("2", "Sup. Con"): {"auc": (99.79, 99.56, 73.03), "acc": (97.82, 96.99, 47.87)},
    ("2", "Ours"): {"auc": (99.86, 99.66, 78.44), "acc": (97.67, 97.09, 51.27)},
    ("3", "Instance-level"): {"acc": (97.8, 97.0, 47.9)},
    ("3", "Temporal-level"): {"acc": (98.4, 97.5, 44.6)},
    ("3", "Forgery semantical"): {"acc": (97.9, 97.2, 50.5)},
    ("3", "Class-level"): {"acc": (96.3, 94.8, 57.6)},
    ("4", "Linear"): {"acc": (97.2, 96.5, 51.7)},
    ("4", "Linear + smooth"): {"acc": (96.9, 96.0, 55.3)},
    ("4", "Smooth"): {"acc": (97.4, 96.5, 50.7)},
    ("5", "Sup. Con"): {"acc": (97.8, 97.0, 47.9)},
    ("5", "+ 32 pos."): {"acc": (97.6, 96.8, 49.2)},
    ("5", "+ 32 pos., 16 neg."): {"acc": (97.4, 96.5, 50.7)},
    ("5", "+ 32 pos., 32 neg."): {"acc": (97.1, 96.5, 52.9)},
    ("6", "Sup. Con"): {"acc": (97.8, 97.0, 47.9)},
    ("6", "As fakes"): {"acc": (96.7, 95.3, 46.8)},
    ("6", "As negatives"): {"acc": (97.4, 96.5, 50.7)},
}


class BenchError(RcclError, ValueError):
    """A request the bench cannot run (unknown row, missing config, unreadable results file)."""


# ------------------------------------------------------------------------------------------ arguments
def parse_only(values: list[str] | None) -> list[tuple[str, str, str]]:
    """--only TABLE:ROW (repeatable, or comma-separated where a row name has no comma) -> ROWS entries.
    A bare TABLE selects all its rows."""
    if not values:
        return list(ROWS)
    picked = []
    for value in values:
        parts = [value] if _is_row(value) else [p.strip() for p in value.split(",") if p.strip()]
        for part in parts:
            table, sep, row = part.partition(":")
            match = [r for r in ROWS if r[0] == table.strip() and (not sep or r[1] == row.strip())]
            if not match:
                known = "; ".join(f"{t}:{n}" for t, n, _ in ROWS)
                raise BenchError(f"--only {part!r}: no such row (TABLE:ROW, the paper's names: {known})")
            picked += [r for r in match if r not in picked]
    return picked


def _is_row(text: str) -> bool:
    table, _, row = text.partition(":")
    return any(t == table.strip() and n == row.strip() for t, n, _ in ROWS)


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise BenchError(f"--seeds {text!r}: expected integers separated by commas, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise BenchError(f"--seeds {text!r}: give distinct seeds, e.g. 0,1,2")
    return seeds


# ------------------------------------------------------------------------------------------ setup
def read_bench_config(path: Path) -> tuple[str, list[str]]:
    """(synth preset name, KEY=VALUE overrides) from bench/paper_tables.yaml."""
    if not path.is_file():
        raise BenchError(f"bench config {path}: no such file")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data.get("synth"), str) or not isinstance(data.get("overrides"), dict):
        raise BenchError(f"bench config {path}: needs 'synth: PRESET' and an 'overrides:' mapping")
    return data["synth"], list(flatten_overrides(data["overrides"]))


def flatten_overrides(tree: dict, prefix: str = ""):
    """{"stage1": {"epochs": 5}} -> "stage1.epochs=5" (values as YAML flow text, which the CLI reads back)."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from flatten_overrides(value, f"{prefix}{key}.")
        else:
            text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
            yield f"{prefix}{key}={text.removesuffix('...').strip()}"


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rccl"


def parse_synth_set(items: list[str]) -> dict:
    """--synth-set KEY=VALUE... -> {KEY: value} (YAML values), KEY a parameter of the synthetic tree."""
    from rccl.data.synth.params import SYNTH_KEYS

    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or key not in SYNTH_KEYS:
            raise BenchError(f"--synth-set {item!r}: give KEY=VALUE with KEY one of {', '.join(SYNTH_KEYS)}")
        out[key] = yaml.safe_load(text)
    return out


def data_key(preset_name: str, synth_set: dict | None = None) -> str:
    """The prepared set's identity: the preset's name and a hash of its settings, with the --synth-set
    changes if any (its cache folder's name; part of every row's config hash)."""
    from rccl.data.synth import preset

    settings = preset(preset_name)
    if synth_set:  # without changes the hash is the preset's alone, as the recorded results have it
        settings["synth"] = {**settings["synth"], **synth_set}
    key = hashlib.sha1(json.dumps(settings, sort_keys=True, default=list).encode()).hexdigest()[:8]
    return f"paper-tables-{preset_name}-{key}"


def prepare_data(preset_name: str, cache: Path, log, synth_set: dict | None = None) -> Path:
    """The preset (with the --synth-set changes) made and prepared once (cached in a folder named by its
    settings)."""
    from rccl.data.synth import make_prepared

    folder = cache / data_key(preset_name, synth_set)
    t0 = time.perf_counter()
    manifest = make_prepared(folder, preset_name, progress=False, log=None, **(synth_set or {}))
    log(f"paper_tables: data {manifest} ({time.perf_counter() - t0:.0f} s)")
    return Path(manifest)


# ------------------------------------------------------------------------------------------ identical rows
# Keys of a resolved config that name or place a run and do not change what it trains.
NOT_TRAINING = ("name",)


def training_config(config: str, overrides: list[str]) -> dict:
    """The row's resolved config as rccl-train would run it (DEFAULTS, the file's base chain, the bench
    overrides), without the keys in NOT_TRAINING."""
    from rccl.train.config import load_config

    cfg = load_config(ROOT / config, overrides)
    for key in NOT_TRAINING:
        cfg.pop(key, None)
    return cfg


def config_hash(cfg: dict, data: str) -> str:
    """A short hash of a resolved training config and the data set it trains on (data_key)."""
    text = json.dumps({"config": cfg, "data": data}, sort_keys=True, default=list)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def row_key(table: str, row: str) -> str:
    return f"{table}:{row}"


def row_overrides(key: str, overrides: list[str]) -> list[str]:
    """The bench's overrides, then the row's own (ROW_OVERRIDES: the control rows)."""
    return list(overrides) + ROW_OVERRIDES.get(key, [])


def plan_runs(overrides: list[str], data: str, rows=ROWS) -> dict[str, dict]:
    """{"TABLE:ROW": {"hash": h, "owner": "TABLE:ROW", "config": the owner's config file}} for every row of
    `rows`: rows with equal resolved configs share a hash, and their owner is the first of them in the
    paper's order (the row whose config file names the run)."""
    plan, owners = {}, {}
    for table, row, config in rows:
        h = config_hash(training_config(config, row_overrides(row_key(table, row), overrides)), data)
        owner = owners.setdefault(h, (row_key(table, row), config))
        plan[row_key(table, row)] = {"hash": h, "owner": owner[0], "config": owner[1]}
    return plan


# ------------------------------------------------------------------------------------------ one run
def run_name(config: str, seed: int, key: str = "") -> str:
    """The run folder's name: the config's stem, and for a control row (which shares its config file with
    a Table 2 row) a slug of the row's name."""
    stem = Path(config).stem
    if key in ROW_OVERRIDES:
        stem += "-" + "".join(c if c.isalnum() else "-" for c in key.split(":", 1)[1].lower()).strip("-")
    return f"{stem}-s{seed}"


def train_command(config: str, overrides: list[str], manifest: Path, runs: Path, name: str, seed: int) -> list[str]:
    return [sys.executable, "-m", "rccl.cli.train", "--config", config, *overrides,
            f"data.manifest={manifest}", f"train.out={runs}", f"name={name}", f"train.seed={seed}"]


def stage1_summary(run_dir: Path) -> dict:
    """From RUN/epochs.csv: stage 1's mean loss in its first and last epoch, the loss's collapsed value
    (identical embeddings) and the class gap of z in its last epoch (the collapse watch; absent for CE)."""
    path = run_dir / "epochs.csv"
    if not path.is_file():
        raise BenchError(f"{path}: the run wrote no epoch log")
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["stage"] == "1"]
    if not rows:
        return {}
    out = {"loss_first": float(rows[0]["loss"]), "loss_last": float(rows[-1]["loss"])}
    for key, column in (("collapsed_loss", "collapsed_loss"), ("train_class_gap", "class_gap")):
        if rows[-1].get(column):
            out[key] = float(rows[-1][column])
    return out


def read_metrics(run_dir: Path) -> dict:
    """{quality: {"auc": .., "acc": .., ..., "video_auc": .., "class_gap": ..}, "stage1": {...}} from
    RUN/metrics.json (frame level, the video-level AUC, the test crops' class gap of z for a contrastive
    run) and RUN/epochs.csv (stage1_summary)."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        raise BenchError(f"{path}: the run wrote no metrics (see {run_dir}.log)")
    data = json.loads(path.read_text(encoding="utf-8"))
    out = {}
    for q in QUALITIES:
        if q not in data:
            raise BenchError(f"{path}: no {q!r} results (the run must evaluate raw, c23 and c40)")
        frame = data[q]["frame"]
        out[q] = {k: frame[k] for k in ("auc", "acc", "tpr", "tnr", "fpr", "eer", "ap") if k in frame}
        if "video" in data[q] and "auc" in data[q]["video"]:
            out[q]["video_auc"] = data[q]["video"]["auc"]
        if "embedding" in data[q]:
            out[q]["class_gap"] = data[q]["embedding"]["class_gap"]
    stage1 = stage1_summary(run_dir)
    if stage1:
        out["stage1"] = stage1
    return out


@contextlib.contextmanager
def shared_lock(path: Path | None):
    """A shared flock on `path` (the machine's CPU lock) for the duration of one run; no-op for None."""
    if path is None:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_child(cmd: list[str], log_path: Path) -> tuple[int, float, float]:
    """Run `cmd` with stdout/stderr to log_path; (exit code, wall seconds, CPU seconds: user + system of the
    child, from wait4, so that a run's cost is known even when other work shared the cores)."""
    t0 = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:  # a live log (tail -f), not a result file
        log.write(" ".join(cmd) + "\n")
        log.flush()
        child = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, time.perf_counter() - t0, usage.ru_utime + usage.ru_stime


def run_one(label: str, config: str, seed: int, overrides: list[str], manifest: Path, runs: Path, nice: int,
            lock: Path | None = None, keep_checkpoints: bool = False, name: str | None = None
            ) -> tuple[dict, float, float]:
    """Train and evaluate `config` with `seed` in RUNS/NAME (default: run_name); (metrics, wall seconds, CPU
    seconds). The run folder's checkpoints (~60 MB a run at the demo scale) are removed once its metrics are
    read, unless keep_checkpoints: the config, epochs.csv, metrics, scores and plots stay."""
    name = name or run_name(config, seed, label)
    runs.mkdir(parents=True, exist_ok=True)
    run_dir = runs / name
    if run_dir.exists():  # a stale or interrupted run of the same name: rccl-train wants a fresh folder
        shutil.rmtree(run_dir)
    cmd = train_command(config, overrides, manifest, runs, name, seed)
    if nice:
        cmd = ["nice", "-n", str(nice), *cmd]
    with shared_lock(lock):
        rc, wall, cpu = run_child(cmd, runs / f"{name}.log")
    if rc != 0:
        tail = (runs / f"{name}.log").read_text(encoding="utf-8").strip().splitlines()[-3:]
        raise BenchError(f"{label} seed {seed}: rccl-train exited {rc}: {' | '.join(tail)}")
    metrics = read_metrics(run_dir)
    if not keep_checkpoints:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return metrics, wall, cpu


# ------------------------------------------------------------------------------------------ results file
def read_results_file(path: Path, bench: str, empty: dict) -> dict:
    """A table bench's results JSON, or a fresh copy of `empty` where there is none yet; a file that is not
    one is an error naming it (never overwritten by a later write)."""
    if not path.is_file():
        return json.loads(json.dumps(empty))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BenchError(f"{path}: not valid JSON ({e}); move it away or pass another --out") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise BenchError(f"{path}: not a {bench} results file (no 'rows' list)")
    return data


def load_results(path: Path) -> dict:
    return read_results_file(path, "paper_tables", {"seeds": [], "rows": []})


def find_row(results: dict, table: str, row: str) -> dict | None:
    return next((r for r in results["rows"] if r["table"] == table and r["row"] == row), None)


def has_seed(results: dict, table: str, row: str, seed: int, config_hash: str | None = None) -> bool:
    """The row has a result for `seed` (measured with `config_hash`, when one is given)."""
    entry = find_row(results, table, row)
    if entry is None or seed not in entry.get("seeds", []):
        return False
    return config_hash is None or entry.get("config_hash") == config_hash


def stale_rows(results: dict, plan: dict) -> dict[str, str]:
    """{"TABLE:ROW": recorded hash} for every row of the JSON measured with another resolved config or data
    set than the current code, configs and bench overrides give (`plan`): its numbers belong to that other
    config, so a --verify against them means nothing and a plain run replaces them."""
    out = {}
    for entry in results["rows"]:
        key = row_key(entry.get("table", ""), entry.get("row", ""))
        if key in plan and entry.get("config_hash") != plan[key]["hash"]:
            out[key] = entry.get("config_hash")
    return out


def merge_result(results: dict, table: str, row: str, config: str, seed: int, metrics: dict,
                 seconds: float, cpu_seconds: float | None = None, *, config_hash: str | None = None,
                 same_as: str | None = None) -> None:
    """Put one run's metrics into `results` (replacing that row's earlier result for the seed). Each row
    keeps its own `seeds` list; every per-seed list (metrics, seconds, cpu_seconds) is aligned with it. A
    result with another config_hash than the row's earlier ones makes those stale: they are dropped."""
    entry = find_row(results, table, row)
    if entry is not None and config_hash is not None and entry.get("config_hash") != config_hash:
        results["rows"].remove(entry)  # measured on another config or data set
        entry = None
    if entry is None:
        entry = {"table": table, "row": row, "config": config, "config_hash": config_hash, "same_as": same_as,
                 "seeds": [], "seconds": [], "cpu_seconds": [], "metrics": {}}
        results["rows"].append(entry)
        order = {(t, n): i for i, (t, n, _) in enumerate(ROWS)}
        results["rows"].sort(key=lambda r: order.get((r["table"], r["row"]), len(order)))
    entry.update(config=config, config_hash=config_hash, same_as=same_as)
    entry.setdefault("cpu_seconds", [None] * len(entry["seeds"]))
    if seed in entry["seeds"]:
        i = entry["seeds"].index(seed)
        for lst in [entry["seconds"], entry["cpu_seconds"]] + [v for q in entry["metrics"].values() for v in q.values()]:
            del lst[i]
        entry["seeds"].remove(seed)
    entry["seeds"].append(seed)
    entry["seconds"].append(round(seconds, 1))
    entry["cpu_seconds"].append(None if cpu_seconds is None else round(cpu_seconds, 1))
    for q, values in metrics.items():
        slot = entry["metrics"].setdefault(q, {})
        for key, value in values.items():
            slot.setdefault(key, []).append(value)
    results["seeds"] = sorted({s for r in results["rows"] for s in r["seeds"]})


def merge_file(results: dict, other: dict, plan: dict, where: str) -> int:
    """Merge the rows of another results file (`other`, from a part of the bench run elsewhere or with
    another --out) into `results`, seed by seed; a row whose config hash is not the one the current configs
    give (`plan`) is stale and skipped. Returns the (row, seed) results taken."""
    taken = 0
    for entry in other["rows"]:
        key = row_key(entry.get("table", ""), entry.get("row", ""))
        if key not in plan:
            raise BenchError(f"--merge {where}: row {key!r} is not a row of the paper's tables")
        if entry.get("config_hash") != plan[key]["hash"]:
            print(f"paper_tables: --merge {where}: {key} was measured with another config or data set "
                  f"(hash {entry.get('config_hash')}, now {plan[key]['hash']}); skipped")
            continue
        for i, seed in enumerate(entry["seeds"]):
            metrics = {q: {k: v[i] for k, v in m.items()} for q, m in entry["metrics"].items()}
            cpu = (entry.get("cpu_seconds") or [None] * len(entry["seeds"]))[i]
            merge_result(results, entry["table"], entry["row"], entry["config"], seed, metrics, entry["seconds"][i],
                         cpu, config_hash=entry["config_hash"], same_as=entry.get("same_as"))
            taken += 1
    return taken


def run_totals(results: dict) -> dict:
    """The cost of what the JSON holds, each run counted once (rows with same_as reuse their owner's run):
    {"runs": n, "unique_configs": n, "wall_s": total, "cpu_s": total, "wall_s_per_run": mean, ...}."""
    owners = [r for r in results["rows"] if not r.get("same_as")]
    wall = [s for r in owners for s in r["seconds"]]
    cpu = [s for r in owners for s in r.get("cpu_seconds", []) if s is not None]
    out = {"runs": len(wall), "unique_configs": len(owners), "wall_s": round(sum(wall), 1),
           "cpu_s": round(sum(cpu), 1)}
    if wall:
        out["wall_s_per_run"] = round(statistics.fmean(wall), 1)
    if cpu:
        out["cpu_s_per_run"] = round(statistics.fmean(cpu), 1)
    return out


# ------------------------------------------------------------------------------------------ markdown
def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    m = 100 * statistics.fmean(values)
    if len(values) < 2:
        return f"{m:.2f}"
    return f"{m:.2f} ± {100 * statistics.stdev(values):.2f}"


def _minutes(values: list) -> str:
    values = [v for v in values if v is not None]
    return f"{statistics.fmean(values) / 60:.1f}" if values else "-"


def render_markdown(results: dict, command: str, plan: dict | None = None) -> str:
    totals = run_totals(results)
    stale = stale_rows(results, plan) if plan else {}
    lines = ["# Paper Tables 2-6 at demo scale (bench/paper_tables.py)", "",
             "Trained on raw, tested on raw / c23 / c40 of the synthetic set bench/paper_tables.yaml names, with",
             "the encoder, weights and projector that file gives (every row; the control rows undo one of them);",
             "frame-level AUC and ACC in percent, mean ± sample standard deviation over the seeds (n). The paper's",
             "numbers (Celeb-DF-v2, Xception at 299 px) beside them: AUC is given in its Table 2 only, ACC in all.",
             "A row whose resolved training config equals an earlier row's reuses that row's runs (\"same as\").",
             "min/run: wall and CPU minutes per training run (mean over its seeds). Stage-1 loss: the mean of its",
             "first and last epoch, with (in brackets) its value at identical embeddings, the collapse point; class",
             "gap: mean cosine of same-class minus natural-fake pairs of the raw test crops' projections z.",
             "Generated by `" + command + "`; rows not listed were not run.", "",
             f"Runs: {totals['runs']} ({totals['unique_configs']} distinct configs), "
             f"{totals['wall_s'] / 60:.1f} min wall (runs overlapped with --jobs), {totals['cpu_s'] / 60:.1f} min CPU.", ""]
    if stale:
        lines += [f"**Stale rows ({len(stale)})**: measured with another resolved config or data set than the "
                  "code, configs and bench overrides now give (config hash recorded → now); their numbers are "
                  "not what this commit trains. A plain run of the bench replaces them:", ""]
        lines += [f"- {key}: {h} → {plan[key]['hash']}" for key, h in stale.items()] + [""]
    for table in dict.fromkeys(t for t, _, _ in ROWS):
        rows = [r for r in results["rows"] if r["table"] == table]
        if not rows:
            continue
        title = "Table 2 controls (not paper rows: one of the bench's changes undone)" if table == "2c" else f"Table {table}"
        lines += [f"## {title}", "",
                  "| row | n | AUC raw | AUC c23 | AUC c40 | ACC raw | ACC c23 | ACC c40 | raw→c40 AUC drop "
                  "| stage-1 loss first → last (collapsed) | class gap raw test | paper AUC raw/c23/c40 "
                  "| paper ACC raw/c23/c40 | same as | min/run wall, CPU |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---|---|---|"]
        for r in rows:
            m = r["metrics"]
            drops = [a - b for a, b in zip(m["raw"]["auc"], m["c40"]["auc"])]
            paper = PAPER.get((table, r["row"]), {})
            p_auc = "/".join(f"{v:.2f}" for v in paper["auc"]) if "auc" in paper else "-"
            p_acc = "/".join(f"{v:.2f}" for v in paper["acc"]) if "acc" in paper else "-"
            cells = [_mean_sd(m[q]["auc"]) for q in QUALITIES] + [_mean_sd(m[q]["acc"]) for q in QUALITIES]
            name = r["row"] + (" (stale)" if row_key(table, r["row"]) in stale else "")
            lines.append(f"| {name} | {len(r['seeds'])} | " + " | ".join(cells)
                         + f" | {_mean_sd(drops)} | {_stage1_cell(m.get('stage1', {}))} "
                         + f"| {_plain(m['raw'].get('class_gap', []))} | {p_auc} | {p_acc} | {r.get('same_as') or '-'} "
                         + f"| {_minutes(r['seconds'])}, {_minutes(r.get('cpu_seconds', []))} |")
        lines.append("")
    lines += paired_comparison(results)
    return "\n".join(lines)


def _plain(values: list) -> str:
    """Mean ± sd of values that are not fractions to show in percent (losses, class gaps)."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    sd = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.2f}{sd}"


def _stage1_cell(stage1: dict) -> str:
    if not stage1.get("loss_first"):
        return "-"
    collapsed = f" ({_plain(stage1['collapsed_loss'])})" if stage1.get("collapsed_loss") else ""
    return f"{_plain(stage1['loss_first'])} → {_plain(stage1['loss_last'])}{collapsed}"


# Each table's variants against the row the paper's text compares them with.
PAIRS = (("2:Ours", "2:Sup. Con"), ("2:Ours", "2:Xception"), ("2:Sup. Con", "2:Xception"),
         ("3:Temporal-level", "3:Instance-level"), ("3:Forgery semantical", "3:Instance-level"),
         ("3:Class-level", "3:Instance-level"), ("4:Linear", "4:Smooth"), ("4:Linear + smooth", "4:Smooth"),
         ("5:+ 32 pos.", "5:Sup. Con"), ("5:+ 32 pos., 16 neg.", "5:+ 32 pos."),
         ("5:+ 32 pos., 32 neg.", "5:+ 32 pos., 16 neg."), ("6:As negatives", "6:As fakes"))


def paired_comparison(results: dict) -> list[str]:
    """Per-seed differences of rows the paper compares (PAIRS; same seed, same data: the seed's draw of
    initialisation and batches is shared noise), AUC and ACC at each quality, in points: each seed's value
    and the mean ± sd."""
    lines = ["## Paired by seed", "",
             "Difference A − B in percentage points for each seed both rows ran (per-seed values, then mean ± sd). "
             "A difference whose sign is the same in every seed and whose mean exceeds its sd is a measured "
             "ordering; otherwise the seeds do not separate the rows.", "",
             "| A − B | metric | raw | c23 | c40 |", "|---|---|---|---|---|"]
    for a, b in PAIRS:
        ra, rb = find_row(results, *a.split(":", 1)), find_row(results, *b.split(":", 1))
        if ra is None or rb is None:
            continue
        seeds = [s for s in ra["seeds"] if s in rb["seeds"]]
        if not seeds:
            continue
        for metric in ("auc", "acc"):
            cells = []
            for q in QUALITIES:
                diffs = [100 * (ra["metrics"][q][metric][ra["seeds"].index(s)] - rb["metrics"][q][metric][rb["seeds"].index(s)])
                         for s in seeds]
                sd = f" ± {statistics.stdev(diffs):.1f}" if len(diffs) > 1 else ""
                cells.append(" / ".join(f"{d:+.1f}" for d in diffs) + f" (mean {statistics.fmean(diffs):+.1f}{sd})")
            lines.append(f"| {a} − {b.split(':', 1)[1]} | {metric.upper()} | " + " | ".join(cells) + " |")
    return lines + [""]


# ------------------------------------------------------------------------------------------ main
def select_setting_rows(values: list[str] | None, rows: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """--only SETTING[:METHOD] (repeatable, comma lists) -> the (setting, method, config) rows chosen, in
    their order (sbi_tables', real_tables' rows)."""
    if not values:
        return list(rows)
    chosen = set()
    for item in (v.strip() for value in values for v in value.split(",")):
        setting, _, method = item.partition(":")
        hits = [r for r in rows if r[0] == setting and (not method or r[1] == method)]
        if not hits:
            raise BenchError(f"--only {item!r}: no such row (rows: {', '.join(f'{s}:{m}' for s, m, _ in rows)})")
        chosen.update(hits)
    return [r for r in rows if r in chosen]


def table_parser(prog: str, doc: str, *, rows: str, rows_help: str, out: Path, bench_config: Path,
                 runs: Path, checkpoints_help: str) -> argparse.ArgumentParser:
    """The flags the table benches (paper_tables, sbi_tables, real_tables) share, with each bench's defaults."""
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", metavar=rows, help=f"rows to run (repeatable or comma list; {rows_help})")
    p.add_argument("--seeds", default="0,1,2", help="comma list (default: %(default)s)")
    p.add_argument("--out", type=Path, default=out, help="results JSON; the .md is written beside it")
    p.add_argument("--force", action="store_true", help="rerun rows/seeds already in the JSON")
    p.add_argument("--bench-config", type=Path, default=bench_config)
    p.add_argument("--cache", type=Path, default=None, help="data cache (default ~/.cache/rccl)")
    p.add_argument("--runs", type=Path, default=runs, help="run folders and logs")
    p.add_argument("--nice", type=int, default=0, help="niceness of each training run (default 0: none)")
    p.add_argument("--keep-checkpoints", action="store_true", help=checkpoints_help)
    return p


def run_bench(prog: str, body, args, *extra) -> int:
    """body(args, *extra) with a bad input reported as `PROG: error: MESSAGE`, exit status 2."""
    try:
        return body(args, *extra)
    except RcclError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    p = table_parser("paper_tables", __doc__, rows="TABLE:ROW",
                     rows_help="a bare TABLE = all its rows); default: all", out=OUT_JSON,
                     bench_config=BENCH_CONFIG, runs=ROOT / "runs" / "paper_tables",
                     checkpoints_help="keep each run's checkpoints (default: removed once its metrics are read)")
    p.add_argument("--verify", action="store_true",
                   help=f"rerun the selected rows/seeds already in the JSON and compare (|AUC diff| <= "
                        f"{REPRO_TOLERANCE}); the JSON is not changed")
    p.add_argument("--jobs", type=int, default=2, help="trainings run at once (default: %(default)s)")
    p.add_argument("--lock", type=Path, default=None,
                   help="hold a shared flock on this file during each run (e.g. the machine's CPU lock)")
    p.add_argument("--merge", action="append", type=Path, default=[], metavar="FILE",
                   help="first merge the results of FILE (another part's --out; repeatable) into --out")
    p.add_argument("--synth-set", action="append", default=[], metavar="KEY=VALUE",
                   help="change a parameter of the preset's synthetic tree (repeatable; e.g. "
                        "generator_down=[1.15,1.4], seam_scale=2): another data set, so give --out too")
    p.add_argument("--list", action="store_true", help="print the rows, their configs and shared runs; run nothing")
    return run_bench("paper_tables", _main, p.parse_args(argv))


def plan_units(rows, seeds, plan: dict, results: dict, *, force: bool, verify: bool) -> list[tuple[str, int]]:
    """The runs to do, as (owner "TABLE:ROW", seed), seed-major (every selected row gets its first seed
    before any gets its second, so a bench cut short still compares all the rows), one per distinct
    config and seed. Without --force a run is skipped when every row sharing its config has the seed
    (with that config's hash); --verify takes the runs whose owner row has the seed."""
    units = []
    for seed in seeds:
        for table, row, _ in rows:
            p = plan[row_key(table, row)]
            unit = (p["owner"], seed)
            if unit in units:
                continue
            sharing = [k for k, q in plan.items() if q["hash"] == p["hash"]]
            recorded = [has_seed(results, *k.split(":", 1), seed, p["hash"]) for k in sharing]
            owner_recorded = has_seed(results, *p["owner"].split(":", 1), seed, p["hash"])
            if (verify and owner_recorded) or (not verify and (force or not all(recorded))):
                units.append(unit)
    return units


def verify_problem(rows, seeds, plan: dict, results: dict) -> str | None:
    """Why a --verify of these rows and seeds cannot compare like with like, or None: a selected row/seed
    recorded with another config hash than the current one (its record belongs to another config), or
    none of them recorded at all."""
    stale = stale_rows(results, plan)
    recorded_any = False
    for seed in seeds:
        for table, row, _ in rows:
            owner = plan[row_key(table, row)]["owner"]
            entry = find_row(results, *owner.split(":", 1))
            if entry is None or seed not in entry.get("seeds", []):
                continue
            if owner in stale:
                return (f"{owner} seed {seed} was recorded with config hash {stale[owner]}, but the current code, "
                        f"configs and bench overrides give {plan[owner]['hash']}: the record belongs to another "
                        f"config, so a rerun cannot reproduce it. Run the row without --verify to record it at "
                        f"this commit (see --list)")
            recorded_any = True
    if not recorded_any:
        return "none of the selected rows/seeds is in the JSON: nothing to compare with (run them first)"
    return None


def projection(results: dict, runs: int, jobs: int) -> str:
    """", about M min on idle cores (CPU minutes / cores in use)" from the JSON's mean CPU seconds per run;
    "" when it has none yet."""
    per_run = run_totals(results).get("cpu_s_per_run")
    if not per_run:
        return ""
    cores = min(jobs, os.cpu_count() or 1)
    return (f"; at {per_run / 60:.1f} CPU min a run (the JSON's mean) that is {runs * per_run / 60:.0f} CPU min, "
            f"about {runs * per_run / 60 / cores:.0f} min on {cores} idle core(s)")


def _main(args) -> int:
    rows, seeds = parse_only(args.only), parse_seeds(args.seeds)
    if args.jobs < 1:
        raise BenchError(f"--jobs {args.jobs}: give at least 1")
    preset_name, overrides = read_bench_config(args.bench_config)
    synth_set = parse_synth_set(args.synth_set)
    if synth_set and args.out == OUT_JSON:
        raise BenchError("--synth-set makes another data set: give --out FILE (the default JSON holds the "
                         f"{preset_name!r} preset's results)")
    missing = [c for _, _, c in ROWS if not (ROOT / c).is_file()]
    if missing:
        raise BenchError(f"row configs not found: {', '.join(missing)} (they ship with the method configs)")
    plan = plan_runs(overrides, data_key(preset_name, synth_set))
    if args.list:
        results = load_results(args.out if args.out.is_absolute() else Path.cwd() / args.out)
        for table, row, config in rows:
            p = plan[row_key(table, row)]
            shared = "" if p["owner"] == row_key(table, row) else f"\tsame run as {p['owner']}"
            entry = find_row(results, table, row)
            recorded = "\tnot recorded" if entry is None else (
                f"\trecorded seeds {entry['seeds']}" + ("" if entry.get("config_hash") == p["hash"] else
                                                        f" STALE (recorded with {entry.get('config_hash')})"))
            print(f"{table}:{row}\t{config}\t{p['hash']}{shared}{recorded}")
        print(f"{len({p['hash'] for p in plan.values()})} distinct configs among the {len(plan)} rows")
        return 0
    out_json = args.out if args.out.is_absolute() else Path.cwd() / args.out
    command = "python -m bench.paper_tables " + " ".join(sys.argv[1:]) if sys.argv[1:] else "python -m bench.paper_tables"
    results = load_results(out_json)
    for other in args.merge:
        if not other.is_file():
            raise BenchError(f"--merge {other}: no such file")
        taken = merge_file(results, load_results(other), plan, str(other))
        print(f"paper_tables: merged {taken} row/seed result(s) of {other}")
    if args.verify:
        problem = verify_problem(rows, seeds, plan, results)
        if problem:
            print(f"paper_tables: verify: {problem}")
            return 1
    units = plan_units(rows, seeds, plan, results, force=args.force, verify=args.verify)
    if not units:
        print("paper_tables: nothing to run (every selected row/seed is in the JSON with the config the "
              "current code gives; --force reruns)")
        _write(results, out_json, command, plan)
        return 0
    manifest = prepare_data(preset_name, (args.cache or default_cache()).expanduser(), print, synth_set)
    print(f"paper_tables: {len(units)} run(s) ({len({u[0] for u in units})} distinct configs x seeds {seeds}), "
          f"{args.jobs} at a time{projection(results, len(units), args.jobs)}", flush=True)

    def job(unit):
        owner, seed = unit
        print(f"paper_tables: start {owner} seed {seed} ({plan[owner]['config']}, log "
              f"{args.runs / run_name(plan[owner]['config'], seed, owner)}.log)", flush=True)
        return run_one(owner, plan[owner]["config"], seed, row_overrides(owner, overrides), manifest, args.runs,
                       args.nice, args.lock, args.keep_checkpoints)

    t_start, done, failures, worst = time.perf_counter(), 0, 0, 0.0
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(job, unit): unit for unit in units}
        for future in concurrent.futures.as_completed(futures):
            owner, seed = futures[future]
            done += 1
            try:
                metrics, wall, cpu = future.result()
            except BenchError as e:
                failures += 1
                print(f"[{done}/{len(units)}] {e}", flush=True)
                continue
            elapsed = time.perf_counter() - t_start
            eta = elapsed / done * (len(units) - done)
            summary = ", ".join(f"{q} {metrics[q]['auc']:.3f}" for q in QUALITIES)
            sharing = [k for k, q in plan.items() if q["hash"] == plan[owner]["hash"]]
            line = (f"[{done}/{len(units)}] {owner} seed {seed}: {wall / 60:.1f} min wall, {cpu / 60:.1f} min CPU, "
                    f"frame AUC {summary}; elapsed {elapsed / 60:.0f} min, ETA {eta / 60:.0f} min")
            if len(sharing) > 1:
                line += f" (also {', '.join(k for k in sharing if k != owner)})"
            if args.verify:
                table, row = owner.split(":", 1)
                entry = find_row(results, table, row)
                k = entry["seeds"].index(seed)
                diff = max(abs(metrics[q]["auc"] - entry["metrics"][q]["auc"][k]) for q in QUALITIES)
                worst = max(worst, diff)
                line += f"; max |AUC - recorded| {diff:.4f}"
            else:
                for key in sharing:
                    table, row = key.split(":", 1)
                    config = next(c for t, n, c in ROWS if (t, n) == (table, row))
                    merge_result(results, table, row, config, seed, metrics, wall, cpu,
                                 config_hash=plan[owner]["hash"], same_as=None if key == owner else owner)
                _write(results, out_json, command, plan)
            print(line, flush=True)
    if args.verify:
        ok = worst <= REPRO_TOLERANCE
        print(f"paper_tables: verify: worst |AUC difference| {worst:.4f} ({'within' if ok else 'OVER'} "
              f"{REPRO_TOLERANCE})")
        return 0 if ok and not failures else 1
    return 1 if failures else 0


def _write(results: dict, out_json: Path, command: str = "python -m bench.paper_tables", plan: dict | None = None) -> None:
    results["totals"] = run_totals(results)
    write_json(out_json, results)
    write_text(out_json.with_suffix(".md"), render_markdown(results, command, plan) + "\n")


if __name__ == "__main__":
    sys.exit(main())

"""Evaluate a trained run on the test crops of a manifest, per quality, the way the paper's Table 2 does.

For each quality: the detector's fake probability for every crop (frame level) and the mean of a video's
frame scores (video level); AUC, ACC, TPR, TNR, FPR at threshold 0.5, EER and AP (fake is positive).
On the run's own manifest the results are the run's: RUN/metrics.json, plots and per-crop scores in
RUN/eval/. On another manifest (the cross-dataset protocol: train on one dataset, test on another) they go
to RUN/eval/NAME/ (NAME: that manifest's dataset, or --name) and RUN/metrics.json is never touched. After
each evaluation RUN/eval/summary.md lists every dataset evaluated for the run. The layout is rccl.run's.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from rccl.data.layouts import QUALITIES  # the qualities rccl-prep makes: the one list of them
from rccl.data.loaders import build_eval_loader
from rccl.data.manifest import read_manifest
from rccl.errors import RcclError
from rccl.fileio import write_json, write_text
from rccl.embedding import embedding_separation
from rccl.metrics import detection_metrics, roc_curve, video_scores
from rccl.plots import draw_roc, draw_score_histogram
from rccl.ranks import all_gather_objects, on_every_rank, rank_and_world
from rccl.run import RunDir
from rccl.scoring import input_size, score_and_embed_batches, score_batches

OWN = "(training manifest)"  # the summary's name for the run's own manifest
log = logging.getLogger(__name__)


class EvaluationError(RcclError, ValueError):
    """Evaluation cannot start: a missing run folder, a quality absent from the manifest, an empty split."""


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def metrics_path(run_dir: str | os.PathLike, split: str = "test") -> Path:
    """RUN/metrics.json for the test split of the run's own manifest; RUN/metrics_<split>.json otherwise."""
    return RunDir(run_dir).metrics_path(split)


def run_manifest(cfg: dict, run_dir: str | os.PathLike) -> Path | None:
    """The manifest a run was trained on (see RunDir.manifest)."""
    return RunDir(run_dir).manifest(cfg)


def dataset_name(records: list[dict], manifest: Path) -> str:
    """The name an evaluation on another manifest is filed under: its rows' dataset ("celebdf", "ffpp",
    ...), several joined with "+"."""
    names = sorted({str(r["dataset"]) for r in records})
    if not names:
        raise EvaluationError(f"manifest {manifest}: no rows")
    return check_name("+".join(names))


def check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", name) or name == "summary.md":
        raise EvaluationError(f"evaluation name {name!r}: use letters, digits and . _ + - (it names a folder "
                              f"under RUN/eval/), e.g. --name ffpp")
    return name


def select_records(records: list[dict], qualities: Sequence[str], split: str, manifest: Path, *,
                   skip_absent: bool = False, note=print) -> dict[str, list[dict]]:
    """The rows of each quality in `split`; every problem is found before any scoring starts. `skip_absent`:
    a quality the manifest has no crops of is left out (said through `note`) instead of refused, unless none
    is left."""
    present_qualities = sorted({r["quality"] for r in records})
    absent = [q for q in qualities if q not in present_qualities] if skip_absent else []
    if len(absent) < len(qualities):  # some asked-for qualities are there: score those alone
        qualities = [q for q in qualities if q not in absent]
    else:  # none is there: refused below as without skip_absent
        absent = []
    by_quality: dict[str, list[dict]] = {q: [] for q in qualities}
    for r in records:
        if r["split"] == split and r["quality"] in by_quality:
            by_quality[r["quality"]].append(r)
    if skip_absent and not any(by_quality.values()) and set(by_quality) <= set(present_qualities):
        splits = sorted({r["split"] for r in records if r["quality"] in by_quality})
        note(f"evaluation: manifest {manifest} has no {', '.join(by_quality)} crops in split {split!r} (they are "
             f"in: {', '.join(splits) or 'none'}): nothing to evaluate; score the run on other data with rccl-eval "
             f"RUN --manifest M")
        return {}
    if absent:
        note(f"evaluation: manifest {manifest} has no {', '.join(absent)} crops (it has: "
             f"{', '.join(present_qualities)}); evaluated without them (rccl-prep --qualities adds them)")
    for q in qualities:
        if q not in present_qualities:
            raise EvaluationError(f"manifest {manifest}: no crops of quality {q!r} (it has: "
                                  f"{', '.join(present_qualities) or 'no rows at all'}); "
                                  f"prepare it with rccl-prep --qualities, or leave it out of --qualities")
        if not by_quality[q]:
            splits = sorted({r["split"] for r in records if r["quality"] == q})
            raise EvaluationError(f"manifest {manifest}: no {q!r} crops in split {split!r} "
                                  f"(the {q!r} crops are in: {', '.join(splits)})")
    return by_quality


def embedding_summary(z: torch.Tensor, records: list[dict]) -> dict:
    """The class gap and mean pairwise cosine of the crops' projections z (rccl.metrics.embedding_separation),
    for metrics.json."""
    labels = torch.tensor([int(r["label"]) for r in records])
    mean_cos, gap = embedding_separation(z, labels)
    return {"class_gap": round(float(gap), 4), "mean_cosine": round(float(mean_cos), 4), "n": len(records)}


def quality_metrics(records: list[dict], scores: np.ndarray) -> tuple[dict, dict]:
    """({"frame": metrics, "video": metrics}, curves for plotting). A one-class split gives None for the
    metrics it cannot define."""
    labels = np.array([r["label"] for r in records])
    videos = [(r["dataset"], r["video"]) for r in records]
    _, v_labels, v_scores = video_scores(videos, labels, scores)
    result = {"frame": detection_metrics(labels, scores), "video": detection_metrics(v_labels, v_scores)}
    curves = {}
    for level, (y, s) in (("frame", (labels, scores)), ("video", (v_labels, v_scores))):
        if result[level]["auc"] is not None:
            fpr, tpr, _ = roc_curve(y, s)
            curves[f"{level} (AUC {result[level]['auc']:.3f}, n={len(y)})"] = (fpr, tpr)
    return result, curves


def _scores_csv(records: list[dict], scores: np.ndarray) -> str:
    buffer = io.StringIO()
    w = csv.writer(buffer, lineterminator="\n")
    w.writerow(["path", "dataset", "video", "frame", "label", "fake_probability"])
    for r, s in zip(records, scores):
        w.writerow([r["path"], r["dataset"], r["video"], r["frame"], r["label"], f"{s:.6f}"])
    return buffer.getvalue()


def _pct(v) -> str:
    return "   n/a" if v is None else f"{100 * v:6.2f}"


def _table(results: dict, title: str, groups) -> list[str]:
    """groups: ((heading, key), ...) per block of columns; one column block per quality."""
    qualities = list(results)
    width = 7 * len(groups)
    lines = [title, " " * 7 + "".join(f"{q:^{width}}" for q in qualities),
             f"{'level':<7}" + "".join("".join(f"{h:>7}" for h, _ in groups) for _ in qualities)]
    for level in ("frame", "video"):
        lines.append(f"{level:<7}" + "".join("".join(f" {_pct(results[q][level][k])}" for _, k in groups)
                                             for q in qualities))
    return lines


def _counts(results: dict) -> str:
    return ", ".join(f"{q}: {r['frame']['n']} crops ({r['frame']['n_real']} natural, {r['frame']['n_fake']} fake) "
                     f"in {r['video']['n']} videos" for q, r in results.items())


def format_table(results: dict, split: str = "test") -> str:
    """Fake = positive: TPR (fakes called fake), TNR (naturals called natural), AUC, ACC per quality, then
    FPR, EER and AP; values in %, n/a where undefined."""
    lines = _table(results, f"{split} split, threshold 0.5, fake = positive (values in %)",
                   [(k.upper(), k) for k in ("tpr", "tnr", "auc", "acc")])
    lines += _table(results, "", [(k.upper(), k) for k in ("fpr", "eer", "ap")])
    lines.append(_counts(results))
    return "\n".join(lines)


def format_paper_table(results: dict, split: str = "test") -> str:
    """The paper's Table 2 columns as the paper labels them: its "TPR" is the recall of the naturals (our
    TNR) and its "FPR" the recall of the fakes (our TPR): on its rows ACC = f * TPR + (1 - f) * FPR holds
    with f the natural share of the Celeb-DF-v2 test list."""
    lines = _table(results, f"{split} split, the paper's Table 2 columns (values in %): paper TPR = natural "
                            f"recall (our TNR), paper FPR = fake recall (our TPR)",
                   [("TPR*", "tnr"), ("FPR*", "tpr"), ("AUC", "auc"), ("ACC", "acc")])
    lines.append("* the paper's column names; computed here as natural recall (TPR*) and fake recall (FPR*)")
    return "\n".join(lines)


def _note_undefined(quality: str, level: str, m: dict) -> None:
    if m["auc"] is None:
        present = "naturals" if m["n_fake"] == 0 else "fakes"
        unit = "crops" if level == "frame" else "videos"
        log.warning(f"note: {quality} {level} level: only {present} ({m['n']} {unit}); AUC and EER are undefined "
                    f"(null in metrics.json), the other metrics are reported")


# -- the summary across datasets --------------------------------------------------------------------------
SUMMARY_COLUMNS = (("frame AUC", "frame", "auc"), ("video AUC", "video", "auc"), ("frame ACC", "frame", "acc"),
                   ("video ACC", "video", "acc"), ("frame EER", "frame", "eer"), ("video EER", "video", "eer"))


def _metrics_files(run: RunDir) -> list[tuple[str, str, Path]]:
    """(dataset, split, path) of every metrics file of the run: its own manifest first, then eval/NAME/."""
    found = []
    for folder, dataset in [(run.path, OWN)] + [(d, d.name) for d in sorted(run.eval_dir().glob("*/")) if d.is_dir()]:
        for path in sorted(folder.glob("metrics*.json")):
            m = re.fullmatch(r"metrics(?:_(.+))?\.json", path.name)
            if m:
                found.append((dataset, m.group(1) or "test", path))
    return found


TRAINING_FAKES = {"real": "the training manifest's own fakes",
                  "sbi": "self-blended pseudo-fakes of its naturals only (its own fakes never seen)",
                  "mixed": "the training manifest's own fakes and self-blended pseudo-fakes of its naturals"}


def _training_fakes(run: RunDir) -> str:
    """The line saying what the detector was trained on as fakes (data.fakes of the run's config)."""
    try:
        mode = (run.config().get("data") or {}).get("fakes", "real")
    except RcclError:
        return "Trained on: (the run's config.yaml cannot be read)"
    return f"Trained on (data.fakes={mode}): {TRAINING_FAKES.get(mode, 'unknown mode')}."


def summary_table(run: RunDir) -> str:
    """A Markdown table, one row per (dataset, split, quality) evaluated for the run (values in %)."""
    head = "| dataset | split | quality | " + " | ".join(c for c, _, _ in SUMMARY_COLUMNS) + " | crops | videos |"
    lines = [f"# Evaluations of {run.path.name}", "",
             "Threshold 0.5, fake = positive, values in %; one row per dataset and quality "
             "(rccl-eval --manifest adds datasets).", "", _training_fakes(run), "",
             head, "|" + "---|" * (len(SUMMARY_COLUMNS) + 5)]
    for dataset, split, path in _metrics_files(run):
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # not ours to judge here; the file's own reader reports it
        for quality, r in results.items():
            values = " | ".join(_pct(r[level][key]).strip() for _, level, key in SUMMARY_COLUMNS)
            lines.append(f"| {dataset} | {split} | {quality} | {values} | {r['frame']['n']} | {r['video']['n']} |")
    return "\n".join(lines) + "\n"


def write_summary(run: RunDir) -> str:
    table = summary_table(run)
    write_text(run.summary_path, table)
    return table


def _same_file(a: Path, b: Path | None) -> bool:
    return b is not None and Path(a).resolve() == Path(b).resolve()


def _batches_of_rank(n: int, batch_size: int, rank: int, world: int) -> list[int]:
    """The row indices of the loader batches k (batch_size rows each, in order) with k % world == rank:
    a rank's batches are exactly batches of one process's loader, so its scores are bit for bit those."""
    batches = range(rank, -(-n // batch_size), world)
    return [i for k in batches for i in range(k * batch_size, min(n, (k + 1) * batch_size))]


def _score_share(model, cfg: dict, rows: list[dict], mine: list[int], *, batch_size: int, num_workers: int,
                 device, contrastive: bool, desc: str, progress: bool):
    """(scores, z or None) of the rows `mine` (a rank's batches)."""
    loader = build_eval_loader(cfg, [rows[i] for i in mine], batch_size=batch_size, workers=num_workers)
    if contrastive:
        return score_and_embed_batches(model, loader, device, desc=desc, progress=progress)
    return score_batches(model, loader, device, desc=desc, progress=progress), None


def _gather_scores(rows: list[dict], mine: list[int], share: tuple) -> tuple[np.ndarray, torch.Tensor | None]:
    """Every rank's (indices, scores, z) put back in row order (one rank's own share in one process)."""
    parts = all_gather_objects((mine, *share))
    scores = np.zeros(len(rows))
    z = None
    for indices, part_scores, part_z in parts:
        scores[indices] = part_scores
        if part_z is not None and len(indices):
            if z is None:
                z = torch.zeros(len(rows), part_z.shape[1], dtype=part_z.dtype)
            z[indices] = part_z
    return scores, z


def evaluate_run(run_dir: str | os.PathLike, qualities: Sequence[str] = QUALITIES, split: str = "test",
                 device: str | torch.device | None = None, batch_size: int = 64, *,
                 manifest: str | os.PathLike | None = None, name: str | None = None, num_workers: int = 0,
                 progress: bool = True, verbose: bool = True, paper_columns: bool = False,
                 detector: tuple | None = None, sharded: bool = False, skip_absent: bool = False) -> dict:
    """Score the `split` crops of each quality with the run's stage-2 detector; returns
    {quality: {"frame": {...}, "video": {...}}} with METRIC_KEYS and counts.

    `manifest` None (or the run's own): the run's results, RUN/metrics[_SPLIT].json and RUN/eval/. Another
    manifest: RUN/eval/NAME/ (NAME = `name`, else the manifest's dataset). verbose: print the table(s) and
    the summary across datasets. `detector`: (model, cfg) already loaded (default: RunDir.load_detector).
    `sharded`, in a process group of several processes (torchrun, rccl-train's evaluation after training):
    each rank scores its share of the loader's batches, the scores meet on every rank (rccl.ranks), rank 0
    checks the crop files, writes every file and prints; the numbers are one process's, bit for bit.
    `skip_absent`: qualities the manifest lacks are left out with a note, and a split it lacks is a note and {}
    (rccl-train's evaluation after training: its eval.qualities default may ask for more than was prepared, and
    a set of naturals may be all training data), not refused."""
    rank, world = rank_and_world() if sharded else (0, 1)
    main = rank == 0
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise EvaluationError(f"run folder {run.path}: no such folder (pass the RUN folder given to rccl-train)")
    if name is not None:
        check_name(name)
    qualities = list(dict.fromkeys(qualities))
    if not qualities:
        raise EvaluationError("no qualities to evaluate (e.g. --qualities raw,c23,c40)")
    device = torch.device(device) if device is not None else default_device()

    def prepare():
        model, cfg = detector if detector is not None else run.load_detector(map_location=device)
        model.to(device).eval()
        try:
            input_size(cfg, f"{run.config_path}")  # the evaluation loader resizes every crop to it
        except ValueError as e:
            raise EvaluationError(str(e)) from None
        own = run.manifest(cfg)
        manifest_path = Path(manifest) if manifest is not None else own
        if manifest_path is None:
            raise EvaluationError(f"{run.config_path}: no data.manifest; pass the manifest explicitly (--manifest)")
        records = read_manifest(manifest_path, check_files=main)
        by_quality = select_records(records, qualities, split, manifest_path, skip_absent=skip_absent,
                                    note=print if main and verbose else (lambda _: None))
        if name is not None:
            dataset = check_name(name)
        else:
            dataset = None if _same_file(manifest_path, own) else dataset_name(records, manifest_path)
        return model, cfg, by_quality, dataset

    model, cfg, by_quality, dataset = on_every_rank(prepare) if sharded else prepare()
    if not by_quality:  # skip_absent, and the split is empty: said in select_records
        return {}
    results: dict[str, dict] = {}
    # A run whose stage 1 trained the projector (not cross-entropy): how far apart the test crops'
    # projections lie, per class (the collapse watch's class gap, on held-out data)
    contrastive = (cfg.get("loss") or {}).get("kind") in ("rccl", "supcon") and hasattr(model, "projector")
    for q, rows in by_quality.items():
        mine = _batches_of_rank(len(rows), batch_size, rank, world)
        score = lambda: _score_share(model, cfg, rows, mine, batch_size=batch_size,  # noqa: E731
                                     num_workers=num_workers, device=device, contrastive=contrastive,
                                     desc=f"{q} {split}", progress=progress and main)
        scores, z = _gather_scores(rows, mine, on_every_rank(score) if sharded else score())
        results[q], curves = quality_metrics(rows, scores)
        if contrastive:
            results[q]["embedding"] = embedding_summary(z, rows)
        if not main:
            continue
        if verbose:
            for level in ("frame", "video"):
                _note_undefined(q, level, results[q][level])
        write_text(run.scores_path(split, q, dataset), _scores_csv(rows, scores))
        roc_png = run.plot_path(split, q, "roc", dataset)
        where = f"{dataset}, " if dataset else ""
        if curves:
            draw_roc(curves, f"ROC, {where}{q}, {split} split", roc_png)
        else:  # one class only: no curve, and none left over from an earlier evaluation either
            roc_png.unlink(missing_ok=True)
        labels = np.array([r["label"] for r in rows])
        draw_score_histogram({"natural": scores[labels == 0], "fake": scores[labels == 1]},
                             f"Frame scores, {where}{q}, {split} split", run.plot_path(split, q, "hist", dataset))
    if not main:
        return results
    out_path = run.metrics_path(split, dataset)
    write_json(out_path, results)
    summary = write_summary(run)
    if verbose:
        print(format_table(results, split))
        if paper_columns:
            print()
            print(format_paper_table(results, split))
        print(f"wrote {out_path} and plots in {run.eval_dir(dataset)}")
        print()
        print(summary, end="")
    return results

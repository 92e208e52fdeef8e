"""The run: read the layout, check OUT's settings, farm the videos out to a process pool, assemble the
manifest from the parts, report."""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

from rccl.data.faces import DEFAULT_DETECTOR
from rccl.data.faces.landmarks import default_weights as landmark_weights
from rccl.data.layouts import QUALITIES, Layout, VideoRecord, read_layout
from rccl.data.manifest import write_manifest
from rccl.fileio import write_text
from rccl.data.prep.config import PrepConfig, check_settings, validate, resolve_box_mode
from rccl.data.prep.outdir import part_path, skip_path
from rccl.data.prep.plan import frame_reader
from rccl.data.prep.worker import VideoOutcome, run_one


@dataclass
class PrepSummary:
    manifest: Path
    videos: int = 0
    prepared: int = 0
    cached: int = 0
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)   # video -> quality -> reason
    warnings: list[str] = field(default_factory=list)
    problems: list[dict] = field(default_factory=list)
    crops_written: int = 0
    rows: int = 0
    rows_by_quality: dict[str, int] = field(default_factory=dict)
    boxes_by_source: dict[str, int] = field(default_factory=dict)   # first-quality rows: detector / nearest / truth
    landmarks: dict[str, int] = field(default_factory=dict)   # rows: fitted / failed / absent (made without)
    landmark_problems: list[str] = field(default_factory=list)  # "CROP: reason" of the rows whose fit failed
    videos_in_manifest: int = 0
    videos_total: int = 0
    seconds: float = 0.0

    def text(self) -> str:
        lines = [f"rccl-prep: {self.manifest}",
                 f"  videos in this run: {self.videos} ({self.prepared} prepared now, {self.cached} already done, "
                 f"{len(self.skipped)} skipped)",
                 f"  crops written: {self.crops_written}; manifest rows: {self.rows} "
                 f"({', '.join(f'{q} {n}' for q, n in sorted(self.rows_by_quality.items())) or 'none'})",
                 f"  face boxes: {', '.join(f'{s} {n}' for s, n in sorted(self.boxes_by_source.items())) or 'none'}"
                 f" (a detector's name: found on that frame by it; nearest: carried from the nearest frame of the"
                 f" same face track; truth: a synthetic tree's true box)",
                 f"  landmarks: {', '.join(f'{s} {n}' for s, n in sorted(self.landmarks.items())) or 'none'}"
                 f" (failed: no usable 68-point fit, the crop's reason in the manifest's landmarks_problem;"
                 f" absent: rows made without landmarks)",
                 f"  manifest covers {self.videos_in_manifest} of {self.videos_total} videos of the dataset",
                 f"  time: {self.seconds:.1f} s"]
        for video, reasons in sorted(self.skipped.items())[:20]:
            for q, why in reasons.items():
                lines.append(f"  skipped {video} [{q}]: {why}")
        if len(self.skipped) > 20:
            lines.append(f"  ... {len(self.skipped) - 20} more skipped videos in prep_report.json")
        for p in self.landmark_problems[:5]:
            lines.append(f"  no landmarks: {p}")
        if len(self.landmark_problems) > 5:
            lines.append(f"  ... {len(self.landmark_problems) - 5} more crops without landmarks in prep_report.json")
        for w in self.warnings[:10]:
            lines.append(f"  warning: {w}")
        if self.problems:
            lines.append(f"  dataset tree problems: {len(self.problems)} (entries ignored; all in prep_report.json)")
            for p in self.problems[:10]:
                lines.append(f"    {p['path']}: {p['reason']}")
        if self.videos_in_manifest < self.videos_total:
            lines.append("  (run the other shards or rerun to fill the manifest; a rerun only does what is missing)")
        return "\n".join(lines)


def run_prep(cfg: PrepConfig, *, progress: bool = True, log=print) -> PrepSummary:
    """Prepare a dataset (see the module docstring); returns the summary, also saved in prep_report.json."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    validate(cfg)
    resolve_box_mode(cfg)
    frame_reader(cfg.decoder)  # a decoder that cannot work here fails now, not once per video
    if cfg.landmarks:
        landmark_weights()  # so does a missing landmark model
    out = Path(cfg.out)
    kw = {"splits_dir": cfg.ffpp_splits, "qualities": cfg.qualities} if cfg.dataset == "ffpp" else \
        {"qualities": cfg.qualities} if cfg.dataset == "dfd" else {}
    layout: Layout = read_layout(cfg.dataset, cfg.root, **kw)
    out.mkdir(parents=True, exist_ok=True)
    check_settings(cfg)
    records = sorted(layout.records, key=lambda r: r.video)
    i, n = cfg.shard
    mine = records[i::n]
    summary = PrepSummary(out / "manifest.jsonl", videos=len(mine),
                          problems=[asdict(p) for p in layout.problems])
    workers = cfg.workers or (os.cpu_count() or 1)
    bar = tqdm(total=len(mine), desc=f"rccl-prep {cfg.dataset}", unit="video", disable=not progress)
    outcomes: list[VideoOutcome] = []
    try:
        if workers <= 1 or len(mine) <= 1:
            for rec in mine:
                outcomes.append(run_one(cfg, rec, 0))
                bar.update()
        else:
            with ProcessPoolExecutor(min(workers, len(mine)), mp_context=get_context("forkserver")) as pool:
                futures = [pool.submit(run_one, cfg, rec, 1) for rec in mine]
                try:
                    for fut in as_completed(futures):
                        outcomes.append(fut.result())
                        bar.update()
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
    finally:
        bar.close()
    for o in outcomes:
        if o.done:
            summary.prepared += 1
        elif not o.skipped:
            summary.cached += 1
        if o.skipped:
            summary.skipped[o.video] = o.skipped
        summary.crops_written += sum(o.done.values())
        summary.warnings.extend(o.warnings)
    for o in outcomes:  # a skip cached by an earlier run is still reported
        for q in o.cached:
            sp = skip_path(out, q, o.video)
            if sp.is_file() and not part_path(out, q, o.video).is_file():
                reason = json.loads(sp.read_text(encoding="utf-8"))["reason"]
                summary.skipped.setdefault(o.video, {})[q] = f"{reason} (earlier run; --retry-skipped to try again)"
    _assemble_manifest(out, records, summary)
    summary.seconds = time.perf_counter() - t0
    write_text(out / "prep_report.json", json.dumps(
        {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(summary).items()}, indent=1))
    if log:
        log(summary.text())
    return summary


def _assemble_manifest(out: Path, records: list[VideoRecord], summary: PrepSummary) -> None:
    rows, videos = [], set()
    for rec in records:
        for q in QUALITIES:
            part = part_path(out, q, rec.video)
            if part.is_file():
                with open(part, encoding="utf-8") as f:
                    rows.extend(json.loads(line) for line in f if line.strip())
                videos.add(rec.video)
    write_manifest(out / "manifest.jsonl", rows)
    summary.rows = len(rows)
    summary.rows_by_quality = dict(Counter(r["quality"] for r in rows))
    first_quality = {}
    for r in rows:  # count each crop position once, at the first quality present for its video
        first_quality.setdefault(r["video"], r["quality"])
    summary.boxes_by_source = dict(Counter(r.get("box_source", "?") for r in rows
                                           if r["quality"] == first_quality[r["video"]]))
    summary.videos_in_manifest = len(videos)
    state = lambda r: "absent" if "landmarks" not in r else "failed" if r["landmarks"] is None else "fitted"  # noqa: E731
    summary.landmarks = dict(Counter(state(r) for r in rows))
    summary.landmark_problems = [f"{r['path']}: {r.get('landmarks_problem') or 'no landmarks'}" for r in rows
                                 if state(r) == "failed"]
    summary.videos_total = len(records)


def prepare(dataset: str, root: str | os.PathLike, out: str | os.PathLike, *, qualities=QUALITIES,
            workers: int = 0, pairs_per_video: int = 16, crop_size: int = 320, enlarge: float = 1.3,
            detect_size: int = 640, crop_format: str = "png", jpeg_quality: int = 98, compression: str = "qp",
            preset: str = "medium", boxes: str = "auto", decoder: str = "pyav", detector: str = DEFAULT_DETECTOR,
            shard: tuple[int, int] = (0, 1), landmarks: bool = True,
            ffpp_splits=None, retry_skipped: bool = False, progress: bool = True, log=print) -> Path:
    """Python entry point of rccl-prep: prepares `root` into `out` and returns the manifest's path."""
    if isinstance(qualities, str):
        qualities = tuple(q.strip() for q in qualities.split(",") if q.strip())
    cfg = PrepConfig(dataset=dataset, root=str(root), out=str(out), qualities=tuple(qualities),
                     pairs_per_video=pairs_per_video, crop_size=crop_size, enlarge=enlarge, detect_size=detect_size,
                     crop_format=crop_format, jpeg_quality=jpeg_quality, compression=compression, preset=preset,
                     boxes=boxes, decoder=decoder, detector=detector, landmarks=landmarks,
                     workers=workers, shard=tuple(shard), ffpp_splits=str(ffpp_splits) if ffpp_splits else None,
                     retry_skipped=retry_skipped)
    return run_prep(cfg, progress=progress, log=log).manifest

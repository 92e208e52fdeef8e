"""rccl-prep: dataset tree -> compressed copies -> face boxes -> crops on disk + manifest.jsonl.

Layout of OUT:
    manifest.jsonl                         one row per crop (rccl.data.manifest; columns in docs/data.md)
    crops/<quality>/<video without ext>/<frame:06d>.png   (or .jpg)
    videos/<quality>/<video>               c23 / c40 copies made here (Celeb-DF and synthetic trees)
    boxes/<video>.json                     the boxes detected on raw, reused for c23 / c40
    parts/<quality>/<video>.jsonl          the rows of one video at one quality: its presence = done
    parts/<quality>/<video>.skip.json      why that video was skipped at that quality
    prep.json                              the settings OUT was made with (a rerun must match them)
    prep_report.json                       the last run's summary, skipped videos and layout problems

Work is parallel over videos (a process pool), resumable and idempotent: every file is written to a
hidden temporary name and renamed into place, and a video's rows are written only after all its crops,
so a kill leaves nothing half-written and a rerun does only what is missing. --shard I/N takes every N-th
video; every run rewrites the manifest from all the parts present.
"""
from __future__ import annotations

import io
import json
import os
import signal
import time
import traceback
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

from rccl.data.compress import QUALITY_QUANTISER, compress_video
from rccl.data.faces import DEFAULT_DETECTOR, DETECTOR_NAMES, FaceCropper, fill_missing_boxes, find_subject
from rccl.data.layouts import QUALITIES, Layout, VideoRecord, read_layout
from rccl.data.manifest import write_manifest
from rccl.data.video import VideoError, VideoInfo, pair_indices, probe, read_frames
from rccl.errors import RcclError
from rccl.fileio import atomic_write, write_text

CROP_FORMATS = {"png": "PNG", "jpg": "JPEG"}
# settings that change what lands on disk: a rerun into the same OUT must use the same ones
_SETTINGS_KEYS = ("dataset", "pairs_per_video", "crop_size", "enlarge", "detect_size", "crop_format",
                  "jpeg_quality", "compression", "preset", "boxes", "decoder", "detector")
BOX_MODES = ("auto", "detect", "truth")
# what an OUT made before a setting existed was made with, where that differs from today's default
_BEFORE_THE_SETTING = {"detector": "dlib"}


class PrepError(RcclError, RuntimeError):
    """Preparation cannot start (bad settings, an OUT made with other settings); the message says why."""


@dataclass(frozen=True)
class PrepConfig:
    dataset: str
    root: str
    out: str
    qualities: tuple[str, ...] = QUALITIES
    pairs_per_video: int = 16
    crop_size: int = 320
    enlarge: float = 1.3
    detect_size: int = 640
    crop_format: str = "png"
    jpeg_quality: int = 98
    compression: str = "qp"      # "qp" (the paper's -qp 23 / -qp 40) or "crf" (FaceForensics++'s way)
    preset: str = "medium"       # x264 preset for the copies made here (ffmpeg's default)
    workers: int = 0             # 0: one per CPU core
    shard: tuple[int, int] = (0, 1)
    ffpp_splits: str | None = None
    retry_skipped: bool = False
    # "detect": dlib on every sampled frame; true boxes (synthetic trees) where it finds none, then the
    # nearest detected box. "truth": the true boxes of a synthetic tree, no detection. "auto": "truth" for
    # a procedural synthetic tree (dlib fires on ~31 % of the demo fakes' frames and ~2.5 % of the naturals':
    # mixing its boxes with the true ones would make crop geometry tell the label), "detect" otherwise.
    boxes: str = "auto"
    # "pyav" (CPU), "dali" (NVDEC on the GPU, rccl.data.dali_video) or "auto" (DALI when a GPU and DALI
    # are there). Part of the settings: the two may convert YUV to RGB a hair differently.
    decoder: str = "pyav"
    # face detector (rccl.data.faces.DETECTOR_NAMES); the manifest's `detector` column says which one
    # found each box (the cascade's two stages by name)
    detector: str = DEFAULT_DETECTOR

    def settings(self) -> dict:
        return {k: getattr(self, k) for k in _SETTINGS_KEYS}


@dataclass
class VideoOutcome:
    video: str
    done: dict[str, int] = field(default_factory=dict)      # quality -> crops written now
    cached: list[str] = field(default_factory=list)         # qualities already done by an earlier run
    skipped: dict[str, str] = field(default_factory=dict)   # quality -> reason
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


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
                 f"  manifest covers {self.videos_in_manifest} of {self.videos_total} videos of the dataset",
                 f"  time: {self.seconds:.1f} s"]
        for video, reasons in sorted(self.skipped.items())[:20]:
            for q, why in reasons.items():
                lines.append(f"  skipped {video} [{q}]: {why}")
        if len(self.skipped) > 20:
            lines.append(f"  ... {len(self.skipped) - 20} more skipped videos in prep_report.json")
        for w in self.warnings[:10]:
            lines.append(f"  warning: {w}")
        if self.problems:
            lines.append(f"  dataset tree problems: {len(self.problems)} (entries ignored; all in prep_report.json)")
            for p in self.problems[:10]:
                lines.append(f"    {p['path']}: {p['reason']}")
        if self.videos_in_manifest < self.videos_total:
            lines.append("  (run the other shards or rerun to fill the manifest; a rerun only does what is missing)")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------- paths
def _no_ext(video: str) -> str:
    return str(Path(video).with_suffix(""))


def crop_relpath(quality: str, video: str, frame: int, fmt: str) -> str:
    return f"crops/{quality}/{_no_ext(video)}/{frame:06d}.{fmt}"


def _part_path(out: Path, quality: str, video: str) -> Path:
    return out / "parts" / quality / (video + ".jsonl")


def _skip_path(out: Path, quality: str, video: str) -> Path:
    return out / "parts" / quality / (video + ".skip.json")


def _atomic_write_text(path: Path, text: str) -> None:
    write_text(path, text)


# Test-only hook (the resume tests): "N:kill" or "N:interrupt" makes this process die by SIGKILL, or
# raise KeyboardInterrupt, halfway through writing its N-th crop (half the bytes in the temporary file).
_DIE_AT_CROP_ENV = "RCCL_TEST_DIE_AT_CROP"
_crops_started = 0


def _maybe_die(f) -> None:
    global _crops_started
    hook = os.environ.get(_DIE_AT_CROP_ENV)
    if not hook:
        return
    _crops_started += 1
    n, how = hook.split(":")
    if _crops_started == int(n):
        f.flush()
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise KeyboardInterrupt


def save_image_atomic(path: Path, array: np.ndarray, fmt: str, jpeg_quality: int = 98) -> None:
    """Write a crop through rccl.fileio.atomic_write: never a half-written crop."""
    img, buf = Image.fromarray(array), io.BytesIO()
    if fmt == "png":
        img.save(buf, format="PNG", compress_level=1)  # lossless either way; level 1 is ~3x faster than 6
    else:
        img.save(buf, format="JPEG", quality=jpeg_quality, subsampling=0)  # 4:4:4: keep the chroma
    data = buf.getvalue()
    with atomic_write(path, "wb") as f:
        f.write(data[: len(data) // 2])
        _maybe_die(f)
        f.write(data[len(data) // 2:])


# --------------------------------------------------------------------------------------------- one video
def _quality_source(cfg: PrepConfig, rec: VideoRecord, quality: str) -> Path:
    """The file to read `quality` from: FF++ ships its own; elsewhere raw is the tree's, the rest are ours."""
    if rec.ships_qualities:
        return rec.quality_path(cfg.root, quality)
    if quality == "raw":
        return Path(cfg.root) / rec.video
    return Path(cfg.out) / "videos" / quality / rec.video


def _ensure_copy(cfg: PrepConfig, rec: VideoRecord, quality: str, threads: int) -> Path:
    path = _quality_source(cfg, rec, quality)
    if not rec.ships_qualities and quality != "raw" and not path.is_file():
        compress_video(Path(cfg.root) / rec.video, path, quantiser=QUALITY_QUANTISER[quality],
                       mode=cfg.compression, preset=cfg.preset, threads=threads)
    return path


def _truth_boxes(cfg: PrepConfig, rec: VideoRecord) -> list | None:
    """True face boxes written beside a synthetic tree (rccl-synth), or None."""
    path = Path(cfg.root) / "boxes" / Path(rec.video).with_suffix(".json")
    if rec.dataset != "synthetic" or not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))["boxes"]


def resolve_box_mode(cfg: PrepConfig) -> str:
    if cfg.boxes not in BOX_MODES:
        raise PrepError(f"boxes must be one of {', '.join(BOX_MODES)}, got {cfg.boxes!r}")
    if cfg.boxes != "auto":
        if cfg.boxes == "truth" and cfg.dataset != "synthetic":
            raise PrepError("--boxes truth needs a synthetic tree (rccl-synth writes the true boxes); "
                            f"{cfg.dataset} has none")
        return cfg.boxes
    if cfg.dataset == "synthetic":
        params = Path(cfg.root) / "synth.json"
        made = json.loads(params.read_text(encoding="utf-8")) if params.is_file() else {}
        if made.get("faces_dir") is None:
            return "truth"
    return "detect"


def _boxes_for(cfg: PrepConfig, rec: VideoRecord, cropper: FaceCropper, frames: dict, indices: list[int],
               n_frames: int, det_quality: str, mode: str) -> dict:
    """Boxes of the sampled frames, found once and cached in OUT/boxes/<video>.json."""
    cache = Path(cfg.out) / "boxes" / (rec.video + ".json")
    if cache.is_file():
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if cached.get("frames") == indices:
            return cached
    truth = _truth_boxes(cfg, rec)
    if mode == "truth" and truth is None:
        raise VideoError(f"no true boxes for this video (expected {Path(cfg.root) / 'boxes'}/"
                         f"{Path(rec.video).with_suffix('.json')})")
    present = [i for i in indices if i in frames] if mode == "detect" else []
    tracked = dict(zip(present, find_subject([frames[i] for i in present], cropper.detector)))
    found = [(tracked[i].box, tracked[i].detector) if tracked.get(i) is not None else None for i in indices]
    sources = [f[1] if f is not None else None for f in found]
    if truth is not None:
        for k, i in enumerate(indices):
            if found[k] is None and i < len(truth):
                found[k], sources[k] = (tuple(truth[i]), "truth"), "truth"
    filled, have = fill_missing_boxes(found, positions=indices)
    sources = [s if s is not None else "nearest" for s in sources]
    result = {"frames": indices, "n_frames": n_frames, "detected_on": det_quality,
              "boxes": [list(b[0]) if b is not None else None for b in filled], "box_source": sources,
              "detector": [b[1] if b is not None else None for b in filled]}
    _atomic_write_text(cache, json.dumps(result))
    return result


def frame_reader(decoder: str):
    """rccl.data.video.read_frames, or the DALI drop-in with the same contract (imported only if asked)."""
    if decoder == "pyav":
        return read_frames
    from rccl.data.dali_video import frame_reader as dali_frame_reader

    try:
        return dali_frame_reader(decoder)
    except (RuntimeError, ValueError) as e:
        raise PrepError(str(e)) from None


def process_video(cfg: PrepConfig, rec: VideoRecord, threads: int = 0) -> VideoOutcome:
    """Prepare one video at every asked quality; never raises for a bad video (the reason is returned)."""
    t0 = time.perf_counter()
    out = Path(cfg.out)
    res = VideoOutcome(rec.video)
    todo = []
    for q in cfg.qualities:
        skipped_before = _skip_path(out, q, rec.video).is_file() and not cfg.retry_skipped
        if _part_path(out, q, rec.video).is_file() or skipped_before:
            res.cached.append(q)
        else:
            todo.append(q)
    if rec.is_image:  # an image is one frame of its own quality: no compressed copies are made of it
        for q in [q for q in todo if q != "raw"]:
            todo.remove(q)
            res.skipped[q] = f"an image has no {q} copy (only raw is prepared from images)"
    if not todo:
        return res
    cropper = FaceCropper(enlarge=cfg.enlarge, crop_size=cfg.crop_size, detect_size=cfg.detect_size,
                          detector=cfg.detector)
    read = frame_reader(cfg.decoder)
    try:
        det_quality, det_path = _detection_source(cfg, rec)
        if rec.is_image:
            read = _image_reader
            info = VideoInfo(1, 0, 0, 0.0, "image")
            pairs = [(0,)]  # one crop; its "pair" has one member
        else:
            info = probe(det_path)
            pairs = pair_indices(info.n_frames, cfg.pairs_per_video)
        if not pairs:
            raise VideoError(f"{det_path}: only {info.n_frames} frame(s), need at least 2 for a pair")
        indices = [i for p in pairs for i in p]
        boxes_cache = Path(cfg.out) / "boxes" / (rec.video + ".json")
        det_frames = {}
        mode = resolve_box_mode(cfg)
        if (not boxes_cache.is_file() and mode == "detect") or det_quality in todo:
            det_frames = read(det_path, indices, threads=threads)
            if not det_frames:
                raise VideoError(f"{det_path}: no frame could be decoded")
        boxes = _boxes_for(cfg, rec, cropper, det_frames, indices, info.n_frames, det_quality, mode)
        if all(b is None for b in boxes["boxes"]):
            raise VideoError(f"no face found by {cfg.detector} in any of the {len(indices)} sampled frames "
                             f"(decoded {len(det_frames)} of them)")
    except VideoError as e:
        reason = str(e)
        for q in todo:
            res.skipped[q] = reason
            _atomic_write_text(_skip_path(out, q, rec.video), json.dumps({"video": rec.video, "reason": reason}))
        res.seconds = time.perf_counter() - t0
        return res

    box_of = dict(zip(boxes["frames"], boxes["boxes"]))
    source_of = dict(zip(boxes["frames"], boxes["box_source"]))
    detector_of = dict(zip(boxes["frames"], boxes.get("detector") or [None] * len(boxes["frames"])))
    pair_of = {i: k for k, p in enumerate(pairs) for i in p}
    for q in todo:
        try:
            path = _ensure_copy(cfg, rec, q, threads)
            if q == det_quality and det_frames:
                frames = det_frames
            else:
                if path != det_path:
                    n_q = probe(path).n_frames
                    if n_q != info.n_frames:
                        res.warnings.append(f"{rec.video} [{q}]: {n_q} frames, the {det_quality} version has "
                                            f"{info.n_frames}; boxes are reused by frame index")
                frames = read(path, indices, threads=threads)
            complete = [p for p in pairs if all(i in frames for i in p)]
            if not complete:
                raise VideoError(f"{path}: none of the {len(pairs)} frame pairs decoded (truncated or corrupt)")
            if len(complete) < len(pairs):
                res.warnings.append(f"{rec.video} [{q}]: {len(pairs) - len(complete)} of {len(pairs)} pairs "
                                    f"did not decode (truncated?); kept {len(complete)}")
            rows = []
            for p in complete:
                for i in p:
                    h, w = frames[i].shape[:2]
                    box = cropper.enlarge_box(box_of[i], w, h)
                    rel = crop_relpath(q, rec.video, i, cfg.crop_format)
                    save_image_atomic(out / rel, cropper.crop(frames[i], box), cfg.crop_format, cfg.jpeg_quality)
                    rows.append(_row(cfg, rec, q, rel, i, pair_of[i], box, source_of[i], detector_of[i]))
            _atomic_write_text(_part_path(out, q, rec.video), "".join(json.dumps(r) + "\n" for r in rows))
            res.done[q] = len(rows)
        except VideoError as e:
            res.skipped[q] = str(e)
            _atomic_write_text(_skip_path(out, q, rec.video), json.dumps({"video": rec.video, "reason": str(e)}))
    res.seconds = time.perf_counter() - t0
    return res


def _image_reader(path, indices, threads: int = 0) -> dict[int, np.ndarray]:
    """An image as frame 0 (EXIF rotation applied), with read_frames' contract."""
    from PIL import ImageOps

    try:
        with Image.open(path) as im:
            return {0: np.asarray(ImageOps.exif_transpose(im).convert("RGB"))}
    except (OSError, ValueError) as e:
        raise VideoError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def _detection_source(cfg: PrepConfig, rec: VideoRecord) -> tuple[str, Path]:
    """Detect on raw (sharpest); FF++ trees without raw fall back to c23, then c40."""
    if not rec.ships_qualities:
        return "raw", Path(cfg.root) / rec.video
    for q in QUALITIES:
        p = rec.quality_path(cfg.root, q)
        if p.is_file():
            return q, p
    raise VideoError(f"no file for {rec.video} at any quality ({', '.join(QUALITIES)})")


def _row(cfg, rec: VideoRecord, quality, rel, frame, pair, box, box_source, detector) -> dict:
    if quality == "raw":
        compression = "raw"
    elif rec.ships_qualities:
        compression = "as distributed"
    else:
        compression = f"{cfg.compression}{QUALITY_QUANTISER[quality]}"
    return {"path": rel, "dataset": rec.dataset, "split": rec.split, "quality": quality, "video": rec.video,
            "label": rec.label, "frame": frame, "pair": pair, "source": rec.source, "target": rec.target,
            "identity": rec.identity, "box": [int(v) for v in box],
            "method": rec.method, "detected": box_source not in ("nearest", "truth"), "box_source": box_source,
            "detector": detector or "",
            "crop_size": cfg.crop_size, "compression": compression}


def _worker(cfg: PrepConfig, rec: VideoRecord, threads: int) -> VideoOutcome:
    try:
        return process_video(cfg, rec, threads)
    except Exception as e:  # a bug or an unexpected library error: report it, keep the run going, retry next run
        res = VideoOutcome(rec.video)
        msg = f"internal error {type(e).__name__}: {e} ({traceback.format_exc(limit=-1).strip().splitlines()[0]})"
        res.skipped = {q: msg for q in cfg.qualities}
        return res


# --------------------------------------------------------------------------------------------- the run
def _check_settings(cfg: PrepConfig) -> None:
    out = Path(cfg.out)
    path = out / "prep.json"
    want = cfg.settings()
    if path.is_file():
        # a setting added after OUT was made counts as its default (OUT was made that way)
        defaults = {k: f.default for k, f in PrepConfig.__dataclass_fields__.items()} | _BEFORE_THE_SETTING
        have = {k: defaults.get(k) for k in want} | json.loads(path.read_text(encoding="utf-8"))
        diff = {k: (have.get(k), want[k]) for k in want if have.get(k) != want[k]}
        if diff:
            raise PrepError(f"{out} was prepared with other settings (was, now): {diff}. Use another --out, or "
                            f"the same settings to resume")
    else:
        _atomic_write_text(path, json.dumps({**want, "root": str(Path(cfg.root).resolve())}, indent=1))


def _validate(cfg: PrepConfig) -> None:
    bad = [q for q in cfg.qualities if q not in QUALITIES]
    if bad or not cfg.qualities:
        raise PrepError(f"qualities must be among {', '.join(QUALITIES)}, got {','.join(cfg.qualities) or 'none'}")
    if cfg.decoder not in ("pyav", "dali", "auto"):
        raise PrepError(f"video decoder must be pyav, dali or auto, got {cfg.decoder!r}")
    if cfg.crop_format not in CROP_FORMATS:
        raise PrepError(f"crop format must be png or jpg, got {cfg.crop_format!r}")
    if cfg.detector not in DETECTOR_NAMES:
        raise PrepError(f"face detector must be one of {', '.join(DETECTOR_NAMES)}, got {cfg.detector!r}")
    if cfg.compression not in ("qp", "crf"):
        raise PrepError(f"compression must be qp or crf, got {cfg.compression!r}")
    i, n = cfg.shard
    if not (n >= 1 and 0 <= i < n):
        raise PrepError(f"shard must be I/N with 0 <= I < N, got {i}/{n}")
    if cfg.pairs_per_video < 1:
        raise PrepError(f"pairs_per_video must be >= 1, got {cfg.pairs_per_video}")
    if not 1 <= cfg.jpeg_quality <= 100:
        raise PrepError(f"jpeg quality must be in 1..100, got {cfg.jpeg_quality}")


def run_prep(cfg: PrepConfig, *, progress: bool = True, log=print) -> PrepSummary:
    """Prepare a dataset (see the module docstring); returns the summary, also saved in prep_report.json."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    _validate(cfg)
    resolve_box_mode(cfg)
    frame_reader(cfg.decoder)  # a decoder that cannot work here fails now, not once per video
    out = Path(cfg.out)
    kw = {"splits_dir": cfg.ffpp_splits, "qualities": cfg.qualities} if cfg.dataset == "ffpp" else \
        {"qualities": cfg.qualities} if cfg.dataset == "dfd" else {}
    layout: Layout = read_layout(cfg.dataset, cfg.root, **kw)
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(cfg)
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
                outcomes.append(_worker(cfg, rec, 0))
                bar.update()
        else:
            with ProcessPoolExecutor(min(workers, len(mine)), mp_context=get_context("forkserver")) as pool:
                futures = [pool.submit(_worker, cfg, rec, 1) for rec in mine]
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
            sp = _skip_path(out, q, o.video)
            if sp.is_file() and not _part_path(out, q, o.video).is_file():
                reason = json.loads(sp.read_text(encoding="utf-8"))["reason"]
                summary.skipped.setdefault(o.video, {})[q] = f"{reason} (earlier run; --retry-skipped to try again)"
    _assemble_manifest(out, records, summary)
    summary.seconds = time.perf_counter() - t0
    _atomic_write_text(out / "prep_report.json", json.dumps(
        {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(summary).items()}, indent=1))
    if log:
        log(summary.text())
    return summary


def _assemble_manifest(out: Path, records: list[VideoRecord], summary: PrepSummary) -> None:
    rows, videos = [], set()
    for rec in records:
        for q in QUALITIES:
            part = _part_path(out, q, rec.video)
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
    summary.videos_total = len(records)


def prepare(dataset: str, root: str | os.PathLike, out: str | os.PathLike, *, qualities=QUALITIES,
            workers: int = 0, pairs_per_video: int = 16, crop_size: int = 320, enlarge: float = 1.3,
            detect_size: int = 640, crop_format: str = "png", jpeg_quality: int = 98, compression: str = "qp",
            preset: str = "medium", boxes: str = "auto", decoder: str = "pyav", detector: str = DEFAULT_DETECTOR,
            shard: tuple[int, int] = (0, 1),
            ffpp_splits=None, retry_skipped: bool = False, progress: bool = True, log=print) -> Path:
    """Python entry point of rccl-prep: prepares `root` into `out` and returns the manifest's path."""
    if isinstance(qualities, str):
        qualities = tuple(q.strip() for q in qualities.split(",") if q.strip())
    cfg = PrepConfig(dataset=dataset, root=str(root), out=str(out), qualities=tuple(qualities),
                     pairs_per_video=pairs_per_video, crop_size=crop_size, enlarge=enlarge, detect_size=detect_size,
                     crop_format=crop_format, jpeg_quality=jpeg_quality, compression=compression, preset=preset,
                     boxes=boxes, decoder=decoder, detector=detector,
                     workers=workers, shard=tuple(shard), ffpp_splits=str(ffpp_splits) if ffpp_splits else None,
                     retry_skipped=retry_skipped)
    return run_prep(cfg, progress=progress, log=log).manifest

"""The per-video worker: every asked quality of one video, never raising for a bad video."""
from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from rccl.data.faces import FaceCropper
from rccl.data.faces.landmarks import LandmarkPredictor, box_in_crop, crop_landmarks
from rccl.data.layouts import VideoRecord
from rccl.data.video import VideoError, VideoInfo, pair_indices, probe
from rccl.fileio import write_text
from rccl.data.prep.boxes import boxes_for
from rccl.data.prep.config import PrepConfig, resolve_box_mode
from rccl.data.prep.outdir import crop_relpath, manifest_row, part_path, save_image_atomic, skip_path
from rccl.data.prep.plan import detection_source, ensure_copy, image_reader, frame_reader


@dataclass
class VideoOutcome:
    video: str
    done: dict[str, int] = field(default_factory=dict)      # quality -> crops written now
    cached: list[str] = field(default_factory=list)         # qualities already done by an earlier run
    skipped: dict[str, str] = field(default_factory=dict)   # quality -> reason
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def process_video(cfg: PrepConfig, rec: VideoRecord, threads: int = 0) -> VideoOutcome:
    """Prepare one video at every asked quality; never raises for a bad video (the reason is returned)."""
    t0 = time.perf_counter()
    out = Path(cfg.out)
    res = VideoOutcome(rec.video)
    todo = []
    for q in cfg.qualities:
        skipped_before = skip_path(out, q, rec.video).is_file() and not cfg.retry_skipped
        if part_path(out, q, rec.video).is_file() or skipped_before:
            res.cached.append(q)
        else:
            todo.append(q)
    if not todo:
        return res
    cropper = FaceCropper(enlarge=cfg.enlarge, crop_size=cfg.crop_size, detect_size=cfg.detect_size,
                          detector=cfg.detector)
    read = frame_reader(cfg.decoder)
    try:
        det_quality, det_path = detection_source(cfg, rec)
        if rec.is_image:  # one frame; its c23 / c40 copies are one-frame videos (plan.ensure_copy)
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
            det_frames = (image_reader if rec.is_image else read)(det_path, indices, threads=threads)
            if not det_frames:
                raise VideoError(f"{det_path}: no frame could be decoded")
        boxes = boxes_for(cfg, rec, cropper, det_frames, indices, info.n_frames, det_quality, mode)
        if all(b is None for b in boxes["boxes"]):
            raise VideoError(f"no face found by {cfg.detector} in any of the {len(indices)} sampled frames "
                             f"(decoded {len(det_frames)} of them)")
    except VideoError as e:
        reason = str(e)
        for q in todo:
            res.skipped[q] = reason
            write_text(skip_path(out, q, rec.video), json.dumps({"video": rec.video, "reason": reason}))
        res.seconds = time.perf_counter() - t0
        return res

    box_of = dict(zip(boxes["frames"], boxes["boxes"]))
    source_of = dict(zip(boxes["frames"], boxes["box_source"]))
    detector_of = dict(zip(boxes["frames"], boxes.get("detector") or [None] * len(boxes["frames"])))
    pair_of = {i: k for k, p in enumerate(pairs) for i in p}
    landmarks_of: dict[int, dict] = {}  # frame -> landmark columns, fitted on the first quality's crop
    predictor = LandmarkPredictor() if cfg.landmarks else None
    for q in todo:
        try:
            path = ensure_copy(cfg, rec, q, threads)
            if q == det_quality and det_frames:
                frames = det_frames
            else:
                if path != det_path:
                    n_q = probe(path).n_frames
                    if n_q != info.n_frames:
                        res.warnings.append(f"{rec.video} [{q}]: {n_q} frames, the {det_quality} version has "
                                            f"{info.n_frames}; boxes are reused by frame index")
                frames = read(path, indices, threads=threads)
                if rec.is_image:  # cut the padding of an odd side off: the raw image's geometry, its boxes
                    h, w = (det_frames or image_reader(det_path, [0]))[0].shape[:2]
                    frames = {i: f[:h, :w] for i, f in frames.items()}
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
                    crop = cropper.crop(frames[i], box)
                    save_image_atomic(out / rel, crop, cfg.crop_format, cfg.jpeg_quality)
                    row = manifest_row(cfg, rec, q, rel, i, pair_of[i], box, source_of[i], detector_of[i])
                    if predictor is not None:
                        if i not in landmarks_of:  # the same geometry at every quality: fit once
                            pts, problem = crop_landmarks(predictor, crop, box_in_crop(box_of[i], box, cfg.crop_size))
                            landmarks_of[i] = {"landmarks": pts, "landmarks_problem": problem}
                        row.update(landmarks_of[i])
                    rows.append(row)
            write_text(part_path(out, q, rec.video), "".join(json.dumps(r) + "\n" for r in rows))
            res.done[q] = len(rows)
        except VideoError as e:
            res.skipped[q] = str(e)
            write_text(skip_path(out, q, rec.video), json.dumps({"video": rec.video, "reason": str(e)}))
    res.seconds = time.perf_counter() - t0
    return res


def run_one(cfg: PrepConfig, rec: VideoRecord, threads: int) -> VideoOutcome:
    try:
        return process_video(cfg, rec, threads)
    except Exception as e:  # a bug or an unexpected library error: report it, keep the run going, retry next run
        res = VideoOutcome(rec.video)
        msg = f"internal error {type(e).__name__}: {e} ({traceback.format_exc(limit=-1).strip().splitlines()[0]})"
        res.skipped = {q: msg for q in cfg.qualities}
        return res

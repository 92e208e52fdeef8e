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

from rccl.data.layouts import read_layout  # noqa: F401  (tests and callers reach the layouts through prep)
from rccl.data.prep.config import BOX_MODES, CROP_FORMATS, PrepConfig, PrepError, resolve_box_mode
from rccl.data.prep.driver import PrepSummary, prepare, run_prep
from rccl.data.prep.outdir import crop_relpath, save_image_atomic
from rccl.data.prep.plan import frame_reader
from rccl.data.prep.worker import VideoOutcome, process_video

__all__ = ["BOX_MODES", "CROP_FORMATS", "PrepConfig", "PrepError", "PrepSummary", "VideoOutcome", "crop_relpath",
           "frame_reader", "prepare", "process_video", "read_layout", "resolve_box_mode", "run_prep",
           "save_image_atomic"]

"""rccl-prep's settings: the one PrepConfig, its checks, and the settings an OUT was made with."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rccl.data.faces import DEFAULT_DETECTOR, DETECTOR_NAMES
from rccl.data.layouts import QUALITIES
from rccl.fileio import write_text
from rccl.errors import RcclError


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
    # 68 landmarks per crop in crop pixels (rccl.data.faces.landmarks; self-blending needs them). Not one of
    # the settings: a manifest's rows say themselves whether they have them (no column: made without).
    landmarks: bool = True

    def settings(self) -> dict:
        return {k: getattr(self, k) for k in _SETTINGS_KEYS}


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


def check_settings(cfg: PrepConfig) -> None:
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
        write_text(path, json.dumps({**want, "root": str(Path(cfg.root).resolve())}, indent=1))


def validate(cfg: PrepConfig) -> None:
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

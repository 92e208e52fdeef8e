"""Writing a synthetic tree to disk: the videos (H.264 at raw_qp), their face boxes, the test list and
synth.json, in the Celeb-DF-v2 layout. Idempotent and resumable: every file is written atomically, a
finished tree (synth.json present) is returned at once, an interrupted one is completed."""
from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from rccl.data.compress import H264Writer
from rccl.data.layouts import CELEBDF_TEST_LIST
from rccl.data.synth.forge import fake_params, source_face, swap_face
from rccl.data.synth.params import PARAMS_FILE, TRACES, SynthConfig, SynthError, seeded_rng
from rccl.data.synth.plan import test_list_lines, video_plan
from rccl.data.synth.render import Face, motion, natural_frame, photo_identities, true_box
from rccl.fileio import write_json, write_lines


def detector_like(cfg: SynthConfig, video: str, exact: list[list[int]]) -> list[list[int]]:
    """The exact boxes moved and scaled the way a detector's boxes wander: a per-video offset and scale
    plus a small per-frame jitter. Without it every crop would put the eyes on the same pixels, which
    makes blur around them visible even to a linear model on raw pixels; a detector never does that."""
    rng = seeded_rng(cfg, "box-jitter", video)
    off, zoom = rng.normal(0, 0.05, 2), rng.normal(0, 0.04)
    out = []
    for x0, y0, x1, y1 in exact:
        side = max(x1 - x0, y1 - y0)
        cx = (x0 + x1) / 2 + side * (off[0] + rng.normal(0, 0.02))
        cy = (y0 + y1) / 2 + side * (off[1] + rng.normal(0, 0.02))
        half = side / 2 * (1 + zoom + rng.normal(0, 0.015))
        out.append([int(max(0, round(cx - half))), int(max(0, round(cy - half))),
                    int(min(cfg.size, round(cx + half))), int(min(cfg.size, round(cy + half)))])
    return out


def make_video(cfg: SynthConfig, item: dict, root: Path, photo_ids) -> str:
    """One video of the plan and its boxes file (skipped when both exist: writes are atomic)."""
    dst = root / item["video"]
    box_path = root / "boxes" / Path(item["video"]).with_suffix(".json")
    if dst.is_file() and box_path.is_file():
        return item["video"]  # made by an earlier, interrupted run
    if item["kind"] == "youtube":
        ident_name, source_key = f"yt{item['number']}", item["video"]
        photos = photo_ids[item["number"] % len(photo_ids)][1] if photo_ids else None
    else:
        ident_name = f"id{item['identity']}"
        source_key = f"Celeb-real/id{item['identity']}_{item['number']:04d}.mp4"
        photos = photo_ids[item["identity"]][1] if photo_ids else None
    m = motion(cfg, source_key)
    face_x = Face(cfg, ident_name, photos, source_key)
    fake_m, face_y = None, None
    if item["kind"] == "fake":
        y = item["target"]
        face_y = source_face(cfg, face_x, Face(cfg, f"id{y}", photo_ids[y][1] if photo_ids else None, item["video"]))
        fake_m = fake_params(cfg, item["video"])
    exact = []
    with H264Writer(dst, width=cfg.size, height=cfg.size, rate=cfg.fps, quantiser=cfg.raw_qp, mode="qp",
                    preset="fast", threads=1) as writer:
        for i in range(cfg.n_frames):
            t = i / cfg.fps
            frame_rng = seeded_rng(cfg, "grain", source_key, i)  # same grain in a fake as in its source
            frame, geom = natural_frame(cfg, m, face_x, t, frame_rng)
            if fake_m is not None:
                frame = swap_face(cfg, m, fake_m, face_y, geom, frame, i)
            writer.write(np.clip(frame, 0, 255).round().astype(np.uint8))
            exact.append(true_box(geom[0], geom[1], geom[2], cfg.size))
    write_json(box_path, {"video": item["video"], "boxes": detector_like(cfg, item["video"], exact),
                          "exact": exact,
                          "note": "face boxes per frame (x0, y0, x1, y1), tight like dlib's, not enlarged: 'exact' "
                                  "from the renderer; 'boxes' with a detector's jitter (what rccl-prep uses)"},
               indent=1)
    return item["video"]


def generator_down_pair(value) -> tuple[float, float]:
    """generator_down as a (lo, hi) pair of floats (a list from JSON, YAML or the CLI is accepted)."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise SynthError(f"generator_down must be two numbers [lo, hi], got {value!r}") from None
    return lo, hi


def check_config(cfg: SynthConfig) -> None:
    """Every parameter a tree cannot be made with, named."""
    if cfg.n_identities < 2:
        raise SynthError(f"n_identities must be at least 2 (fakes swap one identity into another), got "
                         f"{cfg.n_identities}")
    if not 1 <= cfg.test_videos_per_identity < cfg.videos_per_identity:
        raise SynthError(f"test_videos_per_identity must be in 1..videos_per_identity-1, got "
                         f"{cfg.test_videos_per_identity} with videos_per_identity={cfg.videos_per_identity}")
    if cfg.size % 2 or cfg.size < 32:
        raise SynthError(f"size must be even and at least 32, got {cfg.size}")
    if cfg.n_frames < 2:
        raise SynthError(f"n_frames must be at least 2 (pairs of consecutive frames), got {cfg.n_frames}")
    if cfg.n_youtube < 0:
        raise SynthError(f"n_youtube must be >= 0, got {cfg.n_youtube}")
    if cfg.traces not in TRACES:
        raise SynthError(f"traces must be one of {', '.join(TRACES)}, got {cfg.traces!r}")
    lo, hi = cfg.generator_down
    if not 1 <= lo <= hi:
        raise SynthError(f"generator_down must be [lo, hi] with 1 <= lo <= hi (a resolution-loss factor), got "
                         f"{list(cfg.generator_down)}")
    for key in ("seam_scale", "checker_scale"):
        if getattr(cfg, key) < 0:
            raise SynthError(f"{key} must be >= 0, got {getattr(cfg, key)}")
    if cfg.artifact_strength < 0:
        raise SynthError(f"artifact_strength must be >= 0, got {cfg.artifact_strength}")


def make_synthetic(out_dir: str | os.PathLike, *, seed: int = SynthConfig.seed,
                   n_identities: int = SynthConfig.n_identities,
                   videos_per_identity: int = SynthConfig.videos_per_identity,
                   test_videos_per_identity: int = SynthConfig.test_videos_per_identity,
                   n_youtube: int = SynthConfig.n_youtube, n_frames: int = SynthConfig.n_frames,
                   size: int = SynthConfig.size, fps: int = SynthConfig.fps,
                   artifact_strength: float = SynthConfig.artifact_strength, raw_qp: int = SynthConfig.raw_qp,
                   traces: str = SynthConfig.traces,
                   generator_down: tuple[float, float] = SynthConfig.generator_down,
                   seam_scale: float = SynthConfig.seam_scale, checker_scale: float = SynthConfig.checker_scale,
                   faces_dir: str | os.PathLike | None = None,
                   workers: int | None = None, progress: bool = True) -> Path:
    """Write the synthetic Celeb-DF-v2-shaped tree under out_dir (idempotent: a finished tree with the same
    parameters is returned at once; an interrupted one is completed). Returns out_dir."""
    out = Path(out_dir)
    photo_ids = None
    if faces_dir is not None:
        photo_ids = photo_identities(Path(faces_dir))
        n_identities = len(photo_ids) if n_identities is None else min(n_identities, len(photo_ids))
        photo_ids = photo_ids[:n_identities]
        faces_dir = str(Path(faces_dir).resolve())
    cfg = SynthConfig(seed, n_identities, videos_per_identity, test_videos_per_identity, n_youtube, n_frames, size,
                      fps, float(artifact_strength), raw_qp, faces_dir, traces, generator_down_pair(generator_down),
                      float(seam_scale), float(checker_scale))
    check_config(cfg)
    want = cfg.record()
    done_file, started_file = out / PARAMS_FILE, out / ("." + PARAMS_FILE + ".started")
    for f in (done_file, started_file):
        if f.is_file():
            have = json.loads(f.read_text(encoding="utf-8"))
            if have != want:
                diff = {k: (have.get(k), want.get(k)) for k in {**have, **want} if have.get(k) != want.get(k)}
                raise SynthError(f"{out} holds a synthetic set made with other parameters (was, now): {diff}; "
                                 f"choose another folder or delete it")
    if done_file.is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    write_json(started_file, want, indent=1)
    plan = video_plan(cfg)
    workers = workers or min(2, os.cpu_count() or 1)
    _run_all(cfg, plan, out, photo_ids, workers, progress)
    write_lines(out / CELEBDF_TEST_LIST, test_list_lines(plan))
    if photo_ids:
        write_json(out / "identities.json", {f"id{i}": name for i, (name, _) in enumerate(photo_ids)}, indent=1)
    write_json(done_file, want, indent=1)
    started_file.unlink()
    return out


def _run_all(cfg, plan, out, photo_ids, workers, progress):
    from tqdm import tqdm

    bar = tqdm(total=len(plan), desc="rccl-synth", unit="video", disable=not progress)
    if workers <= 1:
        for item in plan:
            make_video(cfg, item, out, photo_ids)
            bar.update()
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("forkserver")) as pool:
            for _ in pool.map(make_video, [cfg] * len(plan), plan, [out] * len(plan), [photo_ids] * len(plan)):
                bar.update()
    bar.close()

"""Speed of rccl-prep's raw pass (decode + detect + crop + write) on the real 10 s 640x360 clip.

Prints, and appends as a JSON line to --json (optional):
  - per stage, one process: decoding the 32 needed frames (sequential with early stop, and seeking near
    each pair for comparison), detection per frame (the detector on all 32 frames with their indices and
    the one-subject tracker, as rccl-prep does; "faces_found": frames where the subject was found on that
    very frame), crop + PNG/JPEG write per frame;
  - end to end: `prepare()` on a Celeb-DF-shaped tree of N copies of the clip with --workers W, in
    videos per minute and frames per second per core (wall clock), and the CPU seconds per video of a
    one-process run (on a shared machine the wall clock depends on the others' load; CPU time much less).
The target of the issue: >= 30 videos/minute of 10 s 640x360 clips on 2 cores, raw pass with detection.

Also the raw pass per 1080p DFDC sample of ../shared/data/real (one process, CPU seconds per video).

    python -m bench.prep_speed [--detector dlib+mtcnn] [--copies 12] [--workers 2] [--pairs 16]
                               [--json bench/results/prep_speed.jsonl]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from rccl.data.faces import DEFAULT_DETECTOR, DETECTOR_NAMES, FaceCropper, find_subject
from rccl.data.prep import prepare, save_image_atomic
from rccl.fileio import append_json_line
from rccl.data.video import pair_indices, probe, read_frames

CLIP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces" / "video" / "short_hamilton_clip.mp4"
DFDC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "dfdc"


def read_frames_seek(path, indices):
    """For comparison only: seek to the keyframe before each wanted frame, decode forward to it."""
    out = {}
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        rate, tb, start = s.average_rate, s.time_base, s.start_time or 0
        for i in sorted(indices):
            if i in out:
                continue
            target = start + int(round(i / rate / tb))
            c.seek(target, stream=s, backward=True, any_frame=False)
            for f in c.decode(s):
                k = int(round((f.pts - start) * tb * rate))
                if k in indices and k not in out:
                    out[k] = f.to_ndarray(format="rgb24")
                if k >= i:
                    break
    return out


def timed(fn, repeat=3):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", default=str(CLIP))
    ap.add_argument("--copies", type=int, default=12, help="videos in the end-to-end tree (default 12)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--detect-size", type=int, default=640)
    ap.add_argument("--detector", choices=DETECTOR_NAMES, default=DEFAULT_DETECTOR)
    ap.add_argument("--json", default=None, help="append the results as one JSON line to this file")
    args = ap.parse_args()
    clip = Path(args.clip)
    if not clip.is_file():
        raise SystemExit(f"prep_speed: clip {clip} not found (../shared/data/faces is absent?)")
    load_start = os.getloadavg()[0]
    info = probe(clip)
    idx = [i for p in pair_indices(info.n_frames, args.pairs) for i in p]
    torch.set_num_threads(1)  # as in a prep worker
    fc = FaceCropper(crop_size=320, detect_size=args.detect_size, detector=args.detector)
    fc.detector.detect_many([np.zeros((360, 640, 3), np.uint8)])  # built once per process, not per video

    t_seq, frames = timed(lambda: read_frames(clip, idx, threads=1))
    t_seek, frames_seek = timed(lambda: read_frames_seek(clip, idx))
    same = all(np.array_equal(frames[i], frames_seek[i]) for i in idx if i in frames_seek)
    # as rccl-prep detects: all sampled frames at once with their indices (the cascade uses them), one subject
    t_det, track = timed(lambda: find_subject([frames[i] for i in idx], fc.detector, idx), repeat=1)
    found = sum(t is not None for t in track)
    box = next(t.box for t in track if t is not None)
    tmp = Path(tempfile.mkdtemp(prefix="prep_speed_"))
    try:
        crops = {}
        for fmt in ("png", "jpg"):
            def crop_write():
                for i in idx:
                    crop = fc.crop(frames[i], fc.enlarge_box(box, info.width, info.height))
                    save_image_atomic(tmp / f"{i}.{fmt}", crop, fmt)
            crops[fmt], _ = timed(crop_write)

        root = tmp / "tree"
        for k in range(args.copies):
            dst = root / "Celeb-real" / f"id0_{k:04d}.mp4"
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(clip, dst)
        (root / "Celeb-synthesis").mkdir()
        (root / "List_of_testing_videos.txt").write_text("")
        kw = dict(qualities=("raw",), pairs_per_video=args.pairs, detect_size=args.detect_size, progress=False,
                  log=None, detector=args.detector)
        # CPU seconds per video, one process (shared machines: CPU time is what load does not inflate much)
        c = time.process_time()
        prepare("celebdf", root, tmp / "out1", workers=1, shard=(0, max(1, args.copies // 3)), **kw)
        cpu_per_video = (time.process_time() - c) / len(range(0, args.copies, max(1, args.copies // 3)))
        t = time.perf_counter()
        prepare("celebdf", root, tmp / "out", workers=args.workers, **kw)
        t_e2e = time.perf_counter() - t
        dfdc = {}
        if DFDC.is_dir():  # the 1080p samples, one process, each video on its own
            c = time.process_time()
            summary_rows = prepare("dfdc", DFDC, tmp / "dfdc", workers=1, **kw)
            dfdc_cpu = (time.process_time() - c) / 3
            rows = [json.loads(line) for line in open(summary_rows)]
            dfdc = {"dfdc_1080p_cpu_s_per_video": round(dfdc_cpu, 2),
                    "dfdc_1080p_videos_per_minute_2_cores": round(2 * 60 / dfdc_cpu, 1),
                    "dfdc_boxes_found": f"{sum(r['detected'] for r in rows)}/{len(rows)}"}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    n = len(idx)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parents[1]).stdout.strip()
    except OSError:
        commit = "?"
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    res = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit, "cpu": cpu,
        "cores": os.cpu_count(), "load_avg_1m_start": load_start, "load_avg_1m": os.getloadavg()[0],
        "clip": clip.name,
        "frames_per_video": n, "decode_seq_s": round(t_seq, 3), "decode_seek_s": round(t_seek, 3),
        "seek_frames_identical": same, "detect_ms_per_frame": round(1000 * t_det / n, 1),
        "faces_found": f"{found}/{n}", "crop_png_ms_per_frame": round(1000 * crops["png"] / n, 2),
        "crop_jpg_ms_per_frame": round(1000 * crops["jpg"] / n, 2),
        "e2e_workers": args.workers, "e2e_videos": args.copies, "e2e_s": round(t_e2e, 2),
        "videos_per_minute": round(60 * args.copies / t_e2e, 1),
        "frames_per_s_per_core": round(args.copies * n / t_e2e / args.workers, 1),
        "cpu_s_per_video": round(cpu_per_video, 3),
        "videos_per_minute_2_cores_from_cpu_time": round(2 * 60 / cpu_per_video, 1),
        "detector": args.detector, **dfdc,
    }
    for k, v in res.items():
        print(f"{k:>24}: {v}")
    if args.json:  # appended: the file keeps every run
        append_json_line(args.json, res)


if __name__ == "__main__":
    main()

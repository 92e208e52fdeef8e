"""Face detectors on real footage: recall, extra detections and CPU cost, for choosing the default.

On every video of ../shared/data/real (FF++ and DFDC samples) and the 10 s 640x360 clip of
../shared/data/faces, the frames rccl-prep samples (16 pairs = 32 frames) go through each detector and
the one-subject tracker; per video: frames where the subject was found / frames sampled, detections
that are not the subject (other people or false detections), and CPU milliseconds per frame in one
process with one thread. The detectors get the frames' indices in the video, as in rccl-prep (the
cascade searches a pair's second frame near the faces of its first); for the cascade the same frames
also go through without them (every missed frame searched whole, the way before), and per video the
mean and lowest IoU of the subject's boxes found both ways tell whether the shortcut moved a box.
On the photos of ../shared/data/faces: faces found (identities: one each; dogs.jpg: none).

    python -m bench.face_detectors [--detectors dlib,mtcnn,dlib+mtcnn] [--json bench/results/face_detectors.jsonl]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rccl.data.faces import DETECTOR_NAMES, DetectorError, get_detector, iou, track_subject
from rccl.data.faces.cascade import Cascade
from rccl.data.video import pair_indices, probe, read_frames
from rccl.fileio import append_json_line

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detectors", default="dlib,mtcnn,dlib+mtcnn")
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    videos = sorted((SHARED / "real").rglob("*.mp4")) + [SHARED / "faces/video/short_hamilton_clip.mp4"]
    photos = sorted((SHARED / "faces/identities").rglob("*.jp*g")) + sorted((SHARED / "faces/scenes").glob("*.jpg"))
    if not videos[0].is_file():
        raise SystemExit(f"face_detectors: {SHARED} not found")
    frames, positions = {}, {}
    for v in videos:
        idx = [i for p in pair_indices(probe(v).n_frames, args.pairs) for i in p]
        got = read_frames(v, idx)
        positions[v.stem] = sorted(got)
        frames[v.stem] = [got[i] for i in positions[v.stem]]
    images = {p.name: np.asarray(Image.open(p).convert("RGB")) for p in photos}
    for name in args.detectors.split(","):
        if name not in DETECTOR_NAMES:
            raise SystemExit(f"unknown detector {name}")
        try:
            det = get_detector(name)
        except DetectorError as e:
            print(f"{name}: not available here ({e})")
            continue
        det.detect_many([np.zeros((360, 640, 3), np.uint8)])  # first call builds lazily
        per_video, found_all, n_all, cpu_all = {}, 0, 0, 0.0
        for stem, fr in frames.items():
            sizes = [(f.shape[1], f.shape[0]) for f in fr]
            c = time.process_time()
            dets = det.detect_many(fr, positions[stem])
            cpu = time.process_time() - c
            track = track_subject(dets, sizes)
            found = sum(t is not None for t in track)
            extra = sum(len(d) for d in dets) - found
            per_video[stem] = {"found": found, "sampled": len(fr), "extra": extra, "cpu_ms": round(1000 * cpu / len(fr)),
                               "size": f"{fr[0].shape[1]}x{fr[0].shape[0]}"}
            if isinstance(det, Cascade):  # the same frames, every missed one searched whole
                whole = track_subject(det.detect_many(fr), sizes)
                same = [iou(a.box, b.box) for a, b in zip(track, whole) if a is not None and b is not None]
                per_video[stem] |= {"found_whole_frames": sum(t is not None for t in whole),
                                    "box_iou_mean": round(float(np.mean(same)), 3) if same else None,
                                    "box_iou_min": round(min(same), 3) if same else None}
            found_all, n_all, cpu_all = found_all + found, n_all + len(fr), cpu_all + cpu
        photo_faces = {k: len(det.detect(img)) for k, img in images.items()}
        res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_avg_1m": os.getloadavg()[0],
               "detector": name,
               "recall": round(found_all / n_all, 4), "found": found_all, "sampled": n_all,
               "cpu_ms_per_frame": round(1000 * cpu_all / n_all), "videos": per_video, "photos": photo_faces}
        print(f"== {name}: subject found in {found_all}/{n_all} sampled frames ({100 * found_all / n_all:.1f} %), "
              f"{1000 * cpu_all / n_all:.0f} CPU ms/frame")
        for stem, v in per_video.items():
            whole = (f"; whole frames: {v['found_whole_frames']:2d} found, subject box IoU mean {v['box_iou_mean']} "
                     f"min {v['box_iou_min']}" if "found_whole_frames" in v else "")
            print(f"   {stem:>20} {v['size']:>9}: {v['found']:2d}/{v['sampled']} found, {v['extra']:2d} other, "
                  f"{v['cpu_ms']:4d} CPU ms/frame{whole}")
        print("   photos:", ", ".join(f"{k} {n}" for k, n in photo_faces.items()))
        if args.json:  # appended: the file keeps every run
            append_json_line(args.json, res)


if __name__ == "__main__":
    main()

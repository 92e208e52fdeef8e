"""What each speed-up of the default detector (dlib+mtcnn) is worth, on the videos where MTCNN runs.

On the 10 s 640x360 clip of ../shared/data/faces and the DFDC sample abofeumbvv.mp4 (1080p, dark, turned
face: HOG finds it in no frame), the 32 frames rccl-prep samples go through the cascade with its MTCNN
stage done in each of these ways, interleaved over --repeats rounds (CPU seconds per video in one process,
the median and the lowest; on a shared machine the lowest is the least disturbed):
  - facenet:       facenet-pytorch's own MTCNN.detect, frame by frame, one torch thread (the code before)
  - facenet-2thr:  the same on two torch threads (what a prep worker would get by default on 2 cores)
  - facenet-batch: one facenet MTCNN.detect call on all of a video's missed frames at once (a batch)
  - channels-last: rccl's Mtcnn (R/O-nets on channels-last tensors), every missed frame searched whole
  - default:       rccl's Mtcnn and the frames' positions: a pair's second frame searched near the first's faces
Also per video: the frames HOG misses (MTCNN's calls), MTCNN's whole-frame cost per call, and the subject
found on its frame by the default and by the facenet way.

    python -m bench.cascade_variants [--repeats 3] [--json FILE]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from rccl.data.faces import Detection, FaceDetector, get_detector, track_subject
from rccl.data.faces.cascade import Cascade
from rccl.data.faces.base import to_frame_box
from rccl.data.faces.mtcnn import MTCNN_MIN_FACE, Mtcnn, torch_threads
from rccl.data.video import pair_indices, probe, read_frames
from rccl.fileio import append_json_line

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VIDEOS = (SHARED / "faces/video/short_hamilton_clip.mp4", SHARED / "real/dfdc/train_sample_videos/abofeumbvv.mp4")


class FacenetMtcnn(FaceDetector):
    """MTCNN the way rccl called it before: facenet-pytorch's MTCNN.detect on the prepared frame."""

    name = "mtcnn"

    def __init__(self, threads: int = 1, batch: bool = False):
        from facenet_pytorch import MTCNN

        self.threads, self.batch = threads, batch
        self._net = MTCNN(keep_all=True, device="cpu", min_face_size=MTCNN_MIN_FACE, post_process=False)

    def detect(self, frame):
        return self.detect_many([frame])[0]

    def detect_many(self, frames, positions=None):
        prepared = [Mtcnn._input(f) for f in frames]
        with torch_threads(self.threads), torch.inference_mode():
            if self.batch and len({p[0].shape for p in prepared}) == 1 and prepared:
                results = list(zip(*self._net.detect([p[0] for p in prepared])))
            else:
                results = [self._net.detect(p[0]) for p in prepared]
        out = []
        for frame, (_, scale), (boxes, probs) in zip(frames, prepared, results):
            h, w = frame.shape[:2]
            found = []
            for b, p in zip(boxes if boxes is not None else [], probs if probs is not None else []):
                box = to_frame_box(*b, scale, w, h) if p is not None and p >= 0.9 else None
                if box is not None:
                    found.append(Detection(box, float(p), self.name))
            out.append(found)
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--json", default=None, help="append the results as one JSON line to this file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load_start = os.getloadavg()[0]
    hog = get_detector("dlib")
    variants = {"facenet": (Cascade(hog, FacenetMtcnn()), False),
                "facenet-2thr": (Cascade(hog, FacenetMtcnn(threads=2)), False),
                "facenet-batch": (Cascade(hog, FacenetMtcnn(batch=True)), False),
                "channels-last": (Cascade(hog, Mtcnn()), False),
                "default": (Cascade(hog, Mtcnn()), True)}
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_avg_1m_start": load_start,
           "repeats": args.repeats, "videos": {}}
    for video in VIDEOS:
        if not video.is_file():
            raise SystemExit(f"cascade_variants: {video} not found")
        idx = [i for p in pair_indices(probe(video).n_frames, args.pairs) for i in p]
        got = read_frames(video, idx, threads=1)
        frames = [got[i] for i in idx]
        sizes = [(f.shape[1], f.shape[0]) for f in frames]
        missed = [f for f, d in zip(frames, hog.detect_many(frames)) if not d]
        mt = Mtcnn()
        mt.detect(frames[0])
        c = time.process_time()
        mt.detect_many(missed)
        per_call = (time.process_time() - c) / max(1, len(missed))
        times: dict[str, list[float]] = {k: [] for k in variants}
        found = {}
        for k, (det, with_positions) in variants.items():
            det.detect_many(frames[:2])  # build and warm up
        for _ in range(args.repeats):
            for k, (det, with_positions) in variants.items():
                c = time.process_time()
                dets = det.detect_many(frames, idx if with_positions else None)
                times[k].append(time.process_time() - c)
                found[k] = sum(t is not None for t in track_subject(dets, sizes))
        row = {"size": f"{sizes[0][0]}x{sizes[0][1]}", "sampled": len(frames), "hog_missed": len(missed),
               "mtcnn_whole_frame_cpu_ms_per_call": round(1000 * per_call),
               "found": found,
               "cpu_s_per_video_median": {k: round(statistics.median(t), 2) for k, t in times.items()},
               "cpu_s_per_video_lowest": {k: round(min(t), 2) for k, t in times.items()}}
        res["videos"][video.stem] = row
        print(f"== {video.name} {row['size']}: HOG misses {len(missed)}/{len(frames)} frames; MTCNN whole frame "
              f"{row['mtcnn_whole_frame_cpu_ms_per_call']} CPU ms per call")
        for k in variants:
            print(f"   {k:>14}: detection {row['cpu_s_per_video_median'][k]:5.2f} CPU s per video (median; "
                  f"lowest {row['cpu_s_per_video_lowest'][k]:5.2f}), subject found on {found[k]}/{len(frames)}")
    res["load_avg_1m_end"] = os.getloadavg()[0]
    print(f"load average (1 min): {load_start:.1f} at the start, {res['load_avg_1m_end']:.1f} at the end")
    if args.json:  # appended: the file keeps every run
        append_json_line(args.json, res)


if __name__ == "__main__":
    main()

"""A run's detector on the real FF++ and DFDC sample videos of ../shared/data/real, per frame and per video.

The ten videos (4 natural; 6 fakes: FF++'s Deepfakes, FaceSwap, Face2Face, NeuralTextures and 2 DFDC) are
prepared once with rccl-prep (the default face detector, 8 pairs of frames a video: 16 crops) at the crop
size asked, then every split of each is scored by the public rccl-eval (`--manifest`, the cross-dataset
protocol, filed under RUN/eval/NAME/). Far too few videos for a video-level AUC: the frame AUC pools the
160 crops, and each video's mean fake probability is listed.

    python -m bench.real_videos RUN [RUN ...] [--crop-size 128] [--json OUT]    scores of finished runs
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from bench.paper_tables import ROOT, BenchError, default_cache, run_child
from rccl.errors import RcclError
from rccl.fileio import write_json

REAL = ROOT.parent / "shared" / "data" / "real"
THRESHOLD = 0.5  # the detector's own decision: fake probability >= 0.5 is fake
# The real samples: (name, rccl-prep dataset, folder under --real, quality as distributed, splits to score)
CROSS = [("ffpp", "ffpp", "ffpp", "c23", ("train", "val", "test")),
         ("dfdc", "dfdc", "dfdc", "raw", ("train",))]


def prepare_real(real: Path, cache: Path, log, crop_size: int = 128, enlarge: float | None = None) -> dict[str, Path]:
    """{name: manifest} of the real samples in CROSS, prepared once per crop size and face-box enlargement
    (None: rccl-prep's default; the default detector)."""
    from rccl.data.prep import prepare
    from rccl.data.prep.config import PrepConfig

    out = {}
    for name, dataset, folder, quality, _ in CROSS:
        if not (real / folder).is_dir():
            raise BenchError(f"real sample {real / folder}: no such folder (give --real, or skip the real videos)")
        suffix = "" if crop_size == 128 else f"-{crop_size}"  # the 128 px cache keeps its first name
        if enlarge is not None and enlarge != PrepConfig.enlarge:
            suffix += f"-enlarge{enlarge:g}"
        out[name] = Path(prepare(dataset, real / folder, cache / f"sbi-real-{name}{suffix}", qualities=(quality,),
                                 pairs_per_video=8, crop_size=crop_size, progress=False, log=None,
                                 **({} if enlarge is None else {"enlarge": enlarge})))
        log(f"real_videos: {name} {out[name]}")
    return out


def eval_command(run_dir: Path, manifest: Path, name: str, quality: str, split: str) -> list[str]:
    return [sys.executable, "-m", "rccl.cli.evaluate", "--checkpoint", str(run_dir), "--manifest", str(manifest),
            "--name", name, "--qualities", quality, "--split", split, "--workers", "0", "--no-progress"]


def frame_scores(scores_csv: Path) -> list[dict]:
    """[{"video", "frame", "label", "score"}] from rccl-eval's per-crop CSV."""
    with open(scores_csv, encoding="utf-8") as f:
        return [{"video": r["video"], "frame": int(r["frame"]), "label": int(r["label"]),
                 "score": float(r["fake_probability"])} for r in csv.DictReader(f)]


def video_scores(scores_csv: Path) -> dict[str, dict]:
    """{video: {"label": 0/1, "score": mean fake probability of its crops, "crops": n}} from rccl-eval's CSV."""
    return per_video(frame_scores(scores_csv))


def per_video(frames: list[dict]) -> dict[str, dict]:
    per, labels = defaultdict(list), {}
    for f in frames:
        per[f["video"]].append(f["score"])
        labels[f["video"]] = f["label"]
    return {v: {"label": labels[v], "score": round(statistics.fmean(s), 4), "crops": len(s)} for v, s in per.items()}


def score_run(run_dir: Path, real: dict[str, Path], nice: int = 0) -> list[dict]:
    """Every crop of the real samples scored by the run's detector: [{"video": "NAME:VIDEO", ...}]."""
    out = []
    for name, _, _, quality, splits in CROSS:
        if name not in real:
            continue
        for split in splits:
            cmd = eval_command(run_dir, real[name], name, quality, split)
            cmd = ["nice", "-n", str(nice), *cmd] if nice else cmd
            log_path = run_dir / f"eval_{name}_{split}.log"
            rc, _, _ = run_child(cmd, log_path)
            scores = run_dir / "eval" / name / f"{split}_{quality}_scores.csv"
            if rc != 0 or not scores.is_file():
                tail = log_path.read_text(encoding="utf-8").strip().splitlines()[-1:]
                if "crops in split" in " ".join(tail):
                    continue  # the sample has no video of this split
                raise BenchError(f"rccl-eval on {name} {split} exited {rc}: {' | '.join(tail)}")
            out += [{**f, "video": f"{name}:{f['video']}"} for f in frame_scores(scores)]
    return out


def method_of(video: str) -> str:
    """The forgery method a sample video's name says (FF++'s folder, DFDC), or "natural"."""
    for method in ("Deepfakes", "FaceSwap", "Face2Face", "NeuralTextures"):
        if f"/{method}/" in video:
            return method
    return "DFDC" if video.startswith("dfdc:") else "?"


def summarize(frames: list[dict], threshold: float = THRESHOLD) -> dict:
    """Frame AUC over every crop, the naturals' TNR and the fakes' TPR at `threshold` (per frame), each
    video's mean score, and whether every natural video scores below every fake method's mean."""
    from rccl.metrics import roc_auc

    if not frames:
        raise BenchError("no real-sample crops were scored")
    labels = [f["label"] for f in frames]
    scores = [f["score"] for f in frames]
    videos = per_video(frames)
    naturals = [v["score"] for v in videos.values() if v["label"] == 0]
    methods = defaultdict(list)
    for name, v in videos.items():
        if v["label"] == 1:
            methods[method_of(name)].append(v["score"])
    method_means = {m: round(statistics.fmean(s), 4) for m, s in sorted(methods.items())}
    nat = [s for s, y in zip(scores, labels) if y == 0]
    fake = [s for s, y in zip(scores, labels) if y == 1]
    return {"frame_auc": round(float(roc_auc(labels, scores)), 4), "threshold": threshold,
            "natural_tnr": round(sum(s < threshold for s in nat) / len(nat), 4) if nat else None,
            "fake_tpr": round(sum(s >= threshold for s in fake) / len(fake), 4) if fake else None,
            "natural_video_mean": round(statistics.fmean(naturals), 4) if naturals else None,
            "natural_video_max": round(max(naturals), 4) if naturals else None,
            "method_means": method_means,
            "naturals_below_every_method": bool(naturals and method_means and
                                                max(naturals) < min(method_means.values())),
            "videos": videos, "crops": len(frames)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="real_videos", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="finished run folders (their stage-2 detector)")
    p.add_argument("--crop-size", type=int, default=128, help="the real samples' crop size (default: %(default)s)")
    p.add_argument("--real", type=Path, default=REAL, help="the real samples' folder (default: %(default)s)")
    p.add_argument("--enlarge", type=float, default=None,
                   help="the samples' face-box enlargement (default: rccl-prep's); another value crops the faces "
                        "larger or smaller than the runs' training crops: does the face's scale matter?")
    p.add_argument("--cache", type=Path, default=None, help="data cache (default ~/.cache/rccl)")
    p.add_argument("--json", type=Path, default=None, help="also write the summaries to this JSON file")
    args = p.parse_args(argv)
    try:
        real = prepare_real(args.real, (args.cache or default_cache()).expanduser(), lambda m: None, args.crop_size,
                            args.enlarge)
        out = {}
        for run in args.runs:
            s = summarize(score_run(run, real))
            out[str(run)] = s
            print(f"{run}: frame AUC {s['frame_auc']:.3f}, natural TNR {s['natural_tnr']:.2f}, natural videos "
                  f"{s['natural_video_mean']:.3f} (max {s['natural_video_max']:.3f}), methods "
                  + ", ".join(f"{m} {v:.3f}" for m, v in s["method_means"].items()))
        if args.json:
            write_json(args.json, out)
        return 0
    except RcclError as e:
        print(f"real_videos: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Face swaps of real photos (rccl-swap): what each choice of rccl.data.swap was measured to be worth.

On a seeded draw of UTKFace photos of adults (18-59, ../shared/data/natural/utkface/crop_part1):
1. landmarks: how many photos get a usable 68-point fit each way (dlib's HOG on the photo as it is; padded
   by 25 % of its side; the two in turn, rccl's `--box detect`; the whole frame as the box, `--box frame`),
   the reason for every photo without one, the CPU time per photo, and how far the frame-box fits lie from
   the detected ones (mean point distance / inter-ocular distance).
2. the warp: rccl's (triangles rasterised into an index map, one cv2.remap), a cv2.warpAffine per triangle,
   scikit-image's PiecewiseAffineTransform: time per warp and mean difference from scikit-image's, inside
   the target's hull.
3. the blend, feathered vs Poisson (cv2.seamlessClone), and an open target mouth kept (mouth target) or
   swapped (mouth donor), on pairs of those photos: time per swap; how far dlib's landmarks of the result
   lie from the target's (px; the mouth's 20 points alone where the target's mouth is open); the seam: the mean gradient in a 5-px band
   across the hull's edge, over the target's own there (1 = no new edge); the donor's detail inside
   (correlation of the result's Laplacian with the warped donor's, in the swapped mask eroded by 7 px); the
   colour of the inner face (mean CIELAB distance to the target's there: what colour bleeding moves).
Medians over the photos or pairs; times are wall-clock in one process with one thread (OpenCV too).

    python -m bench.face_swap [--photos 1000] [--pairs 200] [--seed 0] [--json bench/results/face_swap.json]
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from rccl.data.faces.landmarks import landmark_problem
from rccl.data.swap import PhotoLandmarker, swap_face
from rccl.data.swap.colour import match_colour
from rccl.data.swap.compose import MOUTH_OPEN, face_hull
from rccl.data.swap.warp import warp_face, with_ring
from rccl.fileio import write_json, write_text

UTKFACE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "natural" / "utkface" / "crop_part1"


def adults(n: int, seed: int) -> list[Path]:
    names = sorted(p.name for p in UTKFACE.glob("*.jpg") if 18 <= int(p.name.split("_")[0]) <= 59)
    pick = np.random.default_rng(seed).permutation(len(names))[:n]
    return [UTKFACE / names[i] for i in sorted(pick)]


def iod(p: np.ndarray) -> float:
    return float(np.linalg.norm(p[36:42].mean(0) - p[42:48].mean(0)))


def landmark_ways(photos: list[Path]) -> tuple[dict, dict]:
    """Per way: usable fits, reasons, ms per photo; and each photo's detect / frame fits for later."""
    fitter = PhotoLandmarker("detect")
    ways = {"as is": [], "padded": [], "detect (as is, then padded)": [], "frame": []}
    reasons = {k: {} for k in ways}
    times = {k: [] for k in ways}
    fits = {}
    fitter.fit(np.asarray(Image.open(photos[0]).convert("RGB")))  # the model and detector load once
    for path in photos:
        img = np.asarray(Image.open(path).convert("RGB"))
        h, w = img.shape[:2]
        t0 = time.perf_counter()
        boxes = fitter._faces(img)
        times["as is"].append(time.perf_counter() - t0)
        pad = int(round(0.25 * max(h, w)))
        padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        t0 = time.perf_counter()
        pboxes = fitter._faces(padded)
        times["padded"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        det = fitter.fit(img)
        times["detect (as is, then padded)"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        frame_pts = fitter.predictor.predict(img, (0, 0, w, h))
        times["frame"].append(time.perf_counter() - t0)
        for way, found, pts_of in (("as is", boxes, lambda: fitter._fit_largest(img, boxes)),
                                   ("padded", pboxes, lambda: fitter._fit_largest(padded, pboxes) - pad)):
            problem = "dlib's HOG detector finds no face" if not found else landmark_problem(pts_of(), w, h)
            ways[way].append(problem is None)
            if problem:
                reasons[way][path.name] = problem
        ways["detect (as is, then padded)"].append(det.problem == "")
        if det.problem:
            reasons["detect (as is, then padded)"][path.name] = det.problem
        frame_problem = landmark_problem(frame_pts, w, h)
        ways["frame"].append(frame_problem is None)
        if frame_problem:
            reasons["frame"][path.name] = frame_problem
        fits[path.name] = (det.landmarks, frame_pts)
    agreement = [float(np.linalg.norm(fr - d, axis=1).mean() / iod(d)) for d, fr in fits.values() if d is not None]
    table = {way: {"usable": int(sum(ok)), "of": len(ok), "ms_per_photo": round(1000 * float(np.median(times[way])), 2),
                   "reasons": reasons[way]} for way, ok in ways.items()}
    table["frame"]["distance_to_detect_over_iod"] = {
        "median": round(float(np.median(agreement)), 4), "p90": round(float(np.percentile(agreement, 90)), 4),
        "over_0.1": int(sum(a > 0.1 for a in agreement)), "of": len(agreement)}
    return table, fits


def warp_per_triangle(donor, donor_pts, target_pts, shape):
    """The alternative: one cv2.warpAffine per triangle, pasted through the triangle's filled polygon."""
    from scipy.spatial import Delaunay

    dst, src = with_ring(target_pts), with_ring(donor_pts)
    out = np.zeros(shape + (3,), np.uint8)
    for tri in Delaunay(dst).simplices:
        t, d = dst[tri].astype(np.float32), src[tri].astype(np.float32)
        x, y, w, h = cv2.boundingRect(t)
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, shape[1]), min(y + h, shape[0])
        if x1 <= x0 or y1 <= y0:
            continue
        m = cv2.getAffineTransform(d, t - np.float32([x0, y0]))
        patch = cv2.warpAffine(donor, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        poly = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillConvexPoly(poly, np.round(t - [x0, y0]).astype(np.int32), 1)
        out[y0:y1, x0:x1][poly > 0] = patch[poly > 0]
    return out


def warp_skimage(donor, donor_pts, target_pts, shape):
    from skimage.transform import PiecewiseAffineTransform, warp

    tf = PiecewiseAffineTransform.from_estimate(with_ring(target_pts), with_ring(donor_pts))
    if not tf:  # a donor triangle collapsed to a line: scikit-image refuses the whole transform
        return None
    return np.round(warp(donor, tf, output_shape=shape, order=1, mode="reflect", preserve_range=True)).astype(np.uint8)


def warps(pairs, images, fits) -> dict:
    ways = {"rccl: index map + one remap": lambda *a: warp_face(*a)[0], "cv2.warpAffine per triangle": warp_per_triangle,
            "scikit-image PiecewiseAffineTransform": warp_skimage}
    times, diffs, failed = {k: [] for k in ways}, {k: [] for k in ways}, 0
    for t, d in pairs:
        tgt_pts, don_pts = fits[t][0], fits[d][0]
        shape = images[t].shape[:2]
        inner = cv2.erode(face_hull(tgt_pts, *shape).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        outs = {}
        for name, fn in ways.items():
            t0 = time.perf_counter()
            outs[name] = fn(images[d], don_pts, tgt_pts, shape)
            times[name].append(time.perf_counter() - t0)
        if outs["scikit-image PiecewiseAffineTransform"] is None:
            failed += 1
            continue
        ref = outs["scikit-image PiecewiseAffineTransform"].astype(int)
        for name in ways:
            diffs[name].append(float(np.abs(outs[name].astype(int) - ref)[inner].mean()))
    return {name: {"ms_per_warp": round(1000 * float(np.median(times[name])), 2),
                   "mean_abs_diff_from_skimage": round(float(np.mean(diffs[name])), 3),
                   "compared": len(diffs[name]), "skimage_refused": failed} for name in ways}


def blend_measures(target, tgt_pts, donor, don_pts, blend, mouth, fitter) -> dict:
    t0 = time.perf_counter()
    r = swap_face(target, tgt_pts, donor, don_pts, blend=blend, mouth=mouth)
    seconds = time.perf_counter() - t0
    refit = fitter.fit(r.image)
    grey = lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float32)  # noqa: E731
    grad = lambda x: np.hypot(cv2.Sobel(grey(x), cv2.CV_32F, 1, 0), cv2.Sobel(grey(x), cv2.CV_32F, 0, 1))  # noqa: E731
    hull = r.hull.astype(np.uint8)
    band = (cv2.dilate(hull, np.ones((5, 5), np.uint8)) - cv2.erode(hull, np.ones((5, 5), np.uint8))) > 0
    core = cv2.erode(r.mask.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0  # what was swapped, deep inside
    face = match_colour(warp_face(donor, don_pts, tgt_pts, target.shape[:2])[0], target, r.mask)
    lap = lambda x: cv2.Laplacian(grey(x), cv2.CV_32F)[core]  # noqa: E731
    lab = lambda x: cv2.cvtColor(x.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)[core].mean(0)  # noqa: E731
    open_mouth = face_hull(tgt_pts[60:68], *target.shape[:2]).sum() >= MOUTH_OPEN * r.hull.sum()
    return {"seconds": seconds,
            "landmark_px": float(np.linalg.norm(refit.landmarks - tgt_pts, axis=1).mean()) if refit.problem == "" else None,
            "mouth_px": float(np.linalg.norm(refit.landmarks[48:] - tgt_pts[48:], axis=1).mean())
            if refit.problem == "" and open_mouth else None,
            "seam_gradient_ratio": float(grad(r.image)[band].mean() / max(grad(target)[band].mean(), 1e-6)),
            "donor_detail_corr": float(np.corrcoef(lap(r.image), lap(face))[0, 1]),
            "colour_distance_to_target": float(np.linalg.norm(lab(r.image) - lab(target)))}


def blends(pairs, images, fits) -> dict:
    fitter = PhotoLandmarker("detect")
    out = {}
    for blend, mouth in (("feather", "target"), ("poisson", "target"), ("feather", "donor")):
        rows = [blend_measures(images[t], fits[t][0], images[d], fits[d][0], blend, mouth, fitter) for t, d in pairs]
        med = lambda k: float(np.median([r[k] for r in rows if r[k] is not None]))  # noqa: E731
        out[f"{blend}, mouth {mouth}"] = {
                      "ms_per_swap": round(1000 * med("seconds"), 1),
                      "landmark_px_median": round(med("landmark_px"), 2),
                      "open_mouth_targets": sum(r["mouth_px"] is not None for r in rows),
                      "mouth_px_median_open": round(med("mouth_px"), 2),
                      "refit_failed": sum(r["landmark_px"] is None for r in rows),
                      "seam_gradient_ratio": round(med("seam_gradient_ratio"), 3),
                      "donor_detail_corr": round(med("donor_detail_corr"), 3),
                      "colour_distance_to_target": round(med("colour_distance_to_target"), 2),
                      "colour_distance_p90": round(float(np.percentile([r["colour_distance_to_target"] for r in rows], 90)), 2),
                      "pairs": len(rows)}
    return out


def markdown(res: dict) -> str:
    lines = [f"# Face swaps of real photos ({res['date']}, commit {res['commit']})", "",
             f"`{res['command']}`; {res['photos']} UTKFace adults (seeded draw), {res['pairs']} pairs; one thread.", "",
             "| landmarks | usable / photos | ms per photo |", "| --- | --- | --- |"]
    for way, v in res["landmarks"].items():
        lines.append(f"| {way} | {v['usable']} / {v['of']} | {v['ms_per_photo']} |")
    a = res["landmarks"]["frame"]["distance_to_detect_over_iod"]
    lines += ["", f"Frame-box fits against detected ones: median {a['median']}, p90 {a['p90']} of the inter-ocular "
                  f"distance, {a['over_0.1']} of {a['of']} over 0.1.", "",
              "| warp | ms per warp | mean abs diff from scikit-image (grey levels, hull) |", "| --- | --- | --- |"]
    for way, v in res["warps"].items():
        lines.append(f"| {way} | {v['ms_per_warp']} | {v['mean_abs_diff_from_skimage']} |")
    lines.append(f"(over the {v['compared']} pairs scikit-image could map; it refused {v['skimage_refused']}: a "
                 f"donor triangle collapsed to a line)")
    lines += ["", "| blend | ms per swap | landmarks of the result vs target's (px, median) | mouth points, open-mouth "
                  "targets (px, median) | seam gradient ratio | donor's detail (corr.) | colour distance to target "
                  "(median, p90) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for blend, v in res["blends"].items():
        lines.append(f"| {blend} | {v['ms_per_swap']} | {v['landmark_px_median']} ({v['refit_failed']} re-fits failed) | "
                     f"{v['mouth_px_median_open']} ({v['open_mouth_targets']} targets) | "
                     f"{v['seam_gradient_ratio']} | {v['donor_detail_corr']} | {v['colour_distance_to_target']}, "
                     f"{v['colour_distance_p90']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=1000)
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="bench/results/face_swap.json")
    args = ap.parse_args()
    if not UTKFACE.is_dir():
        raise SystemExit(f"face_swap: UTKFace photos not found at {UTKFACE} (../shared/data/natural)")
    cv2.setNumThreads(1)
    photos = adults(args.photos, args.seed)
    landmarks, fits = landmark_ways(photos)
    usable = [p.name for p in photos if fits[p.name][0] is not None]
    order = np.random.default_rng([args.seed, 1]).permutation(len(usable))
    pairs = [(usable[order[2 * i]], usable[order[2 * i + 1]]) for i in range(min(args.pairs, len(usable) // 2))]
    images = {n: np.asarray(Image.open(UTKFACE / n).convert("RGB")) for pair in pairs for n in pair}
    res = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
           "command": f"python -m bench.face_swap --photos {args.photos} --pairs {args.pairs} --seed {args.seed}",
           "photos": len(photos), "pairs": len(pairs), "landmarks": landmarks,
           "warps": warps(pairs[:50], images, fits), "blends": blends(pairs, images, fits)}
    write_json(args.json, res, indent=1)
    write_text(Path(args.json).with_suffix(".md"), markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()

"""A labelled `folder` tree of face swaps from a folder (or list) of natural photos:

    OUT/real/<photo>                 the natural photos, copied byte for byte (rccl-prep reads them there)
    OUT/fake/faceswap/<t>__<d>.png   target t with donor d's face (PNG: lossless, so the only change to the
                                     target is the swap; the photos' own JPEG traces stay on both classes)
    OUT/splits.json                  {"train": [...], "val": [...], "test": [...]}: each photo in one split,
                                     a fake in its target's split, its donor from the same split
    OUT/forgeries.json               {fake: {"background": real photo, "face": donor photo}}
    OUT/swap_report.json, OUT/swap_summary.txt   the settings, the counts, every photo left out and why

Steps: list and order the photos, fit their landmarks (until --limit usable ones), plan splits and donors
(rccl.data.swap.plan), then write. Nothing is written before the plan stands, so a bad input loses nothing.
Deterministic: the same photos, settings and seed give byte-identical files, with any number of workers.
"""
from __future__ import annotations

import io
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

from rccl.data.layouts.common import SPLITS
from rccl.data.prep.plan import image_reader
from rccl.data.swap.compose import BLENDS, MOUTHS, swap_face
from rccl.data.swap.landmarks import BOX_MODES, PhotoLandmarker
from rccl.data.swap.plan import (ORDERS, Photo, SwapError, assign_splits, check_fractions, compile_pattern, group_key,
                                 list_photos, ordered, pair_donors)
from rccl.data.video import VideoError
from rccl.fileio import write_bytes, write_json, write_text

METHOD = "faceswap"  # the fakes' folder below fake/, so the folder layout's `method` column
REPORT, SUMMARY, FORGERIES, SPLITS_FILE = "swap_report.json", "swap_summary.txt", "forgeries.json", "splits.json"
STARTED = ".swap_started"
OURS = {"real", "fake", REPORT, SUMMARY, FORGERIES, SPLITS_FILE, STARTED}
FIT_CHUNK = 64  # photos fitted per round while counting towards --limit


@dataclass(frozen=True)
class SwapSettings:
    swaps: int = 1
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)  # train, val, test
    seed: int = 0
    limit: int | None = None
    order: str = "shuffled"
    pair_within: str | None = None
    box: str = "detect"
    blend: str = "feather"
    mouth: str = "target"

    def check(self) -> None:
        if self.swaps < 1:
            raise SwapError(f"--swaps-per-target {self.swaps}: must be at least 1")
        if self.limit is not None and self.limit < 2:
            raise SwapError(f"--limit {self.limit}: must be at least 2 (a target needs a donor)")
        if self.seed < 0:
            raise SwapError(f"--seed {self.seed}: must be >= 0")
        for flag, value, allowed in (("--order", self.order, ORDERS), ("--box", self.box, BOX_MODES),
                                     ("--blend", self.blend, BLENDS), ("--mouth", self.mouth, MOUTHS)):
            if value not in allowed:
                raise SwapError(f"{flag} {value!r}: must be one of {', '.join(allowed)}")
        check_fractions(dict(zip(SPLITS, self.fractions)))
        compile_pattern(self.pair_within)


def fake_name(target: str, donor: str) -> str:
    stem = lambda name: os.path.splitext(name)[0].replace("/", "__")  # noqa: E731
    return f"fake/{METHOD}/{stem(target)}__{stem(donor)}.png"


def prepare_out(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty OUT, unless `overwrite` and it holds an rccl-swap tree (finished or not): then
    its entries are removed; anything else in it is never touched."""
    if not out.exists():
        return
    if not out.is_dir():
        raise SwapError(f"--out {out}: exists and is not a folder")
    entries = {p.name for p in out.iterdir()}
    if not entries:
        return
    ours = bool({REPORT, STARTED} & entries)
    if not overwrite:
        raise SwapError(f"--out {out}: the folder is not empty ({', '.join(sorted(entries)[:5])}"
                        f"{', ...' if len(entries) > 5 else ''}); choose a new folder"
                        + (", or pass --overwrite to replace the rccl-swap tree in it" if ours else ""))
    if not ours or entries - OURS:
        raise SwapError(f"--out {out}: --overwrite replaces only a tree made by rccl-swap, and this folder holds "
                        f"{', '.join(sorted(entries - OURS) or sorted(entries))}; choose a new folder")
    for name in entries:
        p = out / name
        shutil.rmtree(p) if p.is_dir() else p.unlink()


# -------------------------------------------------------------------------------------------- worker jobs
_LANDMARKERS: dict[str, PhotoLandmarker] = {}  # one per process and box mode (the model loads in ~1 s)


def read_photo(path: Path) -> np.ndarray:
    """The photo as rccl-prep reads it (EXIF rotation applied, RGB), so the swap and prep see one image."""
    return image_reader(path, [0])[0]


def fit_photo(path: Path, box: str) -> tuple[list | None, str, str]:
    """(landmarks as lists or None, how, problem) of one photo; never raises for a bad photo."""
    try:
        image = read_photo(path)
    except VideoError as e:
        return None, "", str(e).replace(f"{path}: ", "")
    fit = _LANDMARKERS.setdefault(box, PhotoLandmarker(box)).fit(image)
    return (fit.landmarks.tolist() if fit.landmarks is not None else None), fit.how, fit.problem


def make_fake(target: Path, target_points, donor: Path, donor_points, blend: str, mouth: str, dst: Path) -> None:
    result = swap_face(read_photo(target), np.asarray(target_points, np.float32), read_photo(donor),
                       np.asarray(donor_points, np.float32), blend=blend, mouth=mouth)
    buf = io.BytesIO()
    Image.fromarray(result.image).save(buf, format="PNG")  # lossless; PIL's PNG bytes are the same every run
    write_bytes(dst, buf.getvalue())


def _star(job):
    fn, args = job
    return fn(*args)


class _Pool:
    """map(fn, arg tuples) in order, in `workers` processes (forkserver, as rccl-synth) or in this one."""

    def __init__(self, workers: int):
        self.workers = workers
        self.pool = ProcessPoolExecutor(workers, mp_context=get_context("forkserver")) if workers > 1 else None

    def map(self, fn, args_list):
        jobs = [(fn, a) for a in args_list]
        if self.pool is None:
            return map(_star, jobs)
        return self.pool.map(_star, jobs, chunksize=max(1, len(jobs) // (8 * self.workers)))

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()


# -------------------------------------------------------------------------------------------- the tree
def fit_until(photos: list[Photo], settings: SwapSettings, pool: _Pool, bar) -> tuple[dict, dict, dict, int]:
    """Fit photos in order until `limit` of them are usable (landmarks and, with --pair-within, a group):
    ({name: points}, {name: group}, {name: reason}, photos read)."""
    pattern = compile_pattern(settings.pair_within)
    points, groups, excluded, how_count, read = {}, {}, {}, {}, 0
    while read < len(photos) and (settings.limit is None or len(points) < settings.limit):
        chunk = photos[read:read + (FIT_CHUNK if settings.limit else len(photos))]
        for photo, (pts, how, problem) in zip(chunk, pool.map(fit_photo, [(p.path, settings.box) for p in chunk])):
            if settings.limit is not None and len(points) >= settings.limit:
                break
            read += 1
            bar.update()
            if pts is None:
                excluded[photo.name] = problem
                continue
            group = group_key(photo.name, pattern)
            if group is None:
                excluded[photo.name] = f"its file name does not match --pair-within {settings.pair_within!r}"
                continue
            points[photo.name], groups[photo.name] = pts, group
            how_count[how] = how_count.get(how, 0) + 1
    return points, groups, excluded, {"read": read, "found_by": dict(sorted(how_count.items()))}


def make_swap_tree(source: str | os.PathLike, out: str | os.PathLike, settings: SwapSettings = SwapSettings(), *,
                   workers: int = 1, overwrite: bool = False, progress: bool = True) -> dict:
    """Write the tree (module docstring) and return its report (also OUT/swap_report.json)."""
    from tqdm import tqdm

    settings.check()
    out = Path(out)
    photos = list_photos(source)
    prepare_out(out, overwrite)
    photos = ordered(photos, settings.order, settings.seed)
    by_name = {p.name: p for p in photos}
    pool = _Pool(max(1, int(workers)))
    try:
        with tqdm(total=settings.limit or len(photos), desc="rccl-swap landmarks", unit="photo",
                  disable=not progress) as bar:
            points, groups, excluded, fitting = fit_until(photos, settings, pool, bar)
        if len(points) < 2:
            raise SwapError(f"{source}: {len(points)} of {fitting['read']} photo(s) have usable landmarks; at least "
                            f"2 are needed (a target and a donor). Reasons: "
                            + "; ".join(f"{n}: {r}" for n, r in list(excluded.items())[:3]))
        fractions = dict(zip(SPLITS, settings.fractions))
        splits, left_out = assign_splits(sorted(points), fractions, settings.seed)
        for split, names in splits.items():
            if fractions[split] > 0 and len(names) < 2:
                raise SwapError(f"split {split}: {len(names)} photo(s) ({fractions[split]:g} of {len(points)} usable "
                                f"photos); a split needs at least 2 to pair a target with a donor: give it a larger "
                                f"fraction, more photos, or --{split} 0")
        pairs, notes = [], {}
        for split, names in splits.items():
            for group in sorted({groups[n] for n in names}):
                p, n = pair_donors([m for m in names if groups[m] == group], settings.swaps, settings.seed, split,
                                   group)
                pairs += [(split, t, d) for t, d in p]
                notes.update(n)
        for name in left_out:
            excluded[name] = f"left out: the split fractions sum to {sum(settings.fractions):g}"
        # the plan stands: write
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / STARTED, "")
        kept = [n for names in splits.values() for n in names]
        for name in tqdm(kept, desc="rccl-swap copies", unit="photo", disable=not progress):
            write_bytes(out / "real" / name, by_name[name].path.read_bytes())
        jobs = [(by_name[t].path, points[t], by_name[d].path, points[d], settings.blend, settings.mouth,
                 out / fake_name(t, d))
                for _, t, d in pairs]
        with tqdm(total=len(jobs), desc="rccl-swap swaps", unit="swap", disable=not progress) as bar:
            for _ in pool.map(make_fake, jobs):
                bar.update()
    finally:
        pool.close()
    tree_splits = {s: sorted([f"real/{n}" for n in names] + [fake_name(t, d) for sp, t, d in pairs if sp == s])
                   for s, names in splits.items()}
    write_json(out / SPLITS_FILE, tree_splits, indent=1)
    write_json(out / FORGERIES, {fake_name(t, d): {"background": f"real/{t}", "face": f"real/{d}"}
                                 for _, t, d in sorted(pairs, key=lambda p: fake_name(p[1], p[2]))}, indent=1)
    report = {
        "tool": "rccl-swap", "source": str(Path(source).resolve()), "seed": settings.seed,
        "settings": {"swaps_per_target": settings.swaps, "fractions": fractions, "limit": settings.limit,
                     "order": settings.order, "pair_within": settings.pair_within, "box": settings.box,
                     "blend": settings.blend, "mouth": settings.mouth, "method": METHOD},
        "counts": {"photos_listed": len(photos), "photos_read": fitting["read"], "usable": len(points),
                   "excluded": len(excluded), "landmarks_found_by": fitting["found_by"],
                   "splits": {s: {"real": len(splits[s]), "fake": sum(1 for sp, _, _ in pairs if sp == s)}
                              for s in SPLITS},
                   "real": len(kept), "fake": len(pairs)},
        "excluded": dict(sorted(excluded.items())),
        "notes": dict(sorted(notes.items())),
    }
    write_json(out / REPORT, report, indent=1)
    write_text(out / SUMMARY, summary(report, out))
    (out / STARTED).unlink()
    return report


def summary(report: dict, out: Path) -> str:
    c, s = report["counts"], report["settings"]
    lines = [f"rccl-swap: {out}: {c['real']} natural photos and {c['fake']} face swaps "
             f"({s['swaps_per_target']} per target, blend {s['blend']}, mouth {s['mouth']}, seed {report['seed']}), from "
             f"{report['source']}.",
             f"Read {c['photos_read']} of {c['photos_listed']} photos ({s['order']} order"
             + (f", --limit {s['limit']} usable" if s["limit"] else "") + f"); {c['usable']} have usable landmarks ("
             + ", ".join(f"{n} by {how}" for how, n in c["landmarks_found_by"].items()) + ").",
             "Splits: " + "; ".join(f"{sp} {v['real']} real + {v['fake']} fake" for sp, v in c["splits"].items()) + "."]
    if report["excluded"]:
        lines.append(f"{c['excluded']} photo(s) left out, each with its reason in {REPORT} (\"excluded\"); the first:")
        lines += [f"  {n}: {r}" for n, r in list(report["excluded"].items())[:5]]
    if report["notes"]:
        lines.append(f"{len(report['notes'])} photo(s) with fewer swaps than asked (\"notes\" in {REPORT}).")
    lines.append(f"Next: rccl-prep --dataset folder --root {out} --out {out}-prep")
    return "\n".join(lines) + "\n"

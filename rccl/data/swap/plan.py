"""Which photos a swap tree uses and how: the input's photos (a folder or a list file), their order, the
splits, and each target's donors; all seeded, none of it touches pixels.

Each photo goes to exactly one split; a target's donors come from its own split (and, with a pairing key,
its own group: photos whose file names give the same key). Within a split and group the photos are put in
a seeded cycle and target i takes donors i+1 .. i+k of it, so every photo is a donor as often as a target.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rccl.data.layouts.common import IMAGE_SUFFIXES, SPLITS
from rccl.errors import RcclError

ORDERS = ("shuffled", "sorted")
# seeded streams, one per decision, so that changing one setting does not move the others' draws
_ORDER_STREAM, _SPLIT_STREAM, _DONOR_STREAM = 1, 2, 3


class SwapError(RcclError, ValueError):
    """A bad input of rccl-swap (photos, output folder, settings); the message names it."""


@dataclass(frozen=True)
class Photo:
    path: Path  # where it is read from
    name: str   # its path relative to the input's root (folder, or the list's common folder), posix


def list_photos(source: str | os.PathLike) -> list[Photo]:
    """The photos of a folder (every image below it, sorted by path) or of a list file (one path a line,
    relative to the list's folder or absolute; blank lines and lines starting with # ignored)."""
    source = Path(source)
    if source.is_dir():
        paths = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(source).parts))
        if not paths:
            raise SwapError(f"{source}: no photo in this folder or below it ({', '.join(IMAGE_SUFFIXES)})")
        return [Photo(p, p.relative_to(source).as_posix()) for p in paths]
    if not source.is_file():
        raise SwapError(f"{source}: no such folder or list file (give a folder of photos, or a text file "
                        f"with one photo path a line)")
    paths, seen = [], set()
    for n, line in enumerate(source.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line) if Path(line).is_absolute() else source.parent / line
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            raise SwapError(f"{source}, line {n}: {line!r} is not an image path ({', '.join(IMAGE_SUFFIXES)})")
        if not p.is_file():
            raise SwapError(f"{source}, line {n}: {p} does not exist")
        if p.resolve() not in seen:
            seen.add(p.resolve())
            paths.append(p.resolve())
    if not paths:
        raise SwapError(f"{source}: the list names no photo")
    root = Path(os.path.commonpath([p.parent for p in paths]))
    return [Photo(p, p.relative_to(root).as_posix()) for p in paths]


def ordered(photos: list[Photo], order: str, seed: int) -> list[Photo]:
    """The order photos are read in (and --limit counts): the input's, or a seeded draw."""
    if order not in ORDERS:
        raise SwapError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    if order == "sorted":
        return list(photos)
    perm = np.random.default_rng([seed, _ORDER_STREAM]).permutation(len(photos))
    return [photos[i] for i in perm]


def check_fractions(fractions: dict[str, float]) -> None:
    bad = {s: f for s, f in fractions.items() if not 0 <= f <= 1}
    if bad:
        s, f = next(iter(bad.items()))
        raise SwapError(f"--{s} {f}: a split's fraction must lie in [0, 1]")
    if sum(fractions.values()) > 1 + 1e-9:
        raise SwapError(f"split fractions {' + '.join(f'{s} {f:g}' for s, f in fractions.items())} = "
                        f"{sum(fractions.values()):g}: they must sum to at most 1")
    if sum(fractions.values()) <= 0:
        raise SwapError("split fractions are all 0: give at least one split a share of the photos")


def assign_splits(names: list[str], fractions: dict[str, float], seed: int) -> tuple[dict[str, list[str]], list[str]]:
    """({split: names}, names left out when the fractions sum to less than 1): a seeded permutation cut
    at the fractions' cumulative sums (rounded), so the same seed and names give the same splits."""
    check_fractions(fractions)
    perm = [names[i] for i in np.random.default_rng([seed, _SPLIT_STREAM]).permutation(len(names))]
    out, start, total = {}, 0, 0.0
    for split in SPLITS:
        total += fractions.get(split, 0.0)
        end = len(perm) if abs(total - 1) < 1e-9 else min(len(perm), int(round(total * len(perm))))
        out[split] = sorted(perm[start:end])
        start = end
    return out, sorted(perm[start:])


def group_key(name: str, pattern: re.Pattern | None) -> str | None:
    """The pairing group of a photo: the pattern's groups (or whole match) searched in its file name, ""
    without a pattern, None when the name does not match."""
    if pattern is None:
        return ""
    m = pattern.search(Path(name).name)
    if m is None:
        return None
    return "/".join(g or "" for g in m.groups()) if m.groups() else m.group(0)


def compile_pattern(text: str | None) -> re.Pattern | None:
    if not text:
        return None
    try:
        return re.compile(text)
    except re.error as e:
        raise SwapError(f"--pair-within {text!r}: not a regular expression ({e})") from None


def pair_donors(members: list[str], swaps: int, seed: int, split: str, group: str
                ) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """([(target, donor)], {name: note}) for the photos of one split and group: a seeded cycle, target i
    takes the next `swaps` photos as donors (fewer where the group is smaller; noted per photo)."""
    notes: dict[str, str] = {}
    where = f"split {split}" + (f", group {group!r}" if group else "")
    if len(members) < 2:
        for name in members:
            notes[name] = f"no donor: the only photo with usable landmarks in {where}"
        return [], notes
    cycle = [members[i] for i in np.random.default_rng([seed, _DONOR_STREAM, *split.encode(), *group.encode()])
             .permutation(len(members))]
    k = min(swaps, len(cycle) - 1)
    pairs = [(t, cycle[(i + j) % len(cycle)]) for i, t in enumerate(cycle) for j in range(1, k + 1)]
    if k < swaps:
        for name in members:
            notes[name] = f"{k} swap(s), not {swaps}: only {len(cycle)} photos in {where}"
    return sorted(pairs), notes

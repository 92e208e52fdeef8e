"""The training records of a `data.fakes` mode: the manifest's own (real), its naturals and a pseudo-fake of
each (sbi), or both (mixed).

A pseudo-fake is a record like any other (label 1), with "blend_of": the index of its natural source in the
same list. The sampler (rccl.data.pairing) pairs it with that source in the batch, and the loaders make
its image on the fly (rccl.data.blend.pseudo_fake). Its source / target are "sbi:VIDEO" / "sbi:IDENTITY",
so that forgery-semantic pairing pairs pseudo-fakes of one identity with each other and never with a
dataset fake.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from rccl.data.faces.landmarks import landmark_problem
from rccl.errors import RcclError

FAKES_MODES = ("real", "sbi", "mixed")
BLEND_KEY = "blend_of"


class LandmarkDataError(RcclError, ValueError):
    """Self-blending was asked for and no natural crop has a usable landmark set; the message says why."""


@dataclass
class TrainingSet:
    records: list[dict]
    mode: str
    pseudo_fakes: int = 0
    without_landmarks: list[str] = field(default_factory=list)   # "CROP: reason", one per natural left out

    def describe(self) -> str:
        if self.mode == "real":
            return "fakes: the dataset's own (data.fakes=real)"
        text = f"fakes: {self.pseudo_fakes} self-blended pseudo-fakes, one per natural crop with landmarks"
        text += " (data.fakes=sbi: the dataset's fakes unused)" if self.mode == "sbi" else \
            " and the dataset's own fakes (data.fakes=mixed)"
        if self.without_landmarks:
            text += f"; {len(self.without_landmarks)} natural crop(s) without a usable landmark set make none:"
            text += "".join(f"\n  {p}" for p in self.without_landmarks[:10])
            if len(self.without_landmarks) > 10:
                text += f"\n  ... and {len(self.without_landmarks) - 10} more"
        return text


def why_no_landmarks(row: dict) -> str | None:
    """The per-crop reason a row cannot be self-blended, or None."""
    if "landmarks" not in row:
        return ("no landmarks column: the manifest was made by an rccl-prep without landmarks or with "
                "--no-landmarks; prepare the dataset again (into a new --out) to add them")
    if row["landmarks"] is None:
        return f"no usable landmark fit at preparation ({row.get('landmarks_problem') or 'no reason recorded'})"
    size = row.get("crop_size")
    return landmark_problem(row["landmarks"], size, size)


def pseudo_fake_record(row: dict, index: int) -> dict:
    return {**row, "label": 1, BLEND_KEY: index, "method": "self-blended",
            "source": f"sbi:{row['video']}", "target": f"sbi:{row['identity'] or row['video']}", "identity": ""}


def training_set(records: list[dict], mode: str) -> TrainingSet:
    """The records of `mode` (FAKES_MODES) from the selected training records."""
    if mode not in FAKES_MODES:
        raise ValueError(f"data.fakes must be one of {', '.join(FAKES_MODES)}, got {mode!r}")
    if mode == "real":
        return TrainingSet(list(records), mode)
    naturals = [r for r in records if int(r["label"]) == 0]
    usable, problems = [], []
    for r in naturals:
        why = why_no_landmarks(r)
        if why is None:
            usable.append(r)
        else:
            problems.append(f"{r['path']}: {why}")
    if not usable:
        first = problems[0] if problems else "the selection has no natural crop"
        raise LandmarkDataError(f"data.fakes={mode}: none of the {len(naturals)} natural training crops has a "
                                f"usable landmark set, so no pseudo-fake can be made (first: {first})")
    base = usable if mode == "sbi" else list(records)
    out = list(base)
    out += [pseudo_fake_record(r, i) for i, r in enumerate(base) if int(r["label"]) == 0 and why_no_landmarks(r) is None]
    return TrainingSet(out, mode, pseudo_fakes=len(out) - len(base), without_landmarks=problems)

"""What a synthetic tree is made from: its parameters, the named presets, and the seeded randomness.

Everything random in a tree comes from `seeded_rng(cfg, *names)`: a generator fixed by the seed and a name (the
video, the frame, the identity), so a video is the same bytes whatever order or process makes it in.
"""
from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, fields

import numpy as np

from rccl.errors import RcclError

PARAMS_FILE = "synth.json"          # the parameters the tree was made with; written last (= complete)
TRACES = ("robust", "fragile", "lookalike")  # what the fakes carry; see rccl.data.synth.forge


class SynthError(RcclError, ValueError):
    """Parameters a synthetic tree cannot be made with, or a folder that holds another tree."""


@dataclass(frozen=True)
class SynthConfig:
    seed: int = 0
    n_identities: int = 8
    videos_per_identity: int = 5
    test_videos_per_identity: int = 1
    n_youtube: int = 4
    n_frames: int = 32
    size: int = 128
    fps: int = 25
    artifact_strength: float = 1.0
    raw_qp: int = 10
    faces_dir: str | None = None
    # robust: the demo's fakes (blur, colour offset, seam: cues that survive c40);
    # fragile: traces heavy compression erases (thin seam, grain loss, resampling, slight mismatch), but the
    # swapped face brings its own colouring (a mismatch c40 keeps); lookalike: the same traces on a look-alike
    # swap (Y's face shape in X's colours), the compression benchmark's
    traces: str = "robust"
    # The strengths of the "fragile"/"lookalike" traces (the "robust" fakes ignore them): the generator's
    # resolution loss, a factor drawn per video from [lo, hi] (1 = none), and multipliers of the seam's and
    # the upsampling checkerboard's amplitudes. Varied to find what the detectors learn (bench/RESULTS.md).
    generator_down: tuple[float, float] = (1.4, 2.0)
    seam_scale: float = 1.0
    checker_scale: float = 1.0

    def record(self) -> dict:
        """The parameters as synth.json holds them (JSON types: a tuple is a list). The keys added after
        the first trees were made are left out at their defaults, so that those trees are still recognised as
        the same tree (their synth.json lacks them)."""
        out = asdict(self)
        out["generator_down"] = list(self.generator_down)
        for key in LATER_KEYS:
            default = getattr(SynthConfig, key)
            if out[key] == (list(default) if isinstance(default, tuple) else default):
                del out[key]
        return out


SYNTH_KEYS = tuple(f.name for f in fields(SynthConfig))
LATER_KEYS = ("traces", "generator_down", "seam_scale", "checker_scale")  # omitted from synth.json at default

# Named settings of rccl-synth / make_prepared: what a tree is made with ("synth") and how rccl-prep cuts it
# ("prep"). The one place each preset's numbers are written down (the tests and bench read them here).
PRESETS: dict[str, dict] = {
    # The embedded demo (rccl-train with no dataset): 17 test videos, traces that survive compression.
    "demo": {
        "synth": dict(seed=0, n_identities=8, videos_per_identity=5, test_videos_per_identity=1, n_youtube=4,
                      n_frames=32, size=128, artifact_strength=1.0),
        "prep": dict(qualities=("raw", "c23", "c40"), pairs_per_video=8, crop_size=80),
    },
    # The paper-tables benchmark (bench/paper_tables.py): fakes whose traces c40 erases, 106 test videos
    # (26 identities x 2 test videos, each with its fake, + 2 YouTube), 104 + 6 training videos.
    "compression": {
        "synth": dict(seed=0, n_identities=26, videos_per_identity=4, test_videos_per_identity=2, n_youtube=8,
                      n_frames=16, size=128, artifact_strength=1.0, traces="lookalike"),
        "prep": dict(qualities=("raw", "c23", "c40"), pairs_per_video=3, crop_size=64),
    },
}


def preset(name: str) -> dict:
    """A copy of the preset `name` ({"synth": {...}, "prep": {...}})."""
    if name not in PRESETS:
        raise SynthError(f"unknown synthetic preset {name!r} (known: {', '.join(PRESETS)})")
    return {part: dict(values) for part, values in PRESETS[name].items()}


def seeded_rng(cfg: SynthConfig, *key) -> np.random.Generator:
    """A generator fixed by the seed and a name, independent of the order videos are made in."""
    words = [zlib.crc32(str(k).encode()) for k in key]
    return np.random.default_rng([cfg.seed, *words])

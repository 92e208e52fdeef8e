"""A small synthetic deepfake dataset in the exact Celeb-DF-v2 layout, for running everything without data.

By job:
- `params`: SynthConfig (what a tree is made with), the named presets (demo, compression), seeded randomness;
- `plan`: which videos a tree holds, of whom, which are fakes of what, which are tested;
- `render`: natural videos (procedural faces or photos, camera motion, lighting, grain);
- `forge`: the fakes (another identity's face blended in, with "robust", "fragile" or "lookalike" traces);
- `tree`: writing it all to disk (videos, boxes, test list, synth.json), resumable;
- `prepared`: a preset made and prepared (rccl-prep) once, cached (the demo set, the benchmark set);
- `probe`: which cue separates a prepared set (linear probes, a tiny CNN; bench/synth_probe.py).

Faces are procedural by default (no data needed; dlib does not see them as faces, so the true face boxes
are written under ROOT/boxes/ for rccl-prep), or photos with faces_dir (a folder per identity holding
photos; dlib finds those faces). Everything is deterministic by seed. See docs/data.md.
"""
from rccl.data.synth.params import PARAMS_FILE, PRESETS, TRACES, SynthConfig, SynthError, preset
from rccl.data.synth.prepared import DEMO_PREP, DEMO_SYNTH, make_demo, make_prepared
from rccl.data.synth.render import Canvas, PhotoFace, identity_params, render_face, true_box
from rccl.data.synth.tree import make_synthetic

__all__ = ["PARAMS_FILE", "PRESETS", "TRACES", "SynthConfig", "SynthError", "preset", "DEMO_PREP", "DEMO_SYNTH",
           "make_demo", "make_prepared", "Canvas", "PhotoFace", "identity_params", "render_face", "true_box",
           "make_synthetic"]

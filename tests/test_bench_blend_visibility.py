"""bench/blend_visibility.py: naturals and their pseudo-fakes through the pretrained encoder at a size; the
cosines are cosines, the probe's AUC a rate, and too few naturals is a named error."""
from __future__ import annotations

from bench import blend_visibility
from tiny_data import make_tiny_manifest


def test_visibility_of_tiny_blends(tmp_path, capsys):
    manifest = make_tiny_manifest(tmp_path, size=32, landmarks=True, identities=4, videos_per_identity=4, frames=6)
    naturals, fakes = blend_visibility.pairs(manifest, 64, 0.0)
    assert naturals.shape == fakes.shape and naturals.shape[0] == 64
    v = blend_visibility.visibility(naturals, fakes, 32)
    assert v["size"] == 32 and v["pairs"] == 64
    assert -1 <= v["cos_other_natural"] <= 1 and -1 <= v["cos_own_fake"] <= 1
    assert 0 <= v["linear_probe_auc"] <= 1
    assert blend_visibility.main(["--manifest", str(manifest), "--sizes", "32", "--n", "64"]) == 0
    assert capsys.readouterr().out.splitlines()[2].startswith("| 32 | 64 |")
    assert blend_visibility.main(["--manifest", str(manifest), "--n", "10"]) == 2
    assert "give a manifest with >= 64" in capsys.readouterr().err
    assert blend_visibility.main(["--manifest", str(tmp_path / "none.jsonl")]) == 2

"""What a detector reads: its runs' test crops scored as they are, after whole-crop degradations that leave
no blending boundary (blur, a resolution loss, JPEG, sharpening), and at the set's own c23 / c40.

Why: trained on raw naturals and their self-blended pseudo-fakes, the sbi detectors of bench/sbi_tables.py
call every c40 natural fake (TNR 0). A pseudo-fake's inner face is blurred or sharpened and recoloured
against its surroundings; a detector that learned the boundary should not mind a crop degraded all over,
one that learned "a face with less detail is fake" will call a uniformly blurred natural fake. This probe
tells the two apart, for the sbi and the true-fake detectors side by side.

    python -m bench.sbi_tables --only sbi:CE,sbi:Ours,sbi-sharp:CE,sbi-sharp:Ours,true:CE,true:Ours --seeds 0 \
        --keep-checkpoints --runs /tmp/probe --out /tmp/probe/runs.json     # the detectors, with checkpoints
    python -m bench.sbi_degrade /tmp/probe/ce-s0 /tmp/probe/ce-sbi-sharp-s0 /tmp/probe/ours-s0 \
        /tmp/probe/ours-sbi-sharp-s0 /tmp/probe/table2_xception-s0 /tmp/probe/table2_ours-s0
                                                                # -> bench/results/sbi_degrade.json / .md

Every run must have been trained on one manifest (its config's data.manifest); the crops are that
manifest's test split at raw (the degradations are applied to them) and the same frames at c23 / c40.
Per run and degradation: TNR (naturals with fake probability < 0.5), the naturals' mean fake probability,
TPR, and the frame AUC of naturals against fakes under the same degradation.

Then the pseudo-fakes themselves (pseudo_fake_detail): the manifest's raw training naturals self-blended
at several data.blend_downscale_p, and the fine detail of each pseudo-fake's inner face (where the mask is
1) against its natural's: what a detector can learn from them about detail.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from bench.paper_tables import ROOT, BenchError
from rccl.errors import RcclError
from rccl.fileio import write_json, write_text

OUT_JSON = ROOT / "bench" / "results" / "sbi_degrade.json"


def _resample(crop: np.ndarray, factor: int) -> np.ndarray:
    h, w = crop.shape[:2]
    img = Image.fromarray(crop).resize((max(1, w // factor), max(1, h // factor)), Image.BILINEAR)
    return np.asarray(img.resize((w, h), Image.BILINEAR))


def _jpeg(crop: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _sharpen(crop: np.ndarray, amount: float) -> np.ndarray:
    blurred = np.asarray(Image.fromarray(crop).filter(ImageFilter.GaussianBlur(1.0)), dtype=np.float32)
    x = crop.astype(np.float32)
    return np.clip(np.rint(x + amount * (x - blurred)), 0, 255).astype(np.uint8)


# name -> whole-crop degradation of an HxWx3 uint8 crop (the same for every pixel: no boundary)
DEGRADATIONS = {
    "none": lambda c: c,
    "gaussian blur, sigma 1 px": lambda c: np.asarray(Image.fromarray(c).filter(ImageFilter.GaussianBlur(1.0))),
    "resolution / 2 (bilinear down and up)": lambda c: _resample(c, 2),
    "resolution / 4": lambda c: _resample(c, 4),
    "JPEG quality 30": lambda c: _jpeg(c, 30),
    "sharpened (x + 0.5 (x - blur))": lambda c: _sharpen(c, 0.5),
}
QUALITY_ROWS = ("c23", "c40")  # the same frames as the set itself compressed them


def paired_test_crops(manifest: Path) -> dict[str, list[dict]]:
    """{"raw": records, "c23": records, "c40": records} of the manifest's test split; the compressed lists hold
    the same (video, frame, pair) keys as the raw one, in its order."""
    from rccl.data.manifest import read_manifest

    records = [r for r in read_manifest(manifest) if r["split"] == "test"]
    by_quality: dict[str, dict] = {}
    for r in records:
        by_quality.setdefault(r["quality"], {})[(r["video"], r["frame"], r.get("pair", 0))] = r
    if "raw" not in by_quality:
        raise BenchError(f"{manifest}: no raw test crops")
    keys = list(by_quality["raw"])
    out = {"raw": [by_quality["raw"][k] for k in keys]}
    for q in QUALITY_ROWS:
        missing = [k for k in keys if k not in by_quality.get(q, {})]
        if missing:
            raise BenchError(f"{manifest}: {len(missing)} raw test crops have no {q} copy (first: {missing[0]})")
        out[q] = [by_quality[q][k] for k in keys]
    return out


def load_image(record: dict) -> np.ndarray:
    """A manifest row's crop, HxWx3 uint8 RGB (read_manifest gives the file's "abspath")."""
    return np.asarray(Image.open(record["abspath"]).convert("RGB"))


def summarize(labels: np.ndarray, scores: np.ndarray) -> dict:
    """TNR and the naturals' mean score; with fakes among the crops, their TPR and the frame AUC (None
    without: a naturals-only test split says how many naturals a degradation turns fake, not more)."""
    from rccl.metrics import roc_auc

    nat, fake = scores[labels == 0], scores[labels == 1]
    both = len(nat) and len(fake)
    return {"tnr": float((nat < 0.5).mean()), "natural_mean": float(nat.mean()),
            "tpr": float((fake >= 0.5).mean()) if len(fake) else None,
            "auc": float(roc_auc(labels, scores)) if both else None}


def probe_run(run_dir: Path, crops: dict[str, list[np.ndarray]], labels: np.ndarray) -> dict[str, dict]:
    """{degradation or quality: summarize(...)} for one run's detector."""
    import torch

    from rccl.model import input_normalization
    from rccl.run import RunDir
    from rccl.scoring import input_size, score_crops

    model, cfg = RunDir(run_dir).load_detector()
    size, norm = input_size(cfg), input_normalization(cfg["model"]["encoder"])
    out = {}
    with torch.inference_mode():
        for name, degrade in DEGRADATIONS.items():
            out[name] = summarize(labels, score_crops(model, [degrade(c) for c in crops["raw"]], size, "cpu",
                                                      normalization=norm))
        for q in QUALITY_ROWS:
            out[f"the set's {q}"] = summarize(labels, score_crops(model, crops[q], size, "cpu", normalization=norm))
    return out


def run_label(run_dir: Path, cfg: dict) -> str:
    """The run's setting in words, from its config: data.fakes and loss.kind."""
    fakes = {"sbi": "sbi", "real": "true", "mixed": "mixed"}.get(cfg["data"].get("fakes", "real"), "?")
    return f"{fakes} {cfg['loss']['kind']} ({run_dir.name})"


def render_markdown(results: dict, command: str) -> str:
    runs = list(results["runs"])
    lines = ["# What the detectors read: whole-crop degradations (bench/sbi_degrade.py)", "",
             f"The raw test crops of `{results['manifest']}` ({results['n_natural']} naturals, "
             f"{results['n_fake']} fakes) scored after a degradation applied to the whole crop (no blending "
             "boundary), and the same frames at the set's c23 / c40. Cell: TNR (naturals called natural at 0.5) "
             "/ the naturals' mean fake probability / frame AUC, in percent.",
             f"Generated by `{command}`.", "",
             "| crops | " + " | ".join(results["labels"][r] for r in runs) + " |",
             "|---|" + "---:|" * len(runs)]
    for name in results["runs"][runs[0]]:
        cells = [results["runs"][r][name] for r in runs]
        lines.append(f"| {name} | " + " | ".join(
            f"{100 * c['tnr']:.0f} / {100 * c['natural_mean']:.0f} / "
            + ("-" if c["auc"] is None else f"{100 * c['auc']:.1f}") for c in cells) + " |")
    return "\n".join(lines) + "\n"


# (label, BlendParams fields): the defaults at three downscale shares, then the all-sharpened one without the
# source's zoom and shift (no resampling), to tell the resolution loss and the resampling apart
BLEND_VARIANTS = [("downscale_p 0", {"downscale_p": 0.0}), ("downscale_p 0.5 (default)", {"downscale_p": 0.5}),
                  ("downscale_p 1", {"downscale_p": 1.0}),
                  ("downscale_p 0, no zoom or shift", {"downscale_p": 0.0, "translate": (0.0, 0.0), "scale": (1.0, 1.0)}),
                  ("target_p 0.5 (SBI's 50/50; configs/real/sbi)", {"target_p": 0.5})]


def pseudo_fake_detail(manifest: Path, variants=BLEND_VARIANTS, n: int = 256, seed: int = 0) -> dict[str, dict]:
    """{label: {"n": blends with a full-ratio mask, "median", "q25", "q75": inner-face detail of the
    pseudo-fake over its source's, "below": the share of them with less detail}} for up to n raw training
    naturals with landmarks, blended with each variant's BlendParams and one seed. Detail: the mean
    absolute difference of horizontal neighbours over the pixels where the mask is >= 0.99. {} when the
    manifest has no such naturals (one made before landmarks, or with --no-landmarks)."""
    import torch

    from rccl.data.blend import BlendParams, self_blend
    from rccl.data.manifest import read_manifest

    recs = [r for r in read_manifest(manifest) if r["split"] == "train" and r["quality"] == "raw"
            and r["label"] == 0 and r.get("landmarks")][:n]
    if not recs:
        return {}
    crops = torch.stack([torch.from_numpy(load_image(r).copy()).permute(2, 0, 1) for r in recs])
    landmarks = torch.tensor([r["landmarks"] for r in recs], dtype=torch.float32)

    def detail(x, where):
        d = (x[..., 1:].float() - x[..., :-1].float()).abs().mean(1)
        w = where[..., 1:].float()
        return (d * w).sum((1, 2)) / w.sum((1, 2)).clamp(min=1)

    out = {}
    for label, fields in variants:
        fakes, mask, naturals = self_blend(crops, landmarks, params=BlendParams(**fields),
                                           generator=torch.Generator().manual_seed(seed))
        mask = mask.reshape(len(crops), *mask.shape[-2:])
        inner = mask >= 0.99
        full = inner.flatten(1).any(1)  # a blend ratio below 1 leaves no pixel of the pure source
        # against the natural each pseudo-fake is paired with (the crop, or the jittered crop in the target branch)
        r = (detail(fakes, inner) / detail(naturals, inner).clamp(min=1e-6))[full]
        out[label] = {"n": int(full.sum()), "median": float(r.median()), "q25": float(r.quantile(0.25)),
                      "q75": float(r.quantile(0.75)), "below": float((r < 1).float().mean())}
    return out


def render_detail(detail: dict) -> str:
    if not detail:
        return "\nThe pseudo-fakes' detail: not measured (the manifest has no raw training naturals with landmarks).\n"
    lines = ["", "## The pseudo-fakes' inner face against their source", "",
             "Fine detail (mean absolute difference of horizontal neighbours) where the mask is >= 0.99, "
             "pseudo-fake over the natural it is blended into (the crop, or the jittered crop in the target branch), "
             "for the blends with a full ratio; one seed.", "",
             "| blending | blends | median | quartiles | share with less detail |",
             "|---|---:|---:|---|---:|"]
    for label, d in detail.items():
        lines.append(f"| {label} | {d['n']} | {d['median']:.2f} | {d['q25']:.2f}-{d['q75']:.2f} | {100 * d['below']:.0f} % |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sbi_degrade", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run folders with their stage-2 checkpoint")
    p.add_argument("--manifest", type=Path, default=None,
                   help="score the test split of this manifest (raw, c23 and c40 of the same frames) instead of "
                        "the one the runs were trained on: e.g. a face-swap tree for detectors trained on "
                        "naturals alone (the pseudo-fakes' detail is still measured on the training manifest)")
    p.add_argument("--out", type=Path, default=OUT_JSON, help="results JSON; the .md is written beside it")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = " ".join(["python -m bench.sbi_degrade", *(argv if argv is not None else sys.argv[1:])])
    try:
        return _main(args, command)
    except RcclError as e:
        print(f"sbi_degrade: error: {e}", file=sys.stderr)
        return 2


def _main(args, command: str) -> int:
    from rccl.run import RunDir

    configs = {run: RunDir(run).config() for run in args.runs}  # a folder without config.yaml: its error
    manifests = {str(RunDir(run).manifest(cfg)) for run, cfg in configs.items()}
    trained_on = sorted(manifests)
    if len(manifests) != 1 and args.manifest is None:
        raise BenchError(f"the runs were trained on {len(manifests)} manifests ({', '.join(sorted(manifests))}): "
                         "give runs of one, or --manifest to test them all on one set")
    tested = args.manifest or Path(manifests.pop())
    if not tested.is_file():
        raise BenchError(f"--manifest {tested}: no such file")
    manifest = tested  # the pseudo-fakes' detail: of the tested set's training naturals
    records = paired_test_crops(tested)
    crops = {q: [load_image(r) for r in rs] for q, rs in records.items()}
    labels = np.array([r["label"] for r in records["raw"]])
    if not (labels == 0).any():
        raise BenchError(f"{tested}: its test split has no natural crop: nothing to count")
    results = {"manifest": str(tested), "trained_on": trained_on,
               "n_natural": int((labels == 0).sum()),
               "n_fake": int((labels == 1).sum()), "labels": {}, "runs": {},
               "pseudo_fake_detail": pseudo_fake_detail(manifest)}
    for run in args.runs:
        results["labels"][str(run)] = run_label(run, configs[run])
        results["runs"][str(run)] = probe_run(run, crops, labels)
        print(f"sbi_degrade: {run} done", flush=True)
    write_json(args.out, results)
    text = render_markdown(results, command) + render_detail(results["pseudo_fake_detail"])
    write_text(args.out.with_suffix(".md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Per-step internals of a training run: what a flat or round-valued loss is hiding.

    python -m bench.stage_probe --out /tmp/probe.csv -- --config sbi/ours data.manifest=M stage1.epochs=1 ...
    python -m bench.stage_probe --summarize /tmp/probe.csv [...]     the epoch means, as a markdown table

Everything after `--` is rccl-train's own command line (config and overrides); the run trains as rccl-train
would (one process, no evaluation after training) with one more hook, StepProbe, that writes one CSV row
per optimiser step of each stage:

  stage, epoch, step, lr            the learning rate the step applied (the scheduler's, before its step)
  loss                              the step's loss
  grad_encoder, grad_head           gradient L2 norms of the encoder and of the rest (projector or classifier)
  update_ratio                      |lr * grad| / |weights| of the encoder (how far one step moves it)
  feat_norm, feat_std               the encoder's pooled features: mean L2 norm, mean per-dimension std
  feat_gap                          the class gap of those features (cosine: same class minus natural-fake)
  z_gap, z_cos                      the class gap and mean pairwise cosine of the stage's output (the
                                    projections z in stage 1; CE: the logits), as the collapse watch measures

The features are read by forward hooks on the encoder and the stage's output module, so the training step
is the very one rccl-train runs. A timing here is not a benchmark (the probe adds host reads every step).
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from rccl.embedding import embedding_separation
from rccl.train.engine import HookBase

FIELDS = ("stage", "epoch", "step", "lr", "loss", "grad_encoder", "grad_head", "update_ratio", "feat_norm",
          "feat_std", "feat_gap", "z_gap", "z_cos")


def _norm(params) -> float:
    grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else 0.0


class StepProbe(HookBase):
    """Writes FIELDS to `path` after every optimiser step (a host read per step: diagnosis only)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: list[dict] = []
        self._seen: dict[str, torch.Tensor] = {}
        self._handles = []
        self._loss = None
        self._labels = None

    def before_stage(self, loop) -> None:
        model = loop.model
        head = model.projector if loop.number == 1 and loop.stage.loss_fn is not None else model.classifier
        self._encoder_params = list(model.encoder.parameters())
        self._head_params = list(head.parameters())
        self._handles = [model.encoder.register_forward_hook(self._keep("feat")),
                         head.register_forward_hook(self._keep("out"))]
        step = loop.stage.step

        def labelled_step(net, batch):  # the same step; the probe notes the labels of its two views
            self._labels = torch.cat([batch["label"], batch["label"]])
            return step(net, batch)
        loop.stage.step = labelled_step

    def _keep(self, key):
        def hook(module, inputs, output):
            self._seen[key] = output.detach().float()
        return hook

    def after_loss(self, loop, loss) -> None:
        self._loss = float(loss.detach())
        self._lr = loop.scheduler.get_last_lr()[0]
        self._weights = float(torch.stack([p.detach().float().norm() for p in self._encoder_params]).norm())

    def after_step(self, loop) -> None:
        labels = self._labels
        feat, out = self._seen.get("feat"), self._seen.get("out")
        grad_enc = _norm(self._encoder_params)
        row = {"stage": loop.number, "epoch": loop.epoch + 1, "step": loop.step, "lr": self._lr, "loss": self._loss,
               "grad_encoder": grad_enc, "grad_head": _norm(self._head_params),
               "update_ratio": self._lr * grad_enc / max(self._weights, 1e-12)}
        if feat is not None and labels is not None and len(labels) == len(feat):
            row.update(feat_norm=float(feat.norm(dim=1).mean()), feat_std=float(feat.std(dim=0).mean()),
                       feat_gap=float(embedding_separation(F.normalize(feat, dim=1), labels)[1]))
        if out is not None and labels is not None and len(labels) == len(out):
            cos, gap = embedding_separation(F.normalize(out, dim=1), labels)
            row.update(z_gap=float(gap), z_cos=float(cos))
        self.rows.append({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})

    def after_epoch(self, loop) -> None:
        self.write()  # an interrupted probe keeps what it measured

    def after_stage(self, loop) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.write()

    def write(self) -> None:
        with open(self.path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            w.writeheader()
            w.writerows(self.rows)


SUMMARY = (("lr", "lr", ".4f"), ("loss", "loss", ".3f"), ("grad_encoder", "encoder grad", ".2f"),
           ("update_ratio", "update ratio", ".1e"), ("feat_gap", "feature gap", ".4f"), ("z_gap", "output gap", ".4f"),
           ("z_cos", "output cos", ".3f"), ("feat_norm", "feature norm", ".1f"))


def summarize(paths: list[Path]) -> str:
    """A markdown table of each probe CSV's epoch means (stage by stage)."""
    import statistics

    lines = ["| probe | stage | epoch | steps | " + " | ".join(t for _, t, _ in SUMMARY) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(SUMMARY)]
    for path in paths:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        for stage, epoch in dict.fromkeys((r["stage"], r["epoch"]) for r in rows):
            rs = [r for r in rows if (r["stage"], r["epoch"]) == (stage, epoch)]
            cells = []
            for key, _, fmt in SUMMARY:
                values = [float(r[key]) for r in rs if r.get(key)]
                cells.append(format(statistics.fmean(values), fmt) if values else "-")
            lines.append(f"| {Path(path).stem} | {stage} | {epoch} | {len(rs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--summarize"]:
        missing = [a for a in argv[1:] if not Path(a).is_file()]
        if not argv[1:] or missing:
            print(f"stage_probe: --summarize needs probe CSVs{'; not found: ' + ', '.join(missing) if missing else ''}",
                  file=sys.stderr)
            return 2
        print(summarize([Path(a) for a in argv[1:]]))
        return 0
    if "--" not in argv:
        print("usage: python -m bench.stage_probe --out FILE.csv -- RCCL-TRAIN ARGS...\n"
              "       python -m bench.stage_probe --summarize FILE.csv [...]", file=sys.stderr)
        return 2
    cut = argv.index("--")
    p = argparse.ArgumentParser(prog="stage_probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="the per-step CSV")
    args = p.parse_args(argv[:cut])
    from rccl.cli.train import main as train_main

    probe = StepProbe(args.out)
    rc = train_main([*argv[cut + 1:], "--no-eval"], hooks=[probe])
    print(f"stage_probe: {len(probe.rows)} steps -> {args.out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())

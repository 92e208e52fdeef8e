"""The collapse watch: is the contrastive stage learning, or have its projections fallen onto one point?

Two-class supervised contrastive learning has a degenerate point: every projection z the same vector. There
the loss is flat (its gradient vanishes) and sits at a value the batch alone fixes: ln(2B - 1) for Sup. Con
on 2B views, the op's value on identical inputs for the real-centric loss. A run can fall there within its
first warm-up steps and stay for its whole budget (bench/RESULTS.md, "Method that learns"), so every step
measures, on the device and without a host read:
- the mean pairwise cosine of z (near 1: the projections share one direction),
- the class gap: mean cosine of same-class pairs minus that of natural-fake pairs (what the linear
  classifier of stage 2 can use; near 0: the classes are not apart),
- whether the loss is within COLLAPSE_TOLERANCE of its collapsed value.
The epoch's means go to epochs.csv and TensorBoard; an epoch spent entirely at the collapsed value is
reported in plain words with what to try, at the end of that epoch, not at the end of the run.
"""
from __future__ import annotations

import torch

from rccl.embedding import embedding_separation

# |loss - collapsed| / collapsed under which a step counts as "at the collapsed value". A learning run
# leaves this band within its first epoch (bench/RESULTS.md, the stage-1 losses of Table 2).
COLLAPSE_TOLERANCE = 0.01
SUM_KEYS = ("watch_steps", "collapsed_steps", "collapsed_loss", "mean_cosine", "class_gap")


def step_sums(loss: torch.Tensor, collapsed: torch.Tensor, z: torch.Tensor, labels: torch.Tensor) -> dict:
    """One step's contribution to the epoch's sums (device tensors; the engine adds them up)."""
    mean_cos, gap = embedding_separation(z, labels)
    at_collapse = (loss.detach().float() - collapsed).abs() <= COLLAPSE_TOLERANCE * collapsed.abs()
    return {"watch_steps": 1, "collapsed_steps": at_collapse.double(), "collapsed_loss": collapsed.double(),
            "mean_cosine": mean_cos.double(), "class_gap": gap.double()}


def epoch_fields(sums: dict) -> dict:
    """The epochs.csv fields from an epoch's sums: means of the class gap, the pairwise cosine and the
    collapsed loss value, and the share of steps spent at the collapsed value."""
    steps = sums.get("watch_steps", 0)
    if not steps:
        return {}
    return {"class_gap": round(float(sums["class_gap"]) / steps, 4),
            "mean_cosine": round(float(sums["mean_cosine"]) / steps, 4),
            "collapsed_loss": round(float(sums["collapsed_loss"]) / steps, 4),
            "at_collapse": round(float(sums["collapsed_steps"]) / steps, 3)}


def collapse_warning(fields: dict, epoch: int, loss_kind: str, batch_views: int) -> str | None:
    """The plain-words warning for an epoch spent wholly at the collapsed loss value, or None."""
    if not fields or fields["at_collapse"] < 1.0:
        return None
    value = (f"ln(2B - 1) = ln {batch_views - 1} = {fields['collapsed_loss']:.4f}" if loss_kind == "supcon"
             else f"{fields['collapsed_loss']:.4f}")
    return (f"stage 1 epoch {epoch}: the contrastive loss sat for the whole epoch at {value}, its value when every "
            f"projection is the same vector (mean pairwise cosine of z {fields['mean_cosine']:.3f}, class gap "
            f"{fields['class_gap']:.4f}): the projections have collapsed and the encoder gets almost no gradient, "
            f"so more epochs will not help. Try: ImageNet weights for the encoder (model.weights=PATH, or "
            f"model.encoder=tf_efficientnet_lite0 model.weights=package:efficientnet-lite0), the projector's "
            f"output batch norm (model.proj_out_bn=true), or a lower stage1.lr")

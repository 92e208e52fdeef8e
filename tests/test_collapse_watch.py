"""The collapse watch (rccl.train.collapse): the class gap and pairwise cosine of z, the loss's collapsed
value, and the warning for an epoch spent at it, on hand-made features and on real tiny runs."""
from __future__ import annotations

import csv
import logging
import math

import pytest
import torch
import torch.nn.functional as F

from rccl.loss import RealCentricLoss
from rccl.embedding import embedding_separation
from rccl.train.collapse import collapse_warning, epoch_fields, step_sums
from rccl.train.config import load_config
from rccl.train.runner import train
from tiny_data import make_tiny_manifest, tiny_overrides

LOSS = {"temperature": 0.1, "bank_size": 4, "negatives": 4, "neighbors": 2, "margin": 0.2, "beta": [0.5, 0.5],
        "fold": True, "fusion": "smooth", "linear_neighbors": 4, "mixed_as": "negatives", "impl": "auto"}


def test_separation_of_hand_made_features():
    # two naturals at e0, two fakes at e1: same-class cosine 1, cross-class 0 -> gap 1;
    # pairs: 2 same-class (cos 1) + 4 cross (cos 0) of 6 -> mean cosine 1/3
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    mean_cos, gap = embedding_separation(z, torch.tensor([0, 0, 1, 1]))
    assert mean_cos.item() == pytest.approx(1 / 3) and gap.item() == pytest.approx(1.0)
    # one point for all (collapse): cosine 1, gap 0
    mean_cos, gap = embedding_separation(torch.ones(6, 3) / math.sqrt(3), torch.tensor([0, 1, 0, 1, 0, 1]))
    assert mean_cos.item() == pytest.approx(1.0) and gap.item() == pytest.approx(0.0, abs=1e-6)
    # naturals at e0 and -e0... fakes at e1: same-class cos for naturals (1 pair: -1), fakes (1 pair: 1) -> 0;
    # cross pairs all 0 -> gap 0; all 6 pairs: (-1 + 1) / 6 -> 0
    z = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    mean_cos, gap = embedding_separation(z, torch.tensor([0, 0, 1, 1]))
    assert mean_cos.item() == pytest.approx(0.0, abs=1e-7) and gap.item() == pytest.approx(0.0, abs=1e-7)
    # one class only: no gap to measure
    assert embedding_separation(z, torch.zeros(4, dtype=torch.long))[1].item() == 0.0


def test_separation_matches_the_pairwise_definition():
    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(40, 8, generator=g), dim=1)
    labels = (torch.rand(40, generator=g) > 0.3).long()
    sim, off = z @ z.T, ~torch.eye(40, dtype=torch.bool)
    same, other = (labels[:, None] == labels[None, :]) & off, labels[:, None] != labels[None, :]
    mean_cos, gap = embedding_separation(z, labels)
    assert mean_cos.item() == pytest.approx(sim[off].mean().item(), abs=1e-6)
    assert gap.item() == pytest.approx((sim[same].mean() - sim[other].mean()).item(), abs=1e-6)


@pytest.mark.parametrize("kind", ["supcon", "rccl"])
def test_collapsed_value_is_the_loss_of_identical_features(kind):
    loss = RealCentricLoss.from_config({"kind": kind, **LOSS}, 16)
    labels = torch.tensor([0] * 6 + [1] * 6)
    one = F.normalize(torch.ones(12, 16), dim=1)
    for _ in range(3):  # empty banks, then filled ones
        collapsed = loss.collapsed_value(labels)
        assert collapsed.item() == pytest.approx(loss(one, labels).item(), rel=1e-5)
    if kind == "supcon":
        assert collapsed.item() == pytest.approx(math.log(11), rel=1e-6)  # ln(2B - 1), 2B = 12 views


def test_epoch_fields_and_warning():
    at, off = torch.tensor(4.0), torch.tensor(3.0)
    z = F.normalize(torch.ones(4, 2), dim=1)
    labels = torch.tensor([0, 0, 1, 1])
    sums = {}
    for loss in (at, at * 1.005, at):  # all within 1 % of the collapsed value
        for k, v in step_sums(loss, torch.tensor(4.0), z, labels).items():
            sums[k] = sums.get(k, 0) + v
    fields = epoch_fields(sums)
    assert fields["at_collapse"] == 1.0 and fields["mean_cosine"] == pytest.approx(1.0)
    warning = collapse_warning(fields, 2, "supcon", 64)
    assert "epoch 2" in warning and "ln 63" in warning and "model.proj_out_bn" in warning
    for k, v in step_sums(off, torch.tensor(4.0), z, labels).items():  # one step out of the band
        sums[k] += v
    assert epoch_fields(sums)["at_collapse"] == 0.75 and collapse_warning(epoch_fields(sums), 2, "supcon", 64) is None
    assert epoch_fields({}) == {} and collapse_warning({}, 1, "rccl", 64) is None


def _run(tmp_path, caplog, identical: bool, **extra):
    manifest = make_tiny_manifest(tmp_path / "data", identical=identical, frames=8)
    cfg = load_config(None, tiny_overrides(manifest, tmp_path / "runs", **{
        "loss.kind": "supcon", "data.pairing": "instance", "stage1.epochs": 3, "stage2.epochs": 0,
        "stage1.lr": 0.1, **extra}))
    with caplog.at_level(logging.WARNING, logger="rccl.train"):
        run = train(cfg, stages=(1,))
    with open(run.epochs_csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["stage"] == "1"]
    warnings = [r.getMessage() for r in caplog.records if "collapsed" in r.getMessage()]
    return rows, warnings


def test_a_run_that_collapses_is_told_so_at_the_epoch_it_happens(tmp_path, caplog):
    """Every crop the same image (only the augmentation varies the views) and the paper's projector: the
    projections fall onto one point within the first epoch and the loss sits at ln(2B - 1) = ln 15 from the
    second on; each such epoch is reported when it ends."""
    rows, warnings = _run(tmp_path, caplog, identical=True, **{"model.proj_out_bn": "false"})
    assert len(rows) == 3
    collapsed = [int(r["epoch"]) for r in rows if float(r["at_collapse"]) == 1.0]
    assert collapsed and collapsed[-1] == 3
    assert all(float(rows[e - 1]["mean_cosine"]) > 0.98 and abs(float(rows[e - 1]["class_gap"])) < 0.01
               for e in collapsed)
    assert [f"stage 1 epoch {e}:" in w for e, w in zip(collapsed, warnings)] == [True] * len(collapsed)
    assert len(warnings) == len(collapsed) and "ln 15" in warnings[-1]


def test_a_run_that_learns_gets_no_warning(tmp_path, caplog):
    """The fakes carry a bright square: the projections separate the classes, no epoch is at the collapsed
    loss value."""
    rows, warnings = _run(tmp_path, caplog, identical=False)
    assert warnings == []
    # the classes lie apart on the sphere (same-class pairs much closer than natural-fake pairs) from the
    # first epoch; at temperature 0.1 the loss itself can stay above ln 15 while the views of a class spread
    assert all(float(r["at_collapse"]) == 0.0 and float(r["class_gap"]) > 0.5 for r in rows)

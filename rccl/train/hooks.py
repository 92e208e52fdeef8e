"""The engine's hooks (rccl.train.engine.HookBase): what happens around the loop, one job each.

  NonFiniteStop    after_backward: a non-finite loss (or gradient) on any rank voids that update on the
                   device, without a host read; every train.log_every steps and at each epoch's last step
                   (before its checkpoint) every rank stops with the same message naming the first such step
  GradientClipper  after_backward: the gradients' global L2 norm clipped to train.clip_grad (when set)
  CheckpointSaver  after_epoch: stage{N}_{EPOCH}.pt and stage{N}_last.pt (rank 0), with every epochs.csv
                   row so far inside (timm's CheckpointSaver: one owner of the names, through RunDir)
  EpochLogWriter   before_stage: epochs.csv made equal to the rows the resumed checkpoint holds;
                   after_epoch: the row to epochs.csv and TensorBoard (rank 0); after_stage: close
The saver runs before the writer: a kill between them leaves a checkpoint whose row the next resume
writes back, so a row and its checkpoint are never lost one without the other.
`default_hooks` is that list; a caller adds its own (evaluation after training, the tests' kill).
"""
from __future__ import annotations

import csv
import io
import logging
import math

import torch

from rccl.fileio import write_text
from rccl.run import RunDir
from rccl.train.distributed import gather_no_grad
from rccl.train.engine import HookBase, StageLoop
from rccl.train.runtime import TrainingError

log = logging.getLogger("rccl.train")


class NonFiniteStop(HookBase):
    """Stop every rank when the loss is not finite on any rank, with nothing of that epoch saved.

    A per-step check would read the loss back to the host and all-reduce it every step. Instead, after
    backward, on the device: a step whose loss is not finite, or (without a GradScaler, which skips such
    steps itself) whose gradients are not, has its gradients zeroed, so the weights stay finite and the next
    forward pass does not fail somewhere less clear (the op refuses non-finite features); the first such
    step is noted. At the host read-back every train.log_every steps, and at the epoch's last step before
    its checkpoint, the ranks compare notes (one all-gather) and all raise the same TrainingError."""

    NONE = -1.0

    def before_epoch(self, loop: StageLoop) -> None:
        device = loop.rt.device
        self.first_step = torch.full((), self.NONE, dtype=torch.float64, device=device)
        self.first_loss = torch.zeros((), dtype=torch.float64, device=device)

    def after_backward(self, loop: StageLoop) -> None:
        loss = loop.loss.detach().double()
        ok = torch.isfinite(loss)
        if not loop.scaler.is_enabled():
            grads = [p.grad for group in loop.optimizer.param_groups for p in group["params"] if p.grad is not None]
            if grads:
                ok = ok & torch.isfinite(torch.stack(torch._foreach_norm(grads)).double().sum())
            for g in grads:
                g.masked_fill_(~ok, 0)
        new = ~ok & (self.first_step < 0)
        self.first_step = torch.where(new, float(loop.step), self.first_step)
        self.first_loss = torch.where(new, loss, self.first_loss)

    def after_step(self, loop: StageLoop) -> None:
        log_every = max(1, loop.rt.cfg["train"]["log_every"])
        if loop.step % log_every == 0 or loop.step == loop.steps - 1:
            self.check(loop)

    def check(self, loop: StageLoop) -> None:
        notes = gather_no_grad(torch.stack([self.first_step, self.first_loss]).view(1, 2)).tolist()
        bad = [(step, value) for step, value in notes if step != self.NONE]
        if not bad:
            return
        # the earliest step; at a tie a non-finite loss before a rank that saw only its gradient, then rank order
        step, value = min(bad, key=lambda note: (note[0], math.isfinite(note[1])))
        n = loop.number
        what = (f"the loss is {value} (not finite)" if not math.isfinite(value) else
                f"the gradient is not finite (the loss was {value})")
        kept = f"the last good checkpoint is {loop.last_saved}" if loop.last_saved else "no checkpoint was written yet"
        raise TrainingError(f"stage {n}, epoch {loop.epoch + 1}, step {int(step) + 1}: {what}; stopped without "
                            f"saving this epoch; {kept}. Lower the learning rate (stage{n}.lr) or try without --amp")


class GradientClipper(HookBase):
    """train.clip_grad: the gradients' global L2 norm (all the stage's parameters) clipped to `max_norm`
    before the update (torch.nn.utils.clip_grad_norm_; under a float16 GradScaler, on the unscaled ones)."""

    def __init__(self, max_norm: float):
        self.max_norm = float(max_norm)

    def after_backward(self, loop: StageLoop) -> None:
        if loop.scaler.is_enabled():
            loop.scaler.unscale_(loop.optimizer)
        params = [p for group in loop.optimizer.param_groups for p in group["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, self.max_norm, foreach=True)


class CheckpointSaver(HookBase):
    """One checkpoint per finished epoch (rank 0 writes; the other ranks hold the same weights, and know its
    name: every rank's messages name the same file)."""

    def after_epoch(self, loop: StageLoop) -> None:
        rt = loop.rt
        if rt.dist.is_main:
            rt.run.save_checkpoint(loop.number, loop.epoch + 1, loop.state(), rt.cfg["train"]["keep_epochs"])
        loop.last_saved = rt.run.checkpoint_path(loop.number, loop.epoch + 1)


class EpochLog:
    """RUN/epochs.csv (one row per finished epoch, both stages; rewritten whole through the atomic writer,
    it is small). The columns are FIELDS, then any other key of a row in the order first seen: a stage's
    `row` callback adds columns by returning them."""

    # class_gap .. at_collapse: stage 1's collapse watch (rccl.train.collapse); empty for stage 2 and CE
    FIELDS = ("stage", "epoch", "loss", "lr", "seconds", "views_per_s", "accuracy", "class_gap", "mean_cosine",
              "collapsed_loss", "at_collapse", "pairing")

    def __init__(self, run: RunDir):
        self.path = RunDir(run).epochs_csv

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        with open(self.path, newline="", encoding="utf-8") as f:
            return [{k: v for k, v in r.items() if v != ""} for r in csv.DictReader(f)]

    @classmethod
    def columns(cls, rows: list[dict]) -> list[str]:
        extra = list(dict.fromkeys(k for r in rows for k in r if k not in cls.FIELDS))
        return list(cls.FIELDS) + extra

    @staticmethod
    def text(rows: list[dict]) -> str:
        buffer = io.StringIO()
        w = csv.DictWriter(buffer, fieldnames=EpochLog.columns(rows), lineterminator="\n")
        w.writeheader()
        w.writerows({k: r.get(k, "") for k in w.fieldnames} for r in rows)
        return buffer.getvalue()

    def save(self, rows: list[dict]) -> None:
        text = self.text(rows)
        if not (self.path.is_file() and self.path.read_text(encoding="utf-8") == text):
            write_text(self.path, text)

    def upto(self, stage: int, epoch: int) -> list[dict]:
        """The rows on disk up to (stage, epoch): the history of a checkpoint that carries none (format 1)."""
        return [r for r in self.read() if (int(r["stage"]), int(r["epoch"])) <= (stage, epoch)]


class EpochLogWriter(HookBase):
    """epochs.csv and TensorBoard scalars, rank 0 only."""

    SCALARS = ("loss", "lr", "views_per_s", "accuracy", "class_gap", "mean_cosine", "collapsed_loss", "at_collapse")

    def __init__(self, run: RunDir, enabled: bool = True):
        self.log = EpochLog(run)
        self.tb_dir = RunDir(run).tb_dir
        self.enabled = enabled
        self._writer = None

    def before_stage(self, loop: StageLoop) -> None:
        if self.enabled:  # a resumed run: the rows its checkpoint holds, a row lost to a kill back in place
            self.log.save(loop.rows)

    def after_epoch(self, loop: StageLoop) -> None:
        if not self.enabled:
            return
        self.log.save(loop.rows)
        writer = self._tb()
        if writer is not None:
            for key, value in loop.row.items():
                if key in self.SCALARS or (key not in EpochLog.FIELDS and isinstance(value, (int, float))):
                    writer.add_scalar(f"stage{loop.number}/{key}", value, loop.row["epoch"])
            writer.flush()

    def _tb(self):
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # TensorBoard is optional; the CSV has every number
                log.warning("note: tensorboard is not installed; epochs.csv only")
                self._writer = False
                return None
            self._writer = SummaryWriter(str(self.tb_dir))
        return self._writer or None

    def after_stage(self, loop: StageLoop) -> None:
        self.close()

    def after_train(self, outcome) -> None:
        self.close()

    def close(self) -> None:
        if self._writer:
            self._writer.close()
            self._writer = None


def default_hooks(run: RunDir, is_main: bool, clip_grad: float | None = None) -> list[HookBase]:
    """The hooks every run has, in their order: void a bad update (before the clipping, which a
    non-finite gradient would spread to every parameter), clip (train.clip_grad), save, then log."""
    clip = [GradientClipper(clip_grad)] if clip_grad else []
    return [NonFiniteStop(), *clip, CheckpointSaver(), EpochLogWriter(run, enabled=is_main)]

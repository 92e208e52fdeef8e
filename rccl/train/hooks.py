"""The engine's hooks (rccl.train.engine.HookBase): what happens around the loop, one job each.

  NonFiniteStop    after_loss: a non-finite loss on any rank stops every rank before the update
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

import torch

from rccl.fileio import write_text
from rccl.run import RunDir
from rccl.train.distributed import all_true
from rccl.train.engine import HookBase, StageLoop
from rccl.train.runtime import TrainingError

log = logging.getLogger("rccl.train")


class NonFiniteStop(HookBase):
    """Raise on every rank when the loss is not finite on any rank, BEFORE the step touches the weights.
    This is the one host read-back per step: deferring it to the log_every read-back would let a NaN
    update the weights, and the next forward pass would fail somewhere less clear (the op refuses NaN z)."""

    def after_loss(self, loop: StageLoop, loss: torch.Tensor) -> None:
        if all_true(bool(torch.isfinite(loss.detach()).all()), loop.rt.device):
            return
        n = loop.number
        kept = f"the last good checkpoint is {loop.last_saved}" if loop.last_saved else "no checkpoint was written yet"
        raise TrainingError(f"stage {n}, epoch {loop.epoch + 1}, step {loop.step + 1}: the loss is {loss.item()} "
                            f"(not finite); stopped without saving this epoch; {kept}. Lower the learning rate "
                            f"(stage{n}.lr) or try without --amp")


class CheckpointSaver(HookBase):
    """One checkpoint per finished epoch (rank 0 writes; the other ranks hold the same weights)."""

    def after_epoch(self, loop: StageLoop) -> None:
        rt = loop.rt
        if rt.dist.is_main:
            loop.last_saved = rt.run.save_checkpoint(loop.number, loop.epoch + 1, loop.state(),
                                                     rt.cfg["train"]["keep_epochs"])


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


def default_hooks(run: RunDir, is_main: bool) -> list[HookBase]:
    """The hooks every run has, in their order: stop before a bad update, save, then log."""
    return [NonFiniteStop(), CheckpointSaver(), EpochLogWriter(run, enabled=is_main)]

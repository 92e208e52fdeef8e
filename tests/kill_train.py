"""rccl-train with a deterministic kill, for the resume tests (the training loop itself knows no test).

  python tests/kill_train.py step:STAGE:EPOCH:STEP RCCL-TRAIN-ARGS...   SIGKILL right after that optimiser
                                                                          step (1-based), through a hook
  python tests/kill_train.py csv:STAGE:EPOCH RCCL-TRAIN-ARGS...         SIGKILL after that epoch's checkpoint
                                                                          is written, before its epochs.csv row
  torchrun ... tests/kill_train.py rank-step:RANK:STAGE:EPOCH:STEP ...   under torchrun: the worker of that
                                                                          rank SIGKILLs itself after that step,
                                                                          on the job's first attempt only
"""
from __future__ import annotations

import os
import signal
import sys

from rccl.cli.train import main
from rccl.train.engine import HookBase


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillAfterStep(HookBase):
    def __init__(self, stage: int, epoch: int, step: int):
        self.at = (stage, epoch, step)

    def after_step(self, loop) -> None:
        if (loop.number, loop.epoch + 1, loop.step + 1) == self.at:
            _die()


def kill_before_row(stage: int, epoch: int) -> None:
    """The epochs.csv writer dies instead of writing the row of (stage, epoch): its checkpoint is on disk."""
    from rccl.train import hooks

    save = hooks.EpochLog.save

    def dying_save(self, rows):
        if rows and (int(rows[-1]["stage"]), int(rows[-1]["epoch"])) == (stage, epoch):
            _die()
        save(self, rows)

    hooks.EpochLog.save = dying_save


if __name__ == "__main__":
    kind, *numbers = sys.argv[1].split(":")
    numbers = [int(n) for n in numbers]
    extra = []
    if kind == "step":
        extra.append(KillAfterStep(*numbers))
    elif kind == "rank-step":
        rank, *at = numbers
        if int(os.environ.get("RANK", "0")) == rank and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) == 0:
            extra.append(KillAfterStep(*at))
    elif kind == "csv":
        kill_before_row(*numbers)
    else:
        sys.exit(f"unknown kill {sys.argv[1]!r}")
    sys.exit(main(sys.argv[2:], hooks=extra))

"""The run plan: which run folder this call trains, what its checkpoints already hold, what is left to do.

Rank 0 alone reads (and, for a new run, claims) the run folder and makes the plan; every rank receives
the plan and the bytes of the one checkpoint the model starts from (rccl.train.distributed.from_main),
and acts on that. A rank never decides from its own view of the folder: on a node-local or cached
`train.out` the views can differ, ranks would start at different epochs and their collectives stop
matching (a hang), or stage 2 would freeze a different encoder on each rank.

The folder is, in this order:
- `--resume RUN`: RUN;
- a torchrun restart (rccl.train.elastic): the newest folder of `name` claimed by this job, picked up
  from its last checkpoint with the same command line;
- otherwise a new folder, claimed atomically (RunDir.claim) before anything expensive is done.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from rccl import checkpoint
from rccl.run import RunDir
from rccl.train import resume as resuming
from rccl.train.elastic import Launch
from rccl.train.hooks import EpochLog
from rccl.train.runtime import TrainingError


@dataclass
class Plan:
    run: str                          # the run folder
    how: str                          # "new" (claimed by this call) | "resume" (--resume) | "restart" (torchrun)
    changes: dict                     # the config keys changed since config.yaml ({"(new run)": None}: new)
    epochs: dict = field(default_factory=dict)   # {stage: epochs its last checkpoint holds}
    complete: bool = False            # stage 2's checkpoint is the cross-entropy detector
    finished: bool = False            # the run holds its detector: nothing left to train
    start: int | None = None          # the stage whose last checkpoint the model starts from, or None
    rows: list = field(default_factory=list)     # epochs.csv rows up to that checkpoint
    made_out: bool = False            # a new run whose claim made train.out itself

    def resumes(self, stage: int) -> bool:
        """Stage `stage` continues from its own last checkpoint (the one the model starts from)."""
        return self.start == stage


def _stage2_needs_stage1(cfg: dict, stages, s1: dict | None, s2: dict | None, where: str) -> None:
    if 2 in stages and 1 not in stages and s2 is None and not resuming.stage1_done(s1, cfg):
        done = s1["epoch"] if s1 is not None else 0
        raise TrainingError(f"--stage 2 needs stage 1's encoder, and {where} has done {done} of "
                            f"{cfg['stage1']['epochs']} stage-1 epochs; run stage 1 first (--stage both, or "
                            f"--resume RUN --stage both)")


def _history(run: RunDir, state: dict | None) -> list[dict]:
    """The epochs.csv rows up to a checkpoint: the ones it carries (format 2), else those on disk."""
    if state is None:
        return []
    if "log" in state:
        return [dict(r) for r in state["log"]]
    return EpochLog(run).upto(int(state["stage"]), int(state["epoch"]))


def make_plan(cfg: dict, stages, resume_dir: str | os.PathLike | None, launch: Launch) -> tuple[Plan, bytes | None]:
    """Rank 0's plan and the bytes of the checkpoint the model starts from (None: none). Raises for a run
    that cannot go on (not a run folder, a changed key a trained stage cannot honour, stage 2 alone
    before stage 1); a new folder is claimed only once nothing stands in the way."""
    out, name = cfg["train"]["out"], cfg["name"]
    run, how = None, "new"
    if resume_dir is not None:
        run, how = RunDir(resume_dir), "resume"
        if not run.config_path.is_file():
            raise TrainingError(f"--resume {run.path}: not a run folder (no config.yaml)")
    elif launch.restarted:
        run = RunDir.of_job(out, name, launch.job)
        how = "restart" if run is not None else "new"
    if how == "new":
        _stage2_needs_stage1(cfg, stages, None, None, "a new run")
        made_out = not os.path.isdir(out)
        run = RunDir.claim(out, name, cfg, launch.job)
        return Plan(str(run.path), how, {"(new run)": None}, made_out=made_out), None

    raw = {n: run.last_checkpoint_path(n).read_bytes() for n in (1, 2) if run.last_checkpoint_path(n).is_file()}
    states = {n: checkpoint.decode(data, run.last_checkpoint_path(n)) for n, data in raw.items()}
    s1, s2 = states.get(1), states.get(2)
    epochs = {n: int(s["epoch"]) for n, s in states.items()}
    changes = resuming.check_changes(run, run.config(), cfg, epochs)
    plan = Plan(str(run.path), how, changes, epochs, complete=bool(s2 and s2.get("complete")),
                finished=resuming.finished(s2, cfg))
    if not plan.finished:
        _stage2_needs_stage1(cfg, stages, s1, s2, f"stage 1 of {run.path}")
    plan.start = 2 if s2 is not None else (1 if s1 is not None else None)
    plan.rows = _history(run, states.get(plan.start))
    return plan, raw.get(plan.start)

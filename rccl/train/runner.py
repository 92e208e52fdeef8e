"""One training run end to end: the run folder, the training records, stage 1, stage 2.

`train(cfg, stages=(1, 2))` starts a run in train.out/NAME (a free name: an existing run is never
overwritten); `train(cfg, resume_dir=RUN)` continues RUN from its last checkpoints. Resuming never
destroys: the model is loaded from the newest checkpoint before any stage runs, a finished run trains and
writes nothing, and a changed key that a trained stage cannot honour is an error (rccl.train.resume).
Everything is checked before a run folder is made. Under torchrun every rank calls it; rank 0 alone writes
files. Evaluation is not training's business: rccl-train's CLI gives an evaluation hook (`hooks`), whose
`after_train(outcome)` runs once the run is done.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist

from rccl.data.blend import TrainingSet, training_set
from rccl.data.loaders import check_train_records, resolve_backend
from rccl.data.manifest import read_manifest
from rccl.data.pairing import ForgeryPairSampler
from rccl.model import build_model
from rccl.run import RunDir
from rccl.train import resume as resuming
from rccl.train.config import ConfigError, check_world_size
from rccl.train.distributed import DistInfo, barrier, init_from_env
from rccl.train.engine import HookBase, run_stage
from rccl.train.hooks import EpochLog, default_hooks
from rccl.train.runtime import Runtime, TrainingError, log as _log, resolve_amp, resolve_device
from rccl.train.stage1 import build_stage1
from rccl.train.stage2 import build_stage2, save_ce_detector


@dataclass
class Outcome:
    """What `train` did, for the hooks' after_train (e.g. evaluation after training)."""
    run: RunDir
    cfg: dict
    trained: bool        # at least one epoch (or the CE detector) was trained or saved by this call
    complete: bool       # the run holds its detector (stage 2 done)
    is_main: bool


def _agree(value, info: DistInfo):
    """Rank 0's value on every rank."""
    if not info.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def training_records(cfg: dict) -> TrainingSet:
    """The training split's records, with the pseudo-fakes of data.fakes (rccl.data.blend.records)."""
    data = cfg["data"]
    manifest = data["manifest"]
    if not manifest:
        raise TrainingError("data.manifest is not set: give data.manifest=PATH/manifest.jsonl (rccl-prep's output) "
                            "on the command line or in the config, or run the demo (rccl-train, or --config demo)")
    records = read_manifest(manifest, check_files=True)
    selected = [r for r in records if r["split"] == data["train_split"] and r["quality"] in data["train_qualities"]]
    check_train_records(selected, manifest, data["train_split"], data["train_qualities"], data["fakes"])
    return training_set(selected, data["fakes"])


def check_batches(cfg: dict, records: list[dict], info: DistInfo) -> None:
    """Each trained stage's sampler can be built on these records (enough crops per class for one batch,
    a usable pairing): found now, before a run folder exists, not when the stage starts."""
    seed = cfg["train"]["seed"]
    plans = [(1, cfg["data"]["pairing"], seed)] + ([(2, "instance", seed + 1)] if cfg["loss"]["kind"] != "ce" else [])
    for n, pairing, stage_seed in plans:
        if cfg[f"stage{n}"]["epochs"] == 0:
            continue
        try:
            ForgeryPairSampler(records, cfg[f"stage{n}"]["batch_size"] // info.world_size, pairing, stage_seed,
                               info.rank, info.world_size)
        except ValueError as e:
            raise ConfigError(f"'stage{n}.batch_size' {cfg[f'stage{n}']['batch_size']} with "
                              f"{cfg['data']['manifest']}: {str(e).removeprefix('ForgeryPairSampler: ')}") from None


def _start_processes(cfg: dict) -> tuple[torch.device, DistInfo]:
    """The device first, then the process group: NCCL maps a rank to the current device when the group
    forms, so set_device must come before init_process_group."""
    device = resolve_device(cfg["train"]["device"])
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device, init_from_env(device.type)


def _history(run: RunDir, state: dict | None) -> list[dict]:
    """The epochs.csv rows up to a checkpoint: the ones it carries (format 2), else those on disk."""
    if state is None:
        return []
    if "log" in state:
        return [dict(r) for r in state["log"]]
    return EpochLog(run).upto(int(state["stage"]), int(state["epoch"]))


def train(cfg: dict, *, stages=(1, 2), resume_dir: str | os.PathLike | None = None,
          hooks: Sequence[HookBase] = ()) -> RunDir:
    device, info = _start_processes(cfg)
    if cfg["train"]["threads"] > 0:
        torch.set_num_threads(cfg["train"]["threads"])
    seed = cfg["train"]["seed"]
    random.seed(seed + info.rank)
    np.random.seed(seed + info.rank)
    torch.manual_seed(seed + info.rank)

    # check everything before a run folder exists: a bad config or manifest must leave nothing behind
    check_world_size(cfg, info.world_size)
    chosen = training_records(cfg)
    records = chosen.records
    resolve_backend(cfg["data"]["backend"])
    check_batches(cfg, records, info)
    s1 = s2 = None
    if resume_dir is not None:
        run = RunDir(resume_dir)
        if not run.config_path.is_file():
            raise TrainingError(f"--resume {run.path}: not a run folder (no config.yaml)")
        s1, s2 = run.latest_checkpoint(1), run.latest_checkpoint(2)
        started = {n: int(s["epoch"]) for n, s in ((1, s1), (2, s2)) if s is not None}
        changes = resuming.check_changes(run, run.config(), cfg, started)
    else:
        run = RunDir(_agree(RunDir.free(cfg["train"]["out"], cfg["name"]).path if info.is_main else None, info))
        changes = {"(new run)": None}
    rt = Runtime(cfg, run, device, info, resolve_amp(cfg, device, log=_log.info if info.is_main else (lambda m: None)))
    hooks = [*default_hooks(run, info.is_main), *hooks]

    if resuming.finished(s2, cfg):
        done = "the cross-entropy detector saved" if s2.get("complete") else f"{s2['epoch']} stage-2 epoch(s)"
        rt.log(f"{run.path}: already trained ({done}); nothing to train, nothing rewritten (evaluate it "
               f"again with `rccl-eval {run.path}`)")
        return _finish(Outcome(run, cfg, trained=False, complete=True, is_main=info.is_main), hooks)

    if 2 in stages and 1 not in stages and s2 is None and not resuming.stage1_done(s1, cfg):
        done = s1["epoch"] if s1 is not None else 0
        where = f"stage 1 of {run.path} has done {done}" if resume_dir is not None else "a new run has done 0"
        raise TrainingError(f"--stage 2 needs stage 1's encoder, and {where} of {cfg['stage1']['epochs']} "
                            f"stage-1 epochs; run stage 1 first (--stage both, or --resume RUN --stage both)")
    newest = s2 if s2 is not None else s1
    # the model before the folder: an unknown encoder or a bad weights file leaves nothing behind
    model = build_model(cfg, load_weights=newest is None and 1 in stages)
    if newest is not None:  # what the run already holds, before anything can be saved
        model.load_state_dict(newest["model"])

    if info.is_main:
        run.path.mkdir(parents=True, exist_ok=True)
        if changes:
            run.write_config(cfg)
    barrier()
    rt.log(f"run folder: {run.path}  (device {device}, {info.world_size} process(es), "
           f"{'autocast ' + str(rt.amp_dtype).replace('torch.', '') if rt.amp_dtype else 'float32'})")
    n_fake = sum(int(r["label"]) for r in records)
    rt.log(f"training crops: {len(records)} ({len(records) - n_fake} natural, {n_fake} fake) from {cfg['data']['manifest']}")
    rt.log(chosen.describe())
    rows = _history(run, newest)
    trained = 0
    if 1 in stages and s2 is None:
        trained += run_stage(rt, model, build_stage1(rt, model, records), s1, rows, hooks,
                             resume_path=run.last_checkpoint_path(1) if s1 is not None else None)
    if 2 in stages:
        s1 = run.latest_checkpoint(1) if s2 is None else s1
        if s2 is None and s1 is not None:
            model.load_state_dict(s1["model"])
        model.to(device)
        if cfg["loss"]["kind"] == "ce":
            save_ce_detector(rt, model, rows)
            trained += 1
        else:
            trained += run_stage(rt, model, build_stage2(rt, model, records), s2, rows, hooks,
                                 resume_path=run.last_checkpoint_path(2) if s2 is not None else None)
    complete = resuming.finished(run.latest_checkpoint(2), cfg) if info.is_main else 2 in stages
    if info.is_main:
        rt.log(f"checkpoints in {run.checkpoint_dir}; epochs.csv and tb/ in {run.path}")
    barrier()
    return _finish(Outcome(run, cfg, trained=trained > 0, complete=complete, is_main=info.is_main), hooks)


def _finish(outcome: Outcome, hooks: Sequence[HookBase]) -> RunDir:
    for hook in hooks:
        hook.after_train(outcome)
    return outcome.run

"""One training run end to end: the run folder, the training records, stage 1, stage 2.

`train(cfg, stages=(1, 2))` starts a run in train.out/NAME (a free name, claimed atomically: an existing
run is never overwritten); `train(cfg, resume_dir=RUN)` continues RUN from its last checkpoints, and so does
a torchrun restart of the same command (rccl.train.elastic, rccl.train.plan). Resuming never destroys: the
model is loaded from the newest checkpoint before any stage runs, a finished run trains and writes
nothing, and a changed key that a trained stage cannot honour is an error (rccl.train.resume). Everything
is checked before a run folder is claimed. Under torchrun every rank calls it; rank 0 alone reads the run
folder (its plan is broadcast) and checks the crop files, rank 0 alone writes files, and the process group
formed here is destroyed when `train` returns or raises. Evaluation is not training's business: rccl-train's
CLI gives an evaluation hook (`hooks`), whose `after_train(outcome)` runs once the run is done.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from rccl import checkpoint as ckpt
from rccl.data.blend import TrainingSet, training_set
from rccl.data.loaders import check_train_records, resolve_backend
from rccl.data.manifest import read_manifest
from rccl.data.pairing import ForgeryPairSampler
from rccl.model import build_model
from rccl.run import RunDir
from rccl.train.config import ConfigError, check_world_size
from rccl.train.distributed import (DistInfo, barrier, broadcast_state, end_process_group, from_main, init_from_env,
                                    on_every_rank)
from rccl.train.elastic import launch_from_env
from rccl.train.engine import HookBase, run_stage
from rccl.train.hooks import default_hooks
from rccl.train.plan import Plan, make_plan
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


def training_records(cfg: dict, info: DistInfo = DistInfo()) -> TrainingSet:
    """The training split's records, with the pseudo-fakes of data.fakes (rccl.data.blend.records). Rank 0
    alone checks that every crop file exists (the other ranks read the manifest only): a missing file is
    the same error on every rank."""
    data = cfg["data"]
    manifest = data["manifest"]
    if not manifest:
        raise TrainingError("data.manifest is not set: give data.manifest=PATH/manifest.jsonl (rccl-prep's output) "
                            "on the command line or in the config, or run the demo (rccl-train, or --config demo)")
    records = on_every_rank(lambda: read_manifest(manifest, check_files=info.is_main))
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


def train(cfg: dict, *, stages=(1, 2), resume_dir: str | os.PathLike | None = None,
          hooks: Sequence[HookBase] = ()) -> RunDir:
    device, info = _start_processes(cfg)
    try:
        return _train(cfg, device, info, stages, resume_dir, hooks)
    finally:
        end_process_group(info)


def _build_model(cfg: dict, plan: Plan, load_weights: bool, info: DistInfo):
    """The model before anything is trained; a new run's claimed folder is given back when it cannot be
    built (an encoder without weights, a download that fails): a bad model leaves nothing behind."""
    try:
        return on_every_rank(lambda: build_model(cfg, load_weights=load_weights))
    except Exception:
        if plan.how == "new" and info.is_main:
            RunDir(plan.run).release(parent_too=plan.made_out)
        raise


def _train(cfg: dict, device: torch.device, info: DistInfo, stages, resume_dir, hooks: Sequence[HookBase]) -> RunDir:
    if cfg["train"]["threads"] > 0:
        torch.set_num_threads(cfg["train"]["threads"])
    seed = cfg["train"]["seed"]
    random.seed(seed + info.rank)
    np.random.seed(seed + info.rank)
    torch.manual_seed(seed + info.rank)

    # check everything before a run folder is claimed: a bad config or manifest must leave nothing behind
    check_world_size(cfg, info.world_size)
    chosen = training_records(cfg, info)
    records = chosen.records
    resolve_backend(cfg["data"]["backend"])
    check_batches(cfg, records, info)
    launch = launch_from_env()
    plan, start_bytes = from_main(lambda: make_plan(cfg, stages, resume_dir, launch))
    run = RunDir(plan.run)
    start = ckpt.decode(start_bytes, run.last_checkpoint_path(plan.start)) if start_bytes is not None else None
    rt = Runtime(cfg, run, device, info, resolve_amp(cfg, device, log=_log.info if info.is_main else (lambda m: None)))
    hooks = [*default_hooks(run, info.is_main, cfg["train"]["clip_grad"]), *hooks]
    if plan.how == "restart":
        rt.log(f"torchrun restart {launch.restart}: continuing {run.path}, claimed by this job, from its last "
               f"checkpoint")

    if plan.finished:
        done = "the cross-entropy detector saved" if plan.complete else f"{plan.epochs[2]} stage-2 epoch(s)"
        rt.log(f"{run.path}: already trained ({done}); nothing to train, nothing rewritten (evaluate it "
               f"again with `rccl-eval {run.path}`)")
        return _finish(Outcome(run, cfg, trained=False, complete=True, is_main=info.is_main), hooks)

    # the model: from the newest checkpoint, else built with its weights (stage 2 on a run without a
    # stage-1 checkpoint too: its encoder is the configured one, never silently a random one)
    model = _build_model(cfg, plan, start is None, info)
    if start is not None:  # what the run already holds, before anything can be saved
        model.load_state_dict(start["model"])

    if info.is_main and plan.changes and plan.how != "new":  # a new run's config.yaml is its claim
        run.write_config(cfg)
    barrier()
    rt.log(f"run folder: {run.path}  (device {device}, {info.world_size} process(es), "
           f"{'autocast ' + str(rt.amp_dtype).replace('torch.', '') if rt.amp_dtype else 'float32'})")
    n_fake = sum(int(r["label"]) for r in records)
    rt.log(f"training crops: {len(records)} ({len(records) - n_fake} natural, {n_fake} fake) from {cfg['data']['manifest']}")
    rt.log(chosen.describe())
    rows = plan.rows
    trained = 0
    if 1 in stages and 2 not in plan.epochs:
        trained += run_stage(rt, model, build_stage1(rt, model, records), start if plan.resumes(1) else None,
                             rows, hooks, resume_path=run.last_checkpoint_path(1) if plan.resumes(1) else None)
    if 2 in stages:
        model.to(device)
        # stage 2 starts from rank 0's model, the one its checkpoint holds: without synchronised batch
        # norm each rank's last stage-1 step left its own running statistics in the encoder
        broadcast_state(model)
        if cfg["loss"]["kind"] == "ce":
            save_ce_detector(rt, model, rows)
            trained += 1
        else:
            trained += run_stage(rt, model, build_stage2(rt, model, records), start if plan.resumes(2) else None,
                                 rows, hooks, resume_path=run.last_checkpoint_path(2) if plan.resumes(2) else None)
    if info.is_main:
        rt.log(f"checkpoints in {run.checkpoint_dir}; epochs.csv and tb/ in {run.path}")
    barrier()
    return _finish(Outcome(run, cfg, trained=trained > 0, complete=2 in stages, is_main=info.is_main), hooks)


def _finish(outcome: Outcome, hooks: Sequence[HookBase]) -> RunDir:
    for hook in hooks:
        hook.after_train(outcome)
    return outcome.run

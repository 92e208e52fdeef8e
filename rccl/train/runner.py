"""One training run end to end: the run folder, the training records, stage 1, stage 2.

`train(cfg, stages=(1, 2))` starts a run in train.out/NAME (a free name: an existing run is never
overwritten); `train(cfg, resume_dir=RUN)` continues RUN from its last checkpoints. Under torchrun every
rank calls it; rank 0 alone writes files. Evaluation is not training's business: rccl-train's CLI runs
rccl.evaluate on the returned run folder.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch
import torch.distributed as dist

from rccl.data.blend import TrainingSet, training_set
from rccl.data.loaders import check_train_records
from rccl.data.manifest import read_manifest
from rccl.model import build_model
from rccl.run import RunDir
from rccl.train.distributed import DistInfo, barrier, init_from_env
from rccl.train.engine import log as _log
from rccl.train.engine import EpochLog, Runtime, TrainingError, resolve_amp, resolve_device
from rccl.train.stage1 import run_stage1
from rccl.train.stage2 import run_stage2


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


def train(cfg: dict, *, stages=(1, 2), resume_dir: str | os.PathLike | None = None) -> RunDir:
    device = resolve_device(cfg["train"]["device"])
    info = init_from_env(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if cfg["train"]["threads"] > 0:
        torch.set_num_threads(cfg["train"]["threads"])
    seed = cfg["train"]["seed"]
    random.seed(seed + info.rank)
    np.random.seed(seed + info.rank)
    torch.manual_seed(seed + info.rank)

    # read and check the data before a run folder exists: a bad manifest must leave nothing behind
    chosen = training_records(cfg)
    records = chosen.records
    if resume_dir is not None:
        run = RunDir(resume_dir)
        if not run.config_path.is_file():
            raise TrainingError(f"--resume {run.path}: not a run folder (no config.yaml)")
    else:
        run = RunDir(_agree(RunDir.free(cfg["train"]["out"], cfg["name"]).path if info.is_main else None, info))
    if info.is_main:
        run.path.mkdir(parents=True, exist_ok=True)
        run.write_config(cfg)
    barrier()
    rt = Runtime(cfg, run, device, info, resolve_amp(cfg, device, log=_log.info if info.is_main else (lambda m: None)))
    rt.log(f"run folder: {run.path}  (device {device}, {info.world_size} process(es), "
           f"{'autocast ' + str(rt.amp_dtype).replace('torch.', '') if rt.amp_dtype else 'float32'})")
    n_fake = sum(int(r["label"]) for r in records)
    rt.log(f"training crops: {len(records)} ({len(records) - n_fake} natural, {n_fake} fake) from {cfg['data']['manifest']}")
    rt.log(chosen.describe())

    resume1 = run.latest_checkpoint(1) if resume_dir is not None else None
    resume2 = run.latest_checkpoint(2) if resume_dir is not None else None
    model = build_model(cfg, load_weights=resume1 is None and resume2 is None and 1 in stages)
    log = EpochLog(run, enabled=info.is_main)
    try:
        if 1 in stages and resume2 is None:
            run_stage1(rt, model, records, resume1, log)
        if 2 in stages:
            if resume2 is None:
                s1 = run.latest_checkpoint(1)
                if s1 is None and cfg["stage1"]["epochs"] > 0:
                    raise TrainingError(f"stage 2 needs stage 1's encoder, and {run.path} has no stage-1 checkpoint; "
                                        f"run stage 1 first (--stage 1 or --stage both)")
                if s1 is not None and s1["epoch"] < cfg["stage1"]["epochs"]:
                    raise TrainingError(f"stage 1 of {run.path} stopped after epoch {s1['epoch']} of "
                                        f"{cfg['stage1']['epochs']}; finish it first (--resume {run.path} --stage both)")
                if s1 is not None and 1 not in stages:
                    model.load_state_dict(s1["model"])
            run_stage2(rt, model, records, resume2, log)
    finally:
        log.close()
    if info.is_main:
        rt.log(f"checkpoints in {run.checkpoint_dir}; epochs.csv and tb/ in {run.path}")
    barrier()
    return run

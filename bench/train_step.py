"""One stage-1 training step (rccl.train.stage1.contrastive_step, the real-centric loss, SGD), timed whole and
in parts, against the model alone: does the loss matter end to end?

    python -m bench.train_step --setting paper             # legacy_xception, 299^2, 128 anchors (256 views),
                                                           # bf16 autocast, channels_last (on a GPU)
    python -m bench.train_step --setting paper --compile   # the same with the embedder torch.compile'd
    python -m bench.train_step --setting demo              # configs/demo.yaml: resnet10t, 64^2, 64 anchors,
                                                           # float32 (the CPU demo)
    python -m bench.train_step --setting paper --dry-run   # no timing: builds everything, one tiny step

Rows (images = views: two per anchor), each written to --jsonl as soon as it is measured:
  data                the training loader's batches/s (torch loader, synthetic crops from
                      bench.loader_speed.make_crops, the setting's augmentation) and the copy to the device
  step                contrastive_step + backward + optimizer step on a batch already on the device, unsynced
  model alone         the same step with a stand-in loss (mean of z^2): the floor the loss adds to
  parts               the step cut at synchronisations: model forward, loss forward+backward (centre, banks,
                      op; autograd.grad to z), model backward (z.backward), optimizer (step + zero_grad)
Timing: wall clock around `--steps` steps after `--warmup`, synchronised on a GPU, median of `--repeats`;
also the process's CPU time (the figure a shared CPU machine does not distort; with workers=0 the loader's
work is in it too). On the CPU run it niced. The model is built from the project's config and model code
(rccl.train.config, rccl.model.build_model, random weights), the loss from RealCentricLoss.from_config, the
optimiser from rccl.train.optim.build_optimizer.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

from rccl.fileio import append_json_line
from rccl.loss import RealCentricLoss
from rccl.model import build_model
from rccl.train.config import load_config
from rccl.train.optim import build_optimizer
from rccl.train.stage1 import contrastive_step

SETTINGS = {
    # name: (config, overrides, autocast dtype on CUDA, crop side of the synthetic data)
    "paper": (None, ["model.channels_last=true"], torch.bfloat16, 320),
    "demo": ("demo", [], None, 80),
}


def setting_config(name: str, workers: int | None) -> dict:
    config, overrides, _, _ = SETTINGS[name]
    cfg = load_config(config, overrides)
    cfg["train"]["progress"] = False
    if workers is not None:
        cfg["data"]["workers"] = workers
    cfg["data"]["backend"] = "torch"  # DALI is bench/gpu_data_check.sh's
    return cfg


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def per_step_seconds(fns: dict, device, warmup: int, steps: int, repeats: int) -> dict:
    """{name: (wall seconds, CPU seconds of this process) per step, one sample per repeat}. The functions
    take turns within each repeat, so that a drift of the machine (warming caches, other jobs) touches
    them alike. On a shared CPU the CPU seconds are the figure that does not depend on the other jobs."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples = {name: ([], []) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(steps):
                fn()
            sync(device)
            samples[name][0].append((time.perf_counter() - start) / steps)
            samples[name][1].append((time.process_time() - start_cpu) / steps)
    return samples


class StepParts:
    """The step cut into its parts, each ended by a synchronisation, times summed over calls."""

    NAMES = ("model forward", "loss fwd+bwd", "model backward", "optimizer")

    def __init__(self, net, loss_fn, optimizer, autocast, device):
        self.net, self.loss_fn, self.optimizer, self.autocast, self.device = net, loss_fn, optimizer, autocast, device
        self.reset()

    def __call__(self, views, labels):
        marks = [(time.perf_counter(), time.process_time())]

        def mark():
            sync(self.device)
            marks.append((time.perf_counter(), time.process_time()))

        with self.autocast():
            z = self.net(views)
        mark()
        features = z.detach().to(self.loss_fn.feature_dtype(z)).requires_grad_(True)
        loss = self.loss_fn(features, torch.cat([labels, labels]))
        (grad,) = torch.autograd.grad(loss, features)
        mark()
        z.backward(grad.to(z.dtype))
        mark()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        mark()
        for name, start, end in zip(self.NAMES, marks, marks[1:]):
            self.seconds[name] += end[0] - start[0]
            self.cpu_seconds[name] += end[1] - start[1]
        self.calls += 1

    def reset(self):
        self.seconds = dict.fromkeys(self.NAMES, 0.0)
        self.cpu_seconds = dict.fromkeys(self.NAMES, 0.0)
        self.calls = 0


def data_rate(cfg, batch: int, device, work: Path, crop: int, batches: int) -> dict:
    """The loader's batches on their own, then copied to the device as the engine does."""
    from bench.loader_speed import _CyclingSampler, make_crops
    from rccl.data.loaders import build_train_loader
    from rccl.data.manifest import read_manifest
    from rccl.data.pairing import ForgeryPairSampler

    work.mkdir(parents=True, exist_ok=True)
    records = read_manifest(make_crops(work, max(4 * batch, 256), crop, "png"))
    sampler = _CyclingSampler(ForgeryPairSampler(records, batch, cfg["data"]["pairing"], 0))
    loader = build_train_loader(cfg, records, sampler)
    it = iter(loader)
    for _ in range(2):
        next(it)
    sync(device)
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        b = next(it)
        for key in ("view1", "view2"):
            v = b[key].to(device, non_blocking=True)
            if cfg["model"]["channels_last"]:
                v = v.contiguous(memory_format=torch.channels_last)
    sync(device)
    seconds = (time.perf_counter() - start) / batches
    cpu_seconds = (time.process_time() - start_cpu) / batches  # this process only: not the workers'
    del it, loader
    return {"seconds_per_batch": seconds, "cpu_seconds_per_batch": cpu_seconds, "workers": cfg["data"]["workers"]}


def run(args) -> int:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = setting_config(args.setting, args.workers)
    amp = SETTINGS[args.setting][2] if device.type == "cuda" else None
    batch = args.batch or cfg["stage1"]["batch_size"]
    size = args.image_size or cfg["data"]["image_size"]
    views_per_step = 2 * batch
    model = build_model(cfg, load_weights=False).to(device)
    if cfg["model"]["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    embedder = model.embedder()
    embedder.train()
    net = torch.compile(embedder) if args.compile else embedder
    loss_fn = RealCentricLoss.from_config(cfg["loss"], cfg["model"]["proj_dim"]).to(device)
    optimizer = build_optimizer(list(embedder.parameters()), cfg["stage1"])

    def autocast():
        return torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()

    generator = torch.Generator().manual_seed(0)
    views = torch.randn(views_per_step, 3, size, size, generator=generator).to(device)
    if cfg["model"]["channels_last"]:
        views = views.contiguous(memory_format=torch.channels_last)
    labels = torch.tensor([0, 1] * (batch // 2), device=device)
    v1, v2 = views[:batch], views[batch:]
    meta = {"setting": args.setting, "device": torch.cuda.get_device_name() if device.type == "cuda" else
            f"CPU ({torch.get_num_threads()} threads)", "torch": torch.__version__, "encoder": cfg["model"]["encoder"],
            "image_size": size, "anchors": batch, "views_per_step": views_per_step,
            "amp": str(amp).removeprefix("torch.") if amp else "float32", "compiled": bool(args.compile),
            "channels_last": bool(cfg["model"]["channels_last"]), "loss_impl": cfg["loss"]["impl"]}

    def record(row: dict) -> None:
        row = {**meta, **row}
        if args.jsonl:
            append_json_line(args.jsonl, row)
        detail = {k: v for k, v in row.items() if k not in meta}
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in detail.items()),
              flush=True)

    def full_step():
        loss, _ = contrastive_step(net, loss_fn, v1, v2, labels, autocast())  # (loss, the collapse watch's sums)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def model_alone():
        with autocast():
            z = net(views)
        z.float().square().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    print(f"# {args.setting}: {meta['encoder']} {size}^2, {batch} anchors = {views_per_step} views a step, "
          f"{meta['amp']}, channels_last {meta['channels_last']}, {'compiled' if args.compile else 'eager'}, "
          f"{meta['device']}, torch {torch.__version__}", flush=True)
    if args.dry_run:
        # everything built and each path run once (no timing): imports, configs, the step, the parts
        full_step()
        model_alone()
        StepParts(net, loss_fn, optimizer, autocast, device)(views, labels)
        print("train_step: dry run ok")
        return 0

    # the loss module starts an epoch: centre and banks reset (its banks fill within the warm-up)
    loss_fn.reset()
    timed = per_step_seconds({"step": full_step, "model alone": model_alone}, device, args.warmup, args.steps,
                             args.repeats)
    (step_s, step_cpu), (alone_s, alone_cpu) = timed["step"], timed["model alone"]
    record({"row": "step", "images_per_s": views_per_step / statistics.median(step_s),
            "ms_per_step": 1e3 * statistics.median(step_s), "cpu_ms_per_step": 1e3 * statistics.median(step_cpu)})
    record({"row": "model alone", "images_per_s": views_per_step / statistics.median(alone_s),
            "ms_per_step": 1e3 * statistics.median(alone_s), "cpu_ms_per_step": 1e3 * statistics.median(alone_cpu),
            "step_over_model_alone": statistics.median(step_s) / statistics.median(alone_s),
            "step_over_model_alone_cpu": statistics.median(step_cpu) / statistics.median(alone_cpu)})
    parts = StepParts(net, loss_fn, optimizer, autocast, device)
    for _ in range(args.warmup):
        parts(views, labels)
    parts.reset()
    for _ in range(args.steps * args.repeats):
        parts(views, labels)
    total = sum(parts.seconds.values())
    record({"row": "parts", **{f"{name} ms": 1e3 * s / parts.calls for name, s in parts.seconds.items()},
            "loss share": parts.seconds["loss fwd+bwd"] / total,
            **{f"{name} cpu ms": 1e3 * s / parts.calls for name, s in parts.cpu_seconds.items()},
            "loss share cpu": parts.cpu_seconds["loss fwd+bwd"] / max(sum(parts.cpu_seconds.values()), 1e-12)})
    if not args.no_data:
        data = data_rate(cfg, batch, device, Path(args.work), SETTINGS[args.setting][3], args.data_batches)
        record({"row": "data", "images_per_s": views_per_step / data["seconds_per_batch"],
                "ms_per_step": 1e3 * data["seconds_per_batch"], "cpu_ms_per_step": 1e3 * data["cpu_seconds_per_batch"],
                "workers": data["workers"]})
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="paper")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile the embedder (as model.compile=true)")
    parser.add_argument("--batch", type=int, default=0, help="anchors per step (default: the setting's stage1.batch_size)")
    parser.add_argument("--image-size", type=int, default=0, help="default: the setting's data.image_size")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default: the setting's)")
    parser.add_argument("--data-batches", type=int, default=5, help="timed loader batches")
    parser.add_argument("--no-data", action="store_true", help="skip the loader row")
    parser.add_argument("--work", default="/tmp/rccl_train_step", help="where the synthetic crops are made once")
    parser.add_argument("--jsonl", default=None, help="append each row to this file as one JSON line")
    parser.add_argument("--dry-run", action="store_true",
                        help="build the setting and run each path once at batch 2 and 64 px: no timing")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU is visible (torch.cuda.is_available() is False)")
    for name in ("batch", "image_size", "warmup", "steps", "repeats", "threads", "data_batches"):
        if getattr(args, name) < 0 or (name in ("steps", "repeats", "data_batches") and getattr(args, name) == 0):
            parser.error(f"--{name.replace('_', '-')}: expected a positive number, got {getattr(args, name)}")
    if args.batch % 2:
        parser.error(f"--batch: expected an even number of anchors (half natural, half fake), got {args.batch}")
    if args.dry_run:
        args.batch, args.image_size, args.compile = 2, 64, False
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

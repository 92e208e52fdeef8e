"""Training-loader speed: views/s of the torch loader (torchvision v2 on DataLoader workers), of the DALI
CPU pipeline and, with a GPU, of the DALI GPU pipeline, against the model's own training rate on
synthetic input; on a GPU also end-to-end training (DALI loader + model step) against that rate.

Every loader makes two augmented views per anchor from the same crops and the same ForgeryPairSampler
batches; a view is one (3, S, S) image, so views/s = 2 x anchors/s.

Run from the repository root as a module (the checkout's rccl is then importable, no sys.path edit):

    python -m bench.loader_speed                      # 320x320 PNG crops -> 299 views, batch 128
    python -m bench.loader_speed --format jpg         # JPEG q95 crops (what nvJPEG decodes on the GPU)
    python -m bench.loader_speed --quick              # small and short: a smoke run (~1 min on 2 cores)
    python -m bench.loader_speed --manifest OUT/manifest.jsonl   # your own crops
    python -m bench.loader_speed --only torch,torch-sbi --no-model   # + self-blended fakes (data.fakes=sbi)

The torch-sbi row is the torch loader on the same naturals with a self-blended pseudo-fake of each in place
of the dataset's fakes (rccl.data.blend; the synthetic crops get face-sized ellipse landmarks): the same
views per batch, plus the blending. Its repeats alternate with the plain loader's, and the ratio of the
medians of the two step times is printed (target <= 1.3x). With --workers 0 the two are timed in CPU
seconds of this process (time.process_time), which other work on a shared machine hardly disturbs.

Prints a table and, with --json PATH, adds one JSON object per row (device, torch, DALI, commit, date) to
that file (rewritten whole through rccl.fileio, so an interrupted run never leaves half a line).
"""
from __future__ import annotations

import argparse
import copy
import datetime
import io
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from rccl.data.loaders import build_train_loader
from rccl.data.manifest import read_manifest, write_manifest
from rccl.data.pairing import ForgeryPairSampler
from rccl.fileio import write_bytes, write_lines
from rccl.train.config import DEFAULTS


def make_crops(folder: Path, n: int, crop_size: int, fmt: str) -> Path:
    """n face-like crops (random crops of scikit-image's astronaut photo, resized) and their manifest, made
    once and reused. Half natural, half fake, 4 frames (2 pairs) per video, so every pairing strategy works."""
    from PIL import Image

    manifest = folder / f"manifest_{n}_{crop_size}_{fmt}.jsonl"
    if manifest.is_file():
        return manifest
    photo = source_photo()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        label, video, frame = i % 2, i // 8, (i // 2) % 4
        side = int(rng.integers(200, 400))
        y, x = rng.integers(0, 512 - side, size=2)
        image = Image.fromarray(photo[y:y + side, x:x + side]).resize((crop_size, crop_size), Image.BILINEAR)
        rel = f"crops_{crop_size}_{fmt}/{i:06d}.{fmt}"
        encoded = io.BytesIO()
        if fmt == "png":
            image.save(encoded, format="PNG", compress_level=1)  # as rccl-prep writes them
        else:
            image.save(encoded, format="JPEG", quality=95)
        write_bytes(folder / rel, encoded.getvalue())
        rows.append(dict(path=rel, dataset="synthetic", split="train", quality="raw", video=f"v{label}_{video}.mp4",
                         label=label, frame=frame, pair=frame // 2, source=f"id{video % 5}_0000" if label else "",
                         target=f"id{(video + 1) % 5}" if label else "", identity="" if label else f"id{video % 5}",
                         box=[0, 0, crop_size, crop_size]))
    write_manifest(manifest, rows)
    return manifest


def source_photo() -> np.ndarray:
    """A 512x512 RGB photo: scikit-image's astronaut, or where scikit-image is absent (the GPU machine) a
    smooth random image with fine noise, which compresses about as well as a face crop."""
    try:
        from skimage import data as skdata

        return skdata.astronaut()
    except ImportError:
        from PIL import Image

        rng = np.random.default_rng(1)
        coarse = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).resize((512, 512), Image.BICUBIC)
        noisy = np.asarray(coarse, dtype=np.int16) + rng.integers(-6, 7, (512, 512, 3))
        return np.clip(noisy, 0, 255).astype(np.uint8)


def loader_config(backend: str, image_size: int, workers: int, dali_threads: int, device: str,
                  cache_images: bool = False) -> dict:
    cfg = copy.deepcopy(DEFAULTS)
    cfg["data"].update(backend=backend, image_size=image_size, workers=workers, cache_images=cache_images)
    cfg["train"]["progress"] = False
    if dali_threads:
        cfg["data"]["dali_threads"] = dali_threads  # a key of the DALI loader (see docs/dali.md)
    cfg["train"]["device"] = device
    return cfg


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_loader(loader, sampler, device: str, warmup: int, batches: int, repeats: int) -> list[float]:
    """views/s over `batches` batches after `warmup`, once per repeat (a fresh epoch each time)."""
    rates = []
    for r in range(repeats):
        sampler.set_epoch(r)
        it = iter(loader)
        for _ in range(warmup):
            next(it)
        sync(device)
        t0, views = time.perf_counter(), 0
        for _ in range(batches):
            b = next(it)
            if device == "cuda":
                b["view1"] = b["view1"].to("cuda", non_blocking=True)
            views += 2 * b["view1"].shape[0]
        sync(device)
        rates.append(views / (time.perf_counter() - t0))
        del it
    return rates


def build_step(encoder: str, image_size: int, device: str, amp: bool, compile_: bool):
    """One training step of encoder + projector on a batch of views (a stand-in loss: the real-centric op is
    negligible next to the encoder)."""
    import timm

    model = timm.create_model(encoder, pretrained=False, num_classes=0)
    model = torch.nn.Sequential(model, torch.nn.Linear(model.num_features, 128)).to(device)
    model = model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    net = torch.compile(model) if compile_ else model

    def step(views: torch.Tensor) -> None:
        views = views.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=amp):
            z = torch.nn.functional.normalize(net(views).float(), dim=1)
            loss = (z @ z.T).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def time_model(step, batch: int, image_size: int, device: str, warmup: int, steps: int, repeats: int) -> list[float]:
    views = torch.randn(2 * batch, 3, image_size, image_size, device=device)
    for _ in range(warmup):
        step(views)
    rates = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            step(views)
        sync(device)
        rates.append(2 * batch * steps / (time.perf_counter() - t0))
    return rates


def time_end_to_end(step, loader, sampler, device: str, warmup: int, batches: int, repeats: int) -> list[float]:
    rates = []
    for r in range(repeats):
        sampler.set_epoch(100 + r)
        it = iter(loader)
        for _ in range(warmup):
            b = next(it)
            step(torch.cat([b["view1"], b["view2"]]))
        sync(device)
        t0, views = time.perf_counter(), 0
        for _ in range(batches):
            b = next(it)
            step(torch.cat([b["view1"], b["view2"]]))
            views += 2 * b["view1"].shape[0]
        sync(device)
        rates.append(views / (time.perf_counter() - t0))
        del it
    return rates


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[1]).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", help="crops to read (default: synthetic crops made under --work)")
    p.add_argument("--work", default="/tmp/rccl_loader_bench", help="where the synthetic crops are made once")
    p.add_argument("--format", choices=("png", "jpg"), default="png", help="synthetic crop format")
    p.add_argument("--crops", type=int, default=1024)
    p.add_argument("--crop-size", type=int, default=320)
    p.add_argument("--image-size", type=int, default=299)
    p.add_argument("--batch", type=int, default=128, help="anchors per batch (two views each)")
    p.add_argument("--batches", type=int, default=8, help="timed batches per repeat")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=None, help="torch DataLoader workers (default: one per core)")
    p.add_argument("--cache-images", action="store_true", help="torch loader: decode every crop once, in memory")
    p.add_argument("--dali-threads", type=int, default=0, help="DALI CPU threads (0: the loader's default)")
    p.add_argument("--encoder", default="legacy_xception")
    p.add_argument("--model-batch", type=int, default=0, help="anchors per model step (0: --batch on a GPU, 2 on CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (GPU rows)")
    p.add_argument("--no-model", action="store_true", help="loaders only")
    p.add_argument("--only", default="torch,dali-cpu,dali-gpu", help="which loaders to time")
    p.add_argument("--quick", action="store_true", help="small crops and images, few batches: a smoke run")
    p.add_argument("--json", help="append one JSON object per row to this file")
    a = p.parse_args(argv)
    if a.quick:
        a.crops, a.crop_size, a.image_size, a.batch = 64, 96, 80, 16
        a.batches, a.warmup, a.repeats = 3, 1, 1
        a.encoder = "resnet18" if a.encoder == "legacy_xception" else a.encoder
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = cores if a.workers is None else a.workers
    has_gpu = torch.cuda.is_available()
    device_name = torch.cuda.get_device_name() if has_gpu else f"CPU ({cores} cores)"

    if a.manifest:
        manifest = Path(a.manifest)
    else:
        Path(a.work).mkdir(parents=True, exist_ok=True)
        manifest = make_crops(Path(a.work), a.crops, a.crop_size, a.format)
    records = read_manifest(manifest)
    records = [r for r in records if r["split"] == "train"] or records
    needed = 2 * (a.warmup + a.batches) * a.batch
    print(f"# {len(records)} crops from {manifest}; batch {a.batch} anchors -> {2 * a.batch} views of {a.image_size}^2; "
          f"{device_name}; torch {torch.__version__}; {cores} cores", flush=True)
    if ForgeryPairSampler(records, a.batch, "semantic", 0).__len__() < a.warmup + a.batches:
        print(f"# note: fewer crops than {needed} for {a.warmup + a.batches} distinct batches; epochs repeat")

    rows = []

    def report(name: str, rates: list[float], note: str = "") -> None:
        med = statistics.median(rates)
        rows.append({"what": name, "views_per_s": round(med, 1), "min": round(min(rates), 1),
                     "max": round(max(rates), 1), "note": note})
        print(f"{name:<34} {med:>10.1f} views/s  (min {min(rates):.1f}, max {max(rates):.1f}) {note}", flush=True)

    def sampler():
        return _CyclingSampler(ForgeryPairSampler(records, a.batch, "semantic", 0))

    wanted = set(a.only.split(","))
    if {"torch", "torch-sbi"} <= wanted:
        plain_rates, sbi_rates = compare_self_blending(records, a, workers)
        per = "views per CPU second, in-process loading" if workers == 0 else f"{workers} workers"
        report("torch loader", plain_rates, f"{per}, the dataset's fakes")
        report("torch loader, self-blended fakes", sbi_rates, f"{per}, data.fakes=sbi")
        ratio = statistics.median(plain_rates) / statistics.median(sbi_rates)
        rows[-1]["step_time_ratio"] = round(ratio, 3)
        print(f"# step time with self-blending: {ratio:.2f}x the plain loader's (target <= 1.3x)", flush=True)
        wanted -= {"torch", "torch-sbi"}
    if "torch" in wanted:
        s = sampler()
        loader = build_train_loader(loader_config("torch", a.image_size, workers, 0, "cpu", a.cache_images), records, s)
        report("torch loader", time_loader(loader, s, "cpu", a.warmup, a.batches, a.repeats),
               f"{workers} workers{', crops cached' if a.cache_images else ''}")
        del loader
    dali_ok = True
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        dali_ok = False
        print("# DALI not installed: DALI rows skipped (pip install -e .[dali])")
    if dali_ok and "dali-cpu" in wanted:
        s = sampler()
        loader = build_train_loader(loader_config("dali", a.image_size, workers, a.dali_threads, "cpu"), records, s)
        report("DALI CPU pipeline", time_loader(loader, s, "cpu", a.warmup, a.batches, a.repeats),
               f"{loader.num_threads} threads")
        del loader
    gpu_loader = None
    if dali_ok and has_gpu and "dali-gpu" in wanted:
        s = sampler()
        gpu_loader = build_train_loader(loader_config("dali", a.image_size, workers, a.dali_threads, "cuda"), records, s)
        report("DALI GPU pipeline", time_loader(gpu_loader, s, "cuda", a.warmup, a.batches, a.repeats),
               f"{gpu_loader.num_threads} threads, {'nvJPEG' if a.format == 'jpg' else 'CPU PNG decode'}")
    if not a.no_model:
        device = "cuda" if has_gpu else "cpu"
        mb = a.model_batch or (a.batch if has_gpu else 2)
        step = build_step(a.encoder, a.image_size, device, amp=has_gpu, compile_=a.compile and has_gpu)
        report(f"model alone ({a.encoder}, synthetic)",
               time_model(step, mb, a.image_size, device, a.warmup if has_gpu else 1, a.batches if has_gpu else 2,
                          a.repeats), f"{2 * mb} views/step{', bf16' if has_gpu else ''}{', compiled' if a.compile and has_gpu else ''}")
        if gpu_loader is not None:
            s = gpu_loader.sampler
            report("end to end (DALI GPU + model)", time_end_to_end(step, gpu_loader, s, "cuda", a.warmup, a.batches,
                                                                    a.repeats))
            model_rate = next(r["views_per_s"] for r in rows if r["what"].startswith("model alone"))
            e2e = rows[-1]["views_per_s"]
            print(f"# end to end is {100 * e2e / model_rate:.1f}% of the model-alone rate (target >= 95%)")
    if a.json:
        meta = {"device": device_name, "torch": torch.__version__, "commit": commit(),
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "image_size": a.image_size, "batch": a.batch, "format": a.format if not a.manifest else "manifest"}
        try:
            import nvidia.dali as dali

            meta["dali"] = dali.__version__
        except ImportError:
            pass
        earlier = Path(a.json).read_text(encoding="utf-8").splitlines() if Path(a.json).is_file() else []
        write_lines(a.json, earlier + [json.dumps({**meta, **row}) for row in rows])
    return 0


def compare_self_blending(records: list[dict], a, workers: int) -> tuple[list[float], list[float]]:
    """views/s of the torch loader with the dataset's fakes and with self-blended ones, repeats alternating
    (a shared machine's load then weighs on both alike)."""
    from rccl.data.blend import training_set

    def with_landmarks(r: dict) -> dict:
        side = r.get("crop_size") or a.crop_size
        t = np.linspace(0, 2 * np.pi, 68, endpoint=False)  # a face-sized ellipse: the mask's cost, not its place
        pts = np.stack([(0.5 + 0.3 * np.cos(t)) * side, (0.55 + 0.35 * np.sin(t)) * side], 1)
        return r if r.get("landmarks") else {**r, "landmarks": pts.round(1).tolist(), "crop_size": side}

    sbi_records = training_set([with_landmarks(r) for r in records], "sbi").records
    cfg = loader_config("torch", a.image_size, workers, 0, "cpu", a.cache_images)
    plain_s = _CyclingSampler(ForgeryPairSampler(records, a.batch, "semantic", 0))
    sbi_s = _CyclingSampler(ForgeryPairSampler(sbi_records, a.batch, "semantic", 0))
    plain = build_train_loader(cfg, records, plain_s)
    blended = build_train_loader({**cfg, "data": {**cfg["data"], "fakes": "sbi"}}, sbi_records, sbi_s)
    plain_rates, sbi_rates = [], []
    timer = time.process_time if workers == 0 else time.perf_counter
    if workers == 0:
        torch.set_num_threads(1)  # as in a DataLoader worker (and no idle thread spinning on the CPU clock)
    for r in range(a.repeats):
        plain_rates += _views_per_second(plain, plain_s, a.warmup, a.batches, r, timer)
        sbi_rates += _views_per_second(blended, sbi_s, a.warmup, a.batches, r, timer)
    return plain_rates, sbi_rates


def _views_per_second(loader, sampler, warmup: int, batches: int, epoch: int, timer) -> list[float]:
    """One repeat of time_loader on the CPU, by `timer`: time.process_time with --workers 0 (the loading is
    this process's own CPU time, which a shared machine's load hardly changes), else the wall clock."""
    sampler.set_epoch(epoch)
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    t0, views = timer(), 0
    for _ in range(batches):
        views += 2 * next(it)["view1"].shape[0]
    return [views / (timer() - t0)]


class _CyclingSampler:
    """A ForgeryPairSampler whose epochs never run dry inside a timing (a small crop set repeats)."""

    def __init__(self, sampler: ForgeryPairSampler):
        self.inner = sampler
        self.batch_size = sampler.batch_size
        self.rank = sampler.rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 10**9

    def __iter__(self):
        e = 0
        while True:
            self.inner.set_epoch(self.epoch * 1000 + e)
            yield from self.inner
            e += 1


if __name__ == "__main__":
    raise SystemExit(main())

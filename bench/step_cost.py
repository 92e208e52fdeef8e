"""CPU cost of one training step and one inference batch of the paper-tables encoder (bench/paper_tables.yaml:
resnet10t from scratch at 64 px), in NCHW and channels_last, on one thread: the arithmetic behind that
file's budget (bench/RESULTS.md, the paper-tables section).

    python -m bench.step_cost                 # batch 32 anchors x 2 views = 64 images a step, 128 at inference
    python -m bench.step_cost --threads 2

CPU seconds (time.process_time) rather than wall seconds, so that the numbers mean something on a shared
machine; the training step is cross-entropy on random inputs (the contrastive losses add little at this
batch), SGD with momentum as the engine's optimiser.
"""
from __future__ import annotations

import argparse
import time

import timm
import torch


def step_cost(channels_last: bool, images: int, size: int, repeats: int, warmup: int = 3) -> float:
    model = timm.create_model("resnet10t", num_classes=2)
    x = torch.randn(images, 3, size, size)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    y = torch.randint(0, 2, (images,))
    for i in range(warmup + repeats):
        if i == warmup:
            t0 = time.process_time()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.process_time() - t0) / repeats


@torch.inference_mode()
def inference_cost(channels_last: bool, images: int, size: int, repeats: int, warmup: int = 1) -> float:
    model = timm.create_model("resnet10t", num_classes=2).eval()
    x = torch.randn(images, 3, size, size)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    for i in range(warmup + repeats):
        if i == warmup:
            t0 = time.process_time()
        model(x)
    return (time.process_time() - t0) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--train-images", type=int, default=64)
    p.add_argument("--eval-images", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for channels_last in (False, True):
        layout = "channels_last" if channels_last else "NCHW"
        train = step_cost(channels_last, args.train_images, args.size, args.repeats)
        infer = inference_cost(channels_last, args.eval_images, args.size, args.repeats)
        print(f"{layout:>13}: training step of {args.train_images} images {train:.3f} CPU s, inference of "
              f"{args.eval_images} images {infer:.3f} CPU s ({args.threads} thread(s), {args.size} px)", flush=True)


if __name__ == "__main__":
    main()

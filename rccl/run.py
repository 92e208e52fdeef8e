"""The run folder: the one place that knows what a run holds and where.

```
RUN/config.yaml                          the resolved config (rccl-train); created first: the folder's claim
RUN/torchrun_job                         under torchrun: the job that claimed the folder (its restarts resume it)
RUN/checkpoints/stage{1,2}_{NNN,last}.pt  checkpoints (rccl-train; stage2_last.pt is the detector)
RUN/epochs.csv, RUN/tb/                  one row per finished epoch; TensorBoard scalars
RUN/metrics.json                         evaluation on the run's own manifest, test split (rccl-eval)
RUN/metrics_SPLIT.json                   ... on another split of it
RUN/eval/SPLIT_Q_{roc,hist}.png, SPLIT_Q_scores.csv   plots and per-crop scores of those
RUN/eval/NAME/metrics[_SPLIT].json, ...  evaluation on another manifest (dataset NAME), same layout inside
RUN/eval/summary.md                      one row per (dataset, quality) evaluated for the run
```

Training, evaluation and prediction all reach a run through `RunDir`; none of them imports another.
Every file is written through rccl.fileio (atomic, the mode the umask gives).
"""
from __future__ import annotations

import contextlib
import glob
import os
import re
from pathlib import Path

import yaml

from rccl import checkpoint
from rccl.checkpoint import CheckpointError  # noqa: F401  (the run folder's error too)
from rccl.fileio import link_replace, write_new_text, write_text

class RunDir:
    """A run folder (it may not exist yet: `RunDir.create` makes a fresh one)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __truediv__(self, other) -> Path:
        return self.path / other

    @property
    def name(self) -> str:
        return self.path.name

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- creating ---------------------------------------------------------------------------------------
    @staticmethod
    def candidates(out: str | os.PathLike, name: str) -> list["RunDir"]:
        """The folders OUT/NAME and OUT/NAME-2, -3 ... that exist, in the order of their number."""
        out = Path(out)
        numbered = [(int(m.group(1)), p) for p in out.glob(f"{glob.escape(name)}-*")
                    if (m := re.fullmatch(rf"{re.escape(name)}-(\d+)", p.name)) and int(m.group(1)) >= 2]
        first = [(1, out / name)] if (out / name).exists() else []
        return [RunDir(p) for _, p in first + sorted(numbered)]

    @staticmethod
    def claim(out: str | os.PathLike, name: str, cfg: dict, job: str | None = None) -> "RunDir":
        """A fresh run folder, taken atomically: OUT/NAME, or NAME-2, -3 ... (a run is never overwritten).
        The claim is the resolved config's config.yaml, created only where none exists
        (rccl.fileio.write_new_text): of two jobs racing for one name, one wins the folder and the other
        moves on to the next. A folder that holds anything is passed over; an empty one is taken. `job`:
        the torchrun job's identity (rccl.train.elastic), kept in RUN/torchrun_job for its restarts."""
        out = Path(out)
        n = 1
        while True:
            run = RunDir(out / (name if n == 1 else f"{name}-{n}"))
            n += 1
            if run.path.exists() and any(run.path.iterdir()):
                continue
            try:
                write_new_text(run.config_path, yaml.safe_dump(cfg, sort_keys=False))
            except FileExistsError:
                continue
            if job is not None:
                write_text(run.job_path, job + "\n")
            return run

    def release(self, parent_too: bool = False) -> None:
        """Undo a claim that came to nothing (the model could not be built): config.yaml and the job file
        removed, and the folder with them when nothing else is in it; with parent_too (the claim made
        OUT) OUT as well when it is left empty."""
        for path in (self.config_path, self.job_path):
            path.unlink(missing_ok=True)
        for folder in (self.path, self.path.parent) if parent_too else (self.path,):
            with contextlib.suppress(OSError):
                folder.rmdir()

    @property
    def job_path(self) -> Path:
        return self.path / "torchrun_job"

    def job(self) -> str | None:
        """The torchrun job identity the folder was claimed by (None: claimed outside torchrun)."""
        return self.job_path.read_text(encoding="utf-8").strip() if self.job_path.is_file() else None

    @staticmethod
    def of_job(out: str | os.PathLike, name: str, job: str) -> "RunDir | None":
        """The newest run folder of `name` claimed by the torchrun job `job`, or None (rccl.train.elastic)."""
        mine = [run for run in RunDir.candidates(out, name) if run.job() == job]
        return mine[-1] if mine else None

    # -- layout -----------------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint_path(self, stage: int, epoch: int) -> Path:
        return self.checkpoint_dir / f"stage{stage}_{epoch:03d}.pt"

    def last_checkpoint_path(self, stage: int) -> Path:
        return self.checkpoint_dir / f"stage{stage}_last.pt"

    @property
    def epochs_csv(self) -> Path:
        return self.path / "epochs.csv"

    @property
    def tb_dir(self) -> Path:
        return self.path / "tb"

    @property
    def summary_path(self) -> Path:
        return self.path / "eval" / "summary.md"

    def eval_dir(self, dataset: str | None = None) -> Path:
        """RUN/eval for the run's own manifest; RUN/eval/DATASET for another one."""
        return self.path / "eval" if dataset is None else self.path / "eval" / dataset

    def metrics_path(self, split: str = "test", dataset: str | None = None) -> Path:
        """RUN/metrics.json (own manifest, test split: the run's results); RUN/metrics_SPLIT.json for another
        split; RUN/eval/DATASET/metrics[_SPLIT].json for another manifest."""
        folder = self.path if dataset is None else self.eval_dir(dataset)
        return folder / ("metrics.json" if split == "test" else f"metrics_{split}.json")

    def plot_path(self, split: str, quality: str, kind: str, dataset: str | None = None) -> Path:
        """kind: roc | hist (PNG)."""
        return self.eval_dir(dataset) / f"{split}_{quality}_{kind}.png"

    def scores_path(self, split: str, quality: str, dataset: str | None = None) -> Path:
        return self.eval_dir(dataset) / f"{split}_{quality}_scores.csv"

    # -- reading ----------------------------------------------------------------------------------------
    def require(self) -> "RunDir":
        if not self.path.is_dir():
            raise CheckpointError(f"run folder {self.path}: no such folder (pass the RUN folder rccl-train wrote)")
        return self

    def config(self) -> dict:
        """The run's resolved config (config.yaml) as a plain dict."""
        self.require()
        if not self.config_path.is_file():
            raise CheckpointError(f"run folder {self.path}: no config.yaml (not a run folder written by rccl-train)")
        try:
            cfg = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise CheckpointError(f"{self.config_path}: not valid YAML ({e})") from None
        if not isinstance(cfg, dict):
            raise CheckpointError(f"{self.config_path}: not a config mapping")
        return cfg

    def write_config(self, cfg: dict) -> None:
        write_text(self.config_path, yaml.safe_dump(cfg, sort_keys=False))

    def manifest(self, cfg: dict | None = None) -> Path | None:
        """The manifest the run was trained on: data.manifest of its config, a relative path taken from the
        run folder when it exists there, else from the working directory; None when the config names none."""
        cfg = self.config() if cfg is None else cfg
        manifest = (cfg.get("data") or {}).get("manifest")
        if not manifest:
            return None
        manifest = Path(manifest)
        if not manifest.is_absolute():
            manifest = (self.path / manifest) if (self.path / manifest).exists() else manifest.resolve()
        return manifest

    def latest_checkpoint(self, stage: int) -> dict | None:
        """The stage's last checkpoint, or None when the stage has not finished an epoch."""
        path = self.last_checkpoint_path(stage)
        return checkpoint.read(path) if path.is_file() else None

    def save_checkpoint(self, stage: int, epoch: int, state: dict, keep_epochs: int = 0) -> Path:
        """Write stage{stage}_{epoch:03d}.pt (rccl.checkpoint's format, atomically) and make
        stage{stage}_last.pt another name of it (a hard link put in place atomically: the bytes are written
        once); prune numbered files beyond `keep_epochs` (0 keeps all), the oldest epochs first. Returns the
        numbered file."""
        path = self.checkpoint_path(stage, epoch)
        checkpoint.write(path, stage, epoch, state)
        link_replace(path, self.last_checkpoint_path(stage))
        if keep_epochs > 0:
            for old in self.numbered_checkpoints(stage)[:-keep_epochs]:
                old.unlink(missing_ok=True)
        return path

    def numbered_checkpoints(self, stage: int) -> list[Path]:
        """stage{stage}_{EPOCH}.pt, by epoch as a number (stage1_1000.pt after stage1_999.pt)."""
        found = [(int(m.group(1)), p) for p in self.checkpoint_dir.glob(f"stage{stage}_*.pt")
                 if (m := re.fullmatch(rf"stage{stage}_(\d{{3,}})\.pt", p.name))]
        return [p for _, p in sorted(found)]

    def load_detector(self, map_location="cpu"):
        """The run's stage-2 detector (encoder + linear head, eval mode; model(images) -> logits (B, 2),
        class 1 = fake) and the run's resolved config (the one saved in the checkpoint)."""
        self.require()
        path = self.last_checkpoint_path(2)
        if not path.is_file():
            hint = ("stage 1 is done: run `rccl-train --resume RUN --stage 2`"
                    if self.last_checkpoint_path(1).is_file() else "train it first with rccl-train")
            raise CheckpointError(f"run {self.path}: no stage-2 checkpoint ({path.name}); {hint}")
        return RunDir.detector(checkpoint.read(path, map_location="cpu"), map_location)

    @staticmethod
    def detector(state: dict, map_location="cpu"):
        """The detector and config of a stage-2 checkpoint's state (as load_detector gives them), for a
        state that came another way (rank 0's bytes, broadcast)."""
        from rccl.model import build_model  # model imports timm: keep it out of checkpoint-only uses

        cfg = state["config"]
        model = build_model(cfg, load_weights=False)
        model.load_state_dict(state["model"])
        model.to(map_location if map_location is not None else "cpu").eval()
        return model, cfg

    def files(self) -> list[Path]:
        """Every file of the run, recursively (for checks such as file modes)."""
        return sorted(p for p in self.path.rglob("*") if p.is_file())

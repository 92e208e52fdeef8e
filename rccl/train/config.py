"""Training configuration: defaults, YAML files, dotted command-line overrides, the resolved copy in the run.

A config file holds only the keys it changes; `base: other.yaml` (relative to the file) chains files, so
an ablation names the paper setting and the one key it varies. Every key must exist in DEFAULTS: a typo is
an error that names the key and the file, never a silently ignored setting.
"""
from __future__ import annotations

import copy
import os
import sysconfig
from pathlib import Path
from typing import Iterable

import yaml

from rccl.data.blend.records import FAKES_MODES
from rccl.defaults import DEFAULTS  # noqa: F401  (re-exported: the config room's one table of keys)
from rccl.errors import RcclError
from rccl.reference import FUSIONS, MIXED_AS
from rccl.fileio import write_text


class ConfigError(RcclError, ValueError):
    """A config that cannot be used; the message names the key and where it came from."""


# Keys whose value is a mapping with free keys (checked by their consumer, not here).
FREE_FORM = {"model.encoder_kwargs", "demo.synth", "demo.prep", "data.pairing"}


def _check_and_merge(base: dict, update: dict, where: str, prefix: str = "") -> None:
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            known = ", ".join(sorted(base)) or "(none)"
            raise ConfigError(f"{where}: unknown config key '{dotted}' (known keys"
                              f"{' under ' + prefix[:-1] if prefix else ''}: {known})")
        default = base[key]
        if dotted in FREE_FORM:
            base[key] = copy.deepcopy(value)
        elif isinstance(default, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: '{dotted}' is a section; give its keys ({', '.join(sorted(default))}),"
                                  f" not {value!r}")
            _check_and_merge(default, value, where, dotted + ".")
        else:
            base[key] = _checked_value(dotted, default, value, where)


def _checked_value(dotted: str, default, value, where: str):
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: '{dotted}' must be true or false, got {value!r}")
    elif isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: '{dotted}' must be a number, got {value!r}")
        if isinstance(default, int) and not isinstance(value, int):
            raise ConfigError(f"{where}: '{dotted}' must be an integer, got {value!r}")
    elif isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{where}: '{dotted}' must be a string, got {value!r}")
    elif isinstance(default, list) and not isinstance(value, list):
        raise ConfigError(f"{where}: '{dotted}' must be a list, got {value!r}")
    return value


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path}: not valid YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def _apply_file(cfg: dict, path: Path, seen: tuple = ()) -> None:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config file {path}: 'base' chain loops back on itself")
    data = _read_yaml(path)
    base = data.pop("base", None)
    if base is not None:
        _apply_file(cfg, (path.parent / base), seen + (path,))
    _check_and_merge(cfg, data, f"config file {path}")


def parse_override(text: str) -> dict:
    """'stage1.lr=0.1' -> {"stage1": {"lr": 0.1}}; the value is read as YAML (numbers, lists, true, null)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected KEY=VALUE with a dotted key, e.g. stage1.epochs=5")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    nested: dict = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def load_config(path: str | os.PathLike | None = None, overrides: Iterable[str] = (),
                base: dict | None = None) -> dict:
    """DEFAULTS (or `base`, e.g. a run's saved config), then the file's chain, then each override."""
    cfg = copy.deepcopy(base if base is not None else DEFAULTS)
    if path is not None:
        _apply_file(cfg, resolve_config_path(path))
    for text in overrides:
        _check_and_merge(cfg, parse_override(text), f"command-line override {text!r}")
    validate(cfg)
    return cfg


def validate(cfg: dict) -> None:
    """Checks that span keys or values (the per-key type checks happen while merging)."""
    choices = {
        "data.backend": ("torch", "dali", "auto"),
        "data.fakes": FAKES_MODES,
        "loss.kind": ("rccl", "supcon", "ce"),
        "train.amp_dtype": ("bfloat16", "float16"),
        "train.amp_cpu": ("auto", "force", "off"),
        "train.device": ("auto", "cpu", "cuda"),
        "stage1.scheduler": ("cosine", "constant"),
        "stage2.scheduler": ("cosine", "constant"),
    }
    for dotted, allowed in choices.items():
        section, key = dotted.split(".")
        if cfg[section][key] not in allowed:
            raise ConfigError(f"'{dotted}' must be one of {', '.join(allowed)}, got {cfg[section][key]!r}")
    for stage in ("stage1", "stage2"):
        s = cfg[stage]
        if s["epochs"] < 0:
            raise ConfigError(f"'{stage}.epochs' must be >= 0, got {s['epochs']}")
        if s["batch_size"] < 2 or s["batch_size"] % 2:
            raise ConfigError(f"'{stage}.batch_size' must be an even number >= 2 (half natural, half fake), "
                              f"got {s['batch_size']}")
        if s["lr"] <= 0:
            raise ConfigError(f"'{stage}.lr' must be > 0, got {s['lr']}")
    if cfg["data"]["image_size"] < 8:
        raise ConfigError(f"'data.image_size' must be at least 8, got {cfg['data']['image_size']}")
    loss = cfg["loss"]
    for key in ("bank_size", "negatives", "neighbors", "linear_neighbors"):
        if loss[key] < 0:
            raise ConfigError(f"'loss.{key}' must be >= 0, got {loss[key]}")
    if loss["temperature"] <= 0:
        raise ConfigError(f"'loss.temperature' must be > 0, got {loss['temperature']}")
    if loss["alpha"] is not None:
        raise ConfigError(f"'loss.alpha' was replaced by 'loss.beta' and 'loss.fold': loss.alpha: {loss['alpha']} "
                          f"is loss.beta: [{loss['alpha']}, {loss['alpha']}] with loss.fold: true (the default)")
    beta = loss["beta"]
    if (len(beta) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 for v in beta)):
        raise ConfigError(f"'loss.beta' must be two numbers > 0, [a, b] of Beta(a, b), got {beta!r}")
    for key, allowed in (("fusion", FUSIONS), ("mixed_as", MIXED_AS)):
        if loss[key] not in allowed:
            raise ConfigError(f"'loss.{key}' must be one of {', '.join(allowed)}, got {loss[key]!r}")


def save_config(cfg: dict, path: str | os.PathLike) -> None:
    """Write the resolved config (the run folder's config.yaml) through the atomic writer."""
    write_text(path, yaml.safe_dump(cfg, sort_keys=False))


def config_dirs() -> list[Path]:
    """Where a config named without a path (`--config demo`) is looked up: the checkout's configs/ (the
    source of truth), then the installed copy (pyproject's data-files: PREFIX/share/rccl/configs)."""
    checkout = Path(__file__).resolve().parents[2] / "configs"
    installed = Path(sysconfig.get_path("data")) / "share" / "rccl" / "configs"
    return [d for d in (checkout, installed) if d.is_dir()]


def shipped_configs() -> list[str]:
    names = {p.stem for d in config_dirs() for p in d.glob("*.yaml")}
    return sorted(names)


def resolve_config_path(name_or_path: str | os.PathLike) -> Path:
    """A config file: the path as given when it exists, else a shipped config by name (`demo`,
    `celebdf`, `tables/table2_ours`, with or without .yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if not path.is_absolute():
        stem = str(name_or_path).removesuffix(".yaml").removesuffix(".yml")
        for folder in config_dirs():
            candidate = folder / f"{stem}.yaml"
            if candidate.is_file():
                return candidate
    raise ConfigError(f"--config {name_or_path}: no such file, and no shipped config of that name "
                      f"(shipped: {', '.join(shipped_configs()) or 'none found'})")

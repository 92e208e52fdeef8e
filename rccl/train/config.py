"""Training configuration: defaults, YAML files, dotted command-line overrides, the resolved copy in the run.

A config file holds only the keys it changes; `base: other.yaml` (relative to the file) chains files, so
an ablation names the paper setting and the one key it varies. Every key must exist in DEFAULTS: a typo is
an error that names the key and the file, never a silently ignored setting. Every value is checked against
its rule in rccl.train.schema (type, range, allowed values) as it is merged in, so a bad value is a
one-line ConfigError naming the key before anything is written.
"""
from __future__ import annotations

import copy
import os
import sysconfig
from pathlib import Path
from typing import Iterable

import yaml

from rccl.defaults import DEFAULTS  # noqa: F401  (re-exported: the config room's one table of keys)
from rccl.errors import RcclError
from rccl.fileio import write_text
from rccl.train.schema import SCHEMA, Invalid, like, takes_words


class ConfigError(RcclError, ValueError):
    """A config that cannot be used; the message names the key and where it came from."""


# Keys whose value is taken whole (a mapping with free keys, or a preset name / weight mapping): their
# schema rule checks them as one value.
FREE_FORM = {"model.encoder_kwargs", "demo.synth", "demo.prep", "data.pairing"}


def _check_and_merge(base: dict, update: dict, where: str, prefix: str = "") -> None:
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            known = ", ".join(sorted(base)) or "(none)"
            raise ConfigError(f"{where}: unknown config key '{dotted}' (known keys"
                              f"{' under ' + prefix[:-1] if prefix else ''}: {known})")
        default = base[key]
        if isinstance(default, dict) and dotted not in FREE_FORM:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: '{dotted}' is a section; give its keys ({', '.join(sorted(default))}),"
                                  f" not {value!r}")
            _check_and_merge(default, value, where, dotted + ".")
        else:
            base[key] = checked_value(dotted, copy.deepcopy(value), where)


def _rule(dotted: str):
    return SCHEMA.get(dotted) or like(_flatten(DEFAULTS).get(dotted))


def checked_value(dotted: str, value, where: str = ""):
    """The value as the key's schema rule takes it, or a ConfigError naming the key (and `where`)."""
    try:
        return _rule(dotted)(value)
    except Invalid as e:
        raise ConfigError(f"{where + ': ' if where else ''}'{dotted}' {e}") from None


# the tags YAML 1.1 gives a bare word it reads as something else than a string (off, no -> bool; 2024 -> int)
_TYPED_WORDS = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}


def _is_section(dotted: str) -> bool:
    node = DEFAULTS
    for part in dotted.split(".") if dotted else ():
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return isinstance(node, dict) and dotted not in FREE_FORM


def _construct(node: yaml.Node, dotted: str, loader: yaml.SafeLoader):
    """A YAML node as the config takes it: read against the schema, so that a key whose values are words
    (a choice, a text: rccl.train.schema.takes_words) keeps the bare word as written, where YAML 1.1 alone
    would read `train.amp_cpu: off` or `name: no` as false. Every other value is YAML's own reading."""
    if isinstance(node, yaml.MappingNode) and _is_section(dotted):
        prefix = dotted + "." if dotted else ""
        return {(k.value if isinstance(k, yaml.ScalarNode) else loader.construct_object(k, deep=True)):
                _construct(v, f"{prefix}{k.value if isinstance(k, yaml.ScalarNode) else ''}", loader)
                for k, v in node.value}
    if (isinstance(node, yaml.ScalarNode) and node.style is None and node.tag in _TYPED_WORDS
            and takes_words(_rule(dotted))):
        return node.value
    return loader.construct_object(node, deep=True)


def read_yaml_text(text: str, dotted: str = "") -> object:
    """YAML text read against the schema (see _construct); `dotted`: the key the text is the value of (""
    for a whole config file). Raises yaml.YAMLError."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        return None if node is None else _construct(node, dotted, loader)
    finally:
        loader.dispose()


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file {path}: no such file")
    try:
        data = read_yaml_text(path.read_text(encoding="utf-8"))
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
    """'stage1.lr=0.1' -> {"stage1": {"lr": 0.1}}; the value is read as YAML (numbers, lists, true, null)
    against the key's schema rule: a key of words keeps the word (`train.amp_cpu=off`, `name=no`)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected KEY=VALUE with a dotted key, e.g. stage1.epochs=5")
    try:
        value = read_yaml_text(raw, key.strip()) if raw.strip() else ""
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
    """DEFAULTS, then `base` (e.g. a run's saved config.yaml), then the file's chain, then each override;
    every value checked against the schema (rccl.train.schema) on the way in."""
    cfg = copy.deepcopy(DEFAULTS)
    if base is not None:
        _check_and_merge(cfg, base, "the base config")
    if path is not None:
        _apply_file(cfg, resolve_config_path(path))
    for text in overrides:
        _check_and_merge(cfg, parse_override(text), f"command-line override {text!r}")
    validate(cfg)
    return cfg


def validate(cfg: dict) -> None:
    """Every key of `cfg` against the schema (values merged in were checked already; this also covers a
    config built by hand), then the checks that span keys."""
    known = _flatten(DEFAULTS)
    for dotted, value in _flatten(cfg).items():
        if dotted not in known:
            raise ConfigError(f"unknown config key '{dotted}'")
        checked_value(dotted, value)
    for stage in ("stage1", "stage2"):
        s = cfg[stage]
        if s["warmup_epochs"] > s["epochs"]:
            raise ConfigError(f"'{stage}.warmup_epochs' must be <= {stage}.epochs ({s['epochs']}), "
                              f"got {s['warmup_epochs']}")


def check_world_size(cfg: dict, world_size: int) -> None:
    """Each stage's global batch splits into `world_size` ranks of an even size (half natural, half fake)."""
    for stage in ("stage1", "stage2"):
        size = cfg[stage]["batch_size"]
        if size % (2 * world_size):
            raise ConfigError(f"'{stage}.batch_size' {size} does not split into {world_size} process(es) of an "
                              f"even size (half natural, half fake); use a multiple of {2 * world_size}")


def _flatten(cfg: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in cfg.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted not in FREE_FORM:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def flatten(cfg: dict) -> dict:
    """{"stage1": {"lr": 0.1}} -> {"stage1.lr": 0.1}; the FREE_FORM keys stay whole values."""
    return _flatten(cfg)


def save_config(cfg: dict, path: str | os.PathLike) -> None:
    """Write the resolved config (the run folder's config.yaml) through the atomic writer."""
    write_text(path, yaml.safe_dump(cfg, sort_keys=False))


CHECKOUT_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def installed_configs() -> Path:
    """PREFIX/share/rccl/configs: where pyproject's data-files put configs/ in an installed copy."""
    return Path(sysconfig.get_path("data")) / "share" / "rccl" / "configs"


def config_dirs() -> list[Path]:
    """Where a config named without a path (`--config demo`) is looked up: the checkout's configs/ (the
    source of truth), then the installed copy (pyproject's data-files: PREFIX/share/rccl/configs)."""
    return [d for d in (CHECKOUT_CONFIGS, installed_configs()) if d.is_dir()]


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

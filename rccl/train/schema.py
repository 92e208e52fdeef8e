"""The schema of the training config: for every key of DEFAULTS (rccl/defaults.py), the rule its value
must follow. A rule is a function value -> value (the value as used, e.g. "1e-4" read as a number) that
raises `Invalid("must be ...")`; rccl.train.config turns that into a one-line ConfigError naming the key
and where the value came from. Adding a key is one line in DEFAULTS and one line here (a test checks
that the two tables name the same keys).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

from rccl.data.blend.records import FAKES_MODES
from rccl.data.layouts import QUALITIES
from rccl.reference import FUSIONS, MIXED_AS


class Invalid(ValueError):
    """A value that breaks its key's rule; the message completes "'KEY' ..."."""


def _show(value) -> str:
    return repr(value)


# -- rules -----------------------------------------------------------------------------------------------
def boolean():
    def rule(v):
        if not isinstance(v, bool):
            raise Invalid(f"must be true or false, got {_show(v)}")
        return v
    return rule


def _as_number(v, integer: bool):
    if isinstance(v, str):  # YAML 1.1 reads 1e-4 (no dot) as a string: take it as the number it spells
        try:
            v = int(v) if integer else float(v)
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
        raise Invalid(f"must be {'an integer' if integer else 'a number'}, got {_show(v)}")
    if not math.isfinite(v):
        raise Invalid(f"must be a finite number, got {_show(v)}")
    return v


def number(low=None, high=None, *, low_open=False, high_open=False, integer=False):
    """A number (an integer with integer=True) in [low, high]; low_open / high_open exclude the ends."""
    def rule(v):
        v = _as_number(v, integer)
        bad_low = low is not None and (v <= low if low_open else v < low)
        bad_high = high is not None and (v >= high if high_open else v > high)
        if bad_low or bad_high:
            raise Invalid(f"must be {_range(low, high, low_open, high_open)}, got {_show(v)}")
        return v
    return rule


def integer(low=None, high=None):
    return number(low, high, integer=True)


def _range(low, high, low_open, high_open) -> str:
    if high is None:
        return f"{'>' if low_open else '>='} {low}"
    if low is None:
        return f"{'<' if high_open else '<='} {high}"
    return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def probability():
    return number(0.0, 1.0)


def interval(low=None, high=None, *, low_open=False, integer=False):
    """[a, b] with a <= b, both in the range given."""
    inner = number(low, high, low_open=low_open, integer=integer)

    def rule(v):
        if not isinstance(v, (list, tuple)) or len(v) != 2:
            raise Invalid(f"must be a pair [low, high], got {_show(v)}")
        try:
            a, b = inner(v[0]), inner(v[1])
        except Invalid as e:
            raise Invalid(f"must be [low, high] with each {str(e).removeprefix('must be ').split(', got')[0]}, "
                          f"got {_show(v)}") from None
        if a > b:
            raise Invalid(f"must be [low, high] with low <= high, got {_show(v)}")
        return [a, b]
    return rule


def takes_words(rule) -> bool:
    """Whether the rule's values are words (a choice or a text): YAML must hand it the word as written, not
    what YAML 1.1 reads into it (`off`, `no` -> false; `2024` -> an integer): rccl.train.config asks this."""
    return bool(getattr(rule, "takes_words", False))


def _words(rule):
    rule.takes_words = True
    return rule


def choice(*allowed):
    def rule(v):
        if v not in allowed:
            raise Invalid(f"must be one of {', '.join(map(str, allowed))}, got {_show(v)}")
        return v
    return _words(rule) if all(isinstance(a, str) for a in allowed) else rule


def text(*, nonempty=True, name=False):
    def rule(v):
        if not isinstance(v, str) or (nonempty and not v.strip()):
            raise Invalid(f"must be a {'non-empty ' if nonempty else ''}string, got {_show(v)}")
        if name and ("/" in v or "\\" in v or v in (".", "..")):
            raise Invalid(f"must be a plain name (no path separators), got {_show(v)}")
        return v
    return _words(rule)


def optional(inner):
    """null, or what `inner` accepts."""
    def rule(v):
        return None if v is None else inner(v)
    return _words(rule) if takes_words(inner) else rule


def mapping():
    def rule(v):
        if not isinstance(v, Mapping):
            raise Invalid(f"must be a mapping of keys to values, got {_show(v)}")
        return dict(v)
    return rule


def subset_of(allowed):
    """A non-empty list of distinct values from `allowed`."""
    def rule(v):
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, (list, tuple)) or not v:
            raise Invalid(f"must be a non-empty list of {', '.join(allowed)}, got {_show(v)}")
        bad = [q for q in v if q not in allowed]
        if bad:
            raise Invalid(f"must list only {', '.join(allowed)}, got {_show(bad[0])}")
        if len(set(v)) != len(v):
            raise Invalid(f"lists a value twice: {_show(v)}")
        return list(v)
    return rule


def pairing():
    """A preset name or a {strategy: weight} mapping, as rccl.data.pairing.resolve_strategies takes."""
    def rule(v):
        from rccl.data.pairing import resolve_strategies
        try:
            resolve_strategies(v)
        except ValueError as e:
            raise Invalid(f"is not a pairing: {str(e).removeprefix('pairing: ')}") from None
        return dict(v) if isinstance(v, Mapping) else v
    return rule


def encoder():
    """A timm model name (a tag such as .tf_in1k allowed); timm's registry only, nothing downloaded."""
    def rule(v):
        import timm
        if not isinstance(v, str) or not timm.is_model(v.split(".")[0]):
            raise Invalid(f"is not a timm model name, got {_show(v)} (see timm.list_models())")
        return v
    return rule


def even_batch():
    def rule(v):
        v = integer(2)(v)
        if v % 2:
            raise Invalid(f"must be an even number >= 2 (half natural, half fake), got {v}")
        return v
    return rule


def removed(message: str):
    def rule(v):
        if v is not None:
            raise Invalid(message.format(v=v))
        return v
    return rule


def like(default):
    """The rule of a key that SCHEMA does not list yet: the type of its default (a test asks for its line)."""
    if isinstance(default, bool):
        return boolean()
    if isinstance(default, int):
        return integer()
    if isinstance(default, float):
        return number()
    if isinstance(default, str):
        return text(nonempty=False)
    if isinstance(default, dict):
        return mapping()
    if isinstance(default, list):
        def rule(v):
            if not isinstance(v, (list, tuple)):
                raise Invalid(f"must be a list, got {_show(v)}")
            return list(v)
        return rule
    return lambda v: v  # a null default: any value


def _stage() -> dict:
    return {"epochs": integer(0), "batch_size": even_batch(), "lr": number(0, low_open=True),
            "momentum": number(0, 1, high_open=True), "weight_decay": number(0), "warmup_epochs": integer(0),
            "scheduler": choice("cosine", "constant")}


SCHEMA: dict = {
    "name": text(name=True),
    "data.manifest": optional(text()),
    "data.backend": choice("torch", "dali", "auto"),
    "data.fakes": choice(*FAKES_MODES),
    "data.blend_downscale_p": probability(),
    "data.blend_target_p": probability(),
    "data.dali_threads": integer(0),
    "data.dali_prefetch": integer(1),
    "data.image_size": integer(8),
    "data.train_split": text(),
    "data.train_qualities": subset_of(QUALITIES),
    "data.pairing": pairing(),
    "data.workers": integer(0),
    "data.cache_images": boolean(),
    "data.augment.scale": interval(0, 1, low_open=True),
    "data.augment.ratio": interval(0, low_open=True),
    "data.augment.flip": probability(),
    "data.augment.color_jitter": number(0, 1),
    "data.augment.color_jitter_p": probability(),
    "data.augment.blur_p": probability(),
    "data.augment.blur_sigma": interval(0, low_open=True),
    "data.augment.jpeg_p": probability(),
    "data.augment.jpeg_quality": interval(1, 100, integer=True),
    "model.encoder": encoder(),
    "model.encoder_kwargs": mapping(),
    "model.pretrained": boolean(),
    "model.weights": optional(text()),
    "model.allow_scratch": boolean(),
    "model.proj_hidden": optional(integer(1)),
    "model.proj_dim": integer(1),
    "model.proj_bn": boolean(),
    "model.proj_out_bn": boolean(),
    "model.channels_last": boolean(),
    "model.compile": boolean(),
    "loss.kind": choice("rccl", "supcon", "ce"),
    "loss.temperature": number(0, low_open=True),
    "loss.bank_size": integer(0),
    "loss.negatives": integer(0),
    "loss.neighbors": integer(0),
    "loss.margin": number(0),
    "loss.beta": interval(0, low_open=True),
    "loss.fold": boolean(),
    "loss.fusion": choice(*FUSIONS),
    "loss.linear_neighbors": integer(0),
    "loss.mixed_as": choice(*MIXED_AS),
    "loss.alpha": removed("was replaced by 'loss.beta' and 'loss.fold': loss.alpha: {v} is loss.beta: [{v}, {v}] "
                          "with loss.fold: true (the default)"),
    "loss.impl": choice("auto", "reference", "compiled"),
    **{f"stage{n}.{k}": rule for n in (1, 2) for k, rule in _stage().items()},
    "train.seed": integer(0),
    "train.out": text(),
    "train.amp": boolean(),
    "train.amp_dtype": choice("bfloat16", "float16"),
    "train.amp_cpu": choice("auto", "force", "off"),
    "train.device": choice("auto", "cpu", "cuda"),
    "train.threads": integer(0),
    "train.keep_epochs": integer(0),
    "train.progress": boolean(),
    "train.log_every": integer(1),
    "train.sync_bn": boolean(),
    "train.clip_grad": optional(number(0, low_open=True)),
    "train.decay_norm_and_bias": boolean(),
    "eval.qualities": subset_of(QUALITIES),
    "eval.split": text(),
    "eval.batch_size": integer(1),
    "eval.after_training": boolean(),
    "demo.cache": optional(text()),
    "demo.seed": integer(0),
    "demo.synth": mapping(),
    "demo.prep": mapping(),
}

"""Dataclass configs shared by every method, with validation and dict/CLI mapping.

Every method config derives from :class:`OptimConfig`, the options of the single optimisation
loop (:mod:`famr.loop`). Values are validated on construction so that a bad number fails before
any work starts, with a message that names the bad value and the valid range or choices.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, TypeVar

C = TypeVar("C")

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine", "onecycle")
BATCHNORM_MODES = ("eval", "train", "moved")
AUGMENTATIONS = ("none", "crop_flip")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    _require(
        value in choices, f"{name}={value!r} is not valid; choose one of: {', '.join(choices)}"
    )


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number > 0 (or >= 0)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    bound = ">= 0" if allow_zero else "> 0"
    _require(ok, f"{name}={value!r} is not valid; it must be a finite number {bound}")


def check_bool(name: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is ``True`` or ``False`` (not 0, 1 or "yes")."""
    _require(isinstance(value, bool), f"{name}={value!r} is not valid; it must be true or false")


def _integer_in(name: str, value: Any, low: int, high: int) -> None:
    """An ``int`` (never a ``bool``) in ``[low, high]``: the upper limits catch typos that would
    otherwise fail deep inside torch with an overflow message that names nothing."""
    ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    _require(ok, f"{name}={value!r} is not valid; it must be an integer in [{low}, {high}]")


MAX_LR = 1e3  # no method here learns with a larger rate; beyond it torch overflows in float32


@dataclass
class OptimConfig:
    """Options of the optimisation loop, shared by training and every unlearning method.

    Attributes:
        epochs: Passes over the method's driving data set (the forget set for forget-only
            methods, the retain set for retain-driven ones).
        max_steps: Optional cap on the total number of optimiser steps.
        batch_size: Examples per batch of each data stream.
        optimizer: ``"sgd"`` (with ``momentum``/``nesterov``) or ``"adam"``.
        lr: Peak learning rate.
        momentum: SGD momentum (ignored by Adam).
        nesterov: Nesterov momentum for SGD.
        weight_decay: Decoupled-from-nothing classic L2 weight decay of the optimiser.
        schedule: ``"constant"``, ``"cosine"`` (to zero) or ``"onecycle"`` (linear warm-up over
            the first 20 % of steps, then linear decay to zero).
        grad_clip: Clip the global gradient norm to this value; ``None`` disables clipping.
        params: Which parameters are updated: ``"all"``, ``"head"`` (the last ``nn.Linear``
            of the model), or a regular expression matched (``re.search``) against parameter
            names.
        batchnorm: ``"eval"`` keeps BatchNorm layers in eval mode (running statistics frozen
            and used for normalisation); ``"train"`` updates them from each batch; ``"moved"``
            trains only the BatchNorm layers whose parameters the run updates.
        augment: Batched augmentation of the driving images: ``"none"`` or ``"crop_flip"``.
        bf16: Run forward passes under bfloat16 autocast.
        channels_last: Use the channels-last memory format for the model and image batches
            (with ``bf16``, about twice as fast for convolutions on a recent CPU).
        compile: Run the model through ``torch.compile`` during the loop (in place, undone
            afterwards); pays a one-off compilation of tens of seconds, for long runs.
        seed: Seed for shuffling, random labels and initialisation.
    """

    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "constant"
    grad_clip: float | None = None
    params: str = "all"
    batchnorm: str = "eval"
    augment: str = "none"
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        _integer_in("epochs", self.epochs, 1, 10**6)
        if self.max_steps is not None:
            _integer_in("max_steps", self.max_steps, 1, 10**9)
        _integer_in("batch_size", self.batch_size, 1, 10**8)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_positive("lr", self.lr)
        _require(
            self.lr <= MAX_LR,
            f"lr={self.lr!r} is not valid; it must lie in (0, {MAX_LR:g}]",
        )
        check_positive("momentum", self.momentum, allow_zero=True)
        _require(
            self.momentum < 1,
            f"momentum={self.momentum!r} is not valid; it must lie in [0, 1) (at 1 or above "
            "the velocity grows without bound)",
        )
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        check_choice("schedule", self.schedule, SCHEDULES)
        if self.grad_clip is not None:
            check_positive("grad_clip", self.grad_clip)
        _require(
            isinstance(self.params, str) and bool(self.params),
            f"params={self.params!r} is not valid; use 'all', 'head', 'last_stage', "
            "'last_stage:SHARE', 'last_blocks:N', 'last_stage_but_first' or a name pattern",
        )
        from .models.suffix import block_count, stage_share  # noqa: PLC0415 (models import this)

        stage_share(self.params)  # a bad share or count fails here, before any data is read
        block_count(self.params)
        check_choice("batchnorm", self.batchnorm, BATCHNORM_MODES)
        check_choice("augment", self.augment, AUGMENTATIONS)
        for name in ("nesterov", "bf16", "channels_last", "compile"):
            check_bool(name, getattr(self, name))
        _integer_in("seed", self.seed, 0, 2**63 - 1)


@dataclass
class TrainConfig(OptimConfig):
    """Defaults for training a classifier from scratch (also used by ``retrain``).

    A short, strong schedule: SGD with Nesterov momentum, one-cycle learning rate, BatchNorm
    statistics updated from the data.

    Attributes:
        label_smoothing: Mix this much of the uniform distribution into the one-hot training
            targets (``torch.nn.functional.cross_entropy``'s ``label_smoothing``); 0 is plain
            cross-entropy.
    """

    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.05
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    batchnorm: str = "train"
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        ok = isinstance(self.label_smoothing, (int, float)) and 0 <= self.label_smoothing < 1
        _require(
            ok,
            f"label_smoothing={self.label_smoothing!r} is not valid; it must be in [0, 1)",
        )


def field_names(cls: type) -> list[str]:
    """The field names of a config dataclass, in declaration order."""
    return [f.name for f in dataclasses.fields(cls)]


def _parse(text: str, annotation: Any) -> Any:
    """Parse a command-line string into the type named by a dataclass annotation."""
    hint = annotation
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if optional and text.lower() in ("none", "null", ""):
        return None
    sequence = next((a for a in args if typing.get_origin(a) is tuple), None)
    if sequence is not None and "," in text:  # "0.01,0.1" for a float-or-tuple field
        item = typing.get_args(sequence)[0]
        return tuple(_parse(part.strip(), item) for part in text.split(","))
    if base is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{text!r} is not a boolean; use true or false")
    if base is int:
        return int(text)
    if base is float:
        return float(text)
    return text


def _type_hints(cls: type) -> dict[str, Any]:
    # ``from __future__ import annotations`` leaves annotations as strings; resolve them.
    return typing.get_type_hints(cls)


def make_config(cls: type[C], values: dict[str, Any] | None = None, *, parse: bool = False) -> C:
    """Build config ``cls`` from ``values``, rejecting unknown keys with the valid ones listed.

    Args:
        cls: A config dataclass.
        values: Field values. Unknown keys raise ``ValueError``.
        parse: Parse string values according to the field types (for CLI ``key=value``).

    Returns:
        The validated config instance.
    """
    values = dict(values or {})
    valid = field_names(cls)
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown config key(s) {', '.join(unknown)} for {cls.__name__}; "
            f"valid keys: {', '.join(valid)}"
        )
    if parse:
        hints = _type_hints(cls)
        # a field may name the type its text is parsed as (famr's "auto" config: each field
        # Optional, None meaning "the recipe's value", and a recipe's string field parsed as a
        # string, so that "none" stays the string there: forget_target=none)
        parse_as = {f.name: f.metadata.get("parse_as") for f in dataclasses.fields(cls)}
        for key, value in list(values.items()):
            if isinstance(value, str):
                try:
                    values[key] = _parse(value, parse_as[key] or hints[key])
                except ValueError as err:
                    raise ValueError(f"config key {key}={value!r}: {err}") from None
    return cls(**values)


def config_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(config)

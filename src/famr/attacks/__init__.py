"""Attacks that test whether a model forgot, or only hides what it knows at its outputs.

Every metric in :mod:`famr.metrics` reads the model's outputs. A model whose last layer was
edited can score like a retrained one there while its features still separate the forgotten
class, so that a linear probe, or a few steps of fine-tuning, bring it back. The attacks here
read the weights the way an attacker with the model would. Each is one file, registered with
:func:`register_attack`; each reports values for the unlearned model, and the same attack on
the original and on a retrained model gives the two ends of the scale: the retrained model's
value is the level that real forgetting reaches.

The per-example epsilon score of the NeurIPS 2023 unlearning challenge compares populations of
models rather than attacking one; it lives in :mod:`famr.attacks.epsilon`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..config import make_config
from ..data.forget import Splits
from ..data.tensors import to_float, to_tensors
from ..registry import Registry

ATTACKS: Registry = Registry("attack")


@dataclass
class AttackData:
    """What an attacker is given.

    Attributes:
        request: The request's splits (forget, retain, test_retain, test_forget and the
            classes it removes).
        probe_train: Labelled examples that still contain what was forgotten and that none of
            the models trained on (a validation split carved from the training data, never
            the test set): the linear probe is fit on them.
        original: The model before unlearning, for levels relative to it (optional).
    """

    request: Splits
    probe_train: Dataset | None = None
    original: nn.Module | None = None


def register_attack(
    name: str,
    *,
    config: type,
    needs: Sequence[str],
    values: str,
    direction: str,
    retrain: str,
) -> Callable:
    """Register an attack ``fn(model, data: AttackData, cfg, *, device) -> {name: value}``.

    Args:
        name: Registry key.
        config: Its config dataclass.
        needs: The :class:`AttackData` fields it needs besides the request.
        values: The prefix every value name it returns starts with (``"probe_"``), so that
            its values can be told from a row's other entries (:func:`attack_values`).
        direction: What its values mean.
        retrain: What a model retrained without the forget set scores.
    """
    if not values:
        raise ValueError(f"attack {name!r}: values must be a non-empty prefix, got {values!r}")
    for other in ATTACKS:
        theirs = other.meta["values"]
        if other.name != name and (theirs.startswith(values) or values.startswith(theirs)):
            raise ValueError(
                f"attack {name!r}: values prefix {values!r} overlaps attack {other.name!r}'s "
                f"{theirs!r}; each attack's values must be told apart by their prefix"
            )
    return ATTACKS.register(
        name, config=config, needs=tuple(needs), values=values, direction=direction, retrain=retrain
    )


def list_attacks() -> list[str]:
    """Registered attack names."""
    return ATTACKS.names()


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy in percent, in eval mode; each module's own train/eval flag is restored
    afterwards (an attack may evaluate a model it is fine-tuning)."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    try:
        for start in range(0, len(labels), batch_size):
            x = to_float(images[start : start + batch_size].to(device))
            correct += int(
                (model(x).argmax(dim=1).cpu() == labels[start : start + batch_size]).sum()
            )
    finally:
        for module, flag in flags:
            module.training = flag
    return 100.0 * correct / max(1, len(labels))


def attack(
    model: nn.Module,
    data: AttackData,
    attacks: Sequence[str] | None = None,
    *,
    device: str | torch.device | None = None,
    config: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run attacks on ``model`` (never modified).

    Args:
        model: The model to attack (an unlearned one, or the original / retrained reference).
        data: The request and what the attacker is given.
        attacks: Attack names (default: every registered attack whose needs ``data`` meets).
        device: Where to run.
        config: ``{attack name: {config field: value}}``.

    Returns:
        ``{value name: value}`` merged over the attacks.

    Raises:
        ValueError: An unknown attack or config key, or an attack named in ``attacks`` whose
            needs ``data`` does not meet.
    """
    from ..api import resolve_device

    dev = resolve_device(device)
    config = config or {}
    unknown = sorted(set(config) - set(ATTACKS.names()))
    if unknown:
        raise ValueError(f"config for unknown attack(s) {unknown}; attacks: {ATTACKS.names()}")
    chosen = applicable(data, attacks)
    to_tensors(data.request.forget, name="forget")  # fail early on a bad request
    results: dict[str, Any] = {}
    for entry in chosen:
        cfg = make_config(entry.meta["config"], config.get(entry.name, {}))
        values = entry.obj(model, data, cfg, device=dev)
        stray = sorted(k for k in values if not k.startswith(entry.meta["values"]))
        if stray:
            raise RuntimeError(
                f"attack {entry.name!r} returned {stray}, outside its prefix "
                f"{entry.meta['values']!r}"
            )
        results.update(values)
    return results


def applicable(data: AttackData, attacks: Sequence[str] | None = None) -> list:
    """The registry entries :func:`attack` runs on ``data``: the named ones (each must find
    what it needs in ``data``), or every registered one whose needs ``data`` meets."""
    chosen = []
    for entry in ATTACKS if attacks is None else [ATTACKS.get(a) for a in attacks]:
        missing = [n for n in entry.meta["needs"] if getattr(data, n) is None]
        if missing and attacks is not None:
            raise ValueError(f"attack {entry.name!r} needs {missing}; give them in AttackData")
        if not missing:
            chosen.append(entry)
    return chosen


def attack_values(
    row: dict[str, Any], data: AttackData, attacks: Sequence[str] | None = None
) -> dict[str, Any]:
    """The values in ``row`` (a result row measured earlier) of the attacks :func:`attack`
    would run on ``data``, by each attack's value prefix.

    Raises:
        ValueError: ``row`` holds no value of one of those attacks (it was measured without
            that attack, or before it existed).
    """
    out: dict[str, Any] = {}
    for entry in applicable(data, attacks):
        found = {k: v for k, v in row.items() if k.startswith(entry.meta["values"])}
        if not found:
            raise ValueError(
                f"the row holds no value of attack {entry.name!r} "
                f"(no {entry.meta['values']}* entry); it must be measured again"
            )
        out.update(found)
    return out


def _discover() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{info.name}")


_discover()

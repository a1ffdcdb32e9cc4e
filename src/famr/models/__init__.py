"""Model factory: ``create_model(name, ...)`` over one registry, ``list_models()``.

Every model takes ``num_classes`` and ``in_channels`` and ends in an ``nn.Linear`` classifier,
which is what ``params="head"`` selects.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from ..registry import Registry

MODELS: Registry = Registry("architecture")
register_model = MODELS.register


def create_model(name: str, num_classes: int, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """Build architecture ``name``.

    Args:
        name: A registered architecture (see :func:`list_models`), or a torchvision / timm
            model as ``torchvision:<name>`` / ``timm:<name>`` (random weights; see
            :mod:`famr.models.hub`).
        num_classes: Output classes K.
        in_channels: Image channels.
        **kwargs: Architecture arguments (e.g. ``width``, ``mean``/``std`` for input
            normalisation).

    Returns:
        A freshly initialised model.
    """
    from .hub import create_hub_model, is_hub_name

    _check_arguments(name, num_classes, in_channels, kwargs)
    if is_hub_name(name):
        return create_hub_model(name, num_classes=num_classes, in_channels=in_channels, **kwargs)
    entry = MODELS.get(name)
    try:
        return entry.obj(num_classes=num_classes, in_channels=in_channels, **kwargs)
    except TypeError as err:
        raise ValueError(f"bad arguments for architecture {name!r}: {err}") from None


def _check_arguments(name: Any, num_classes: Any, in_channels: Any, kwargs: dict) -> None:
    """One-line errors for arguments that would build a broken model (e.g. from an edited
    sidecar, or ``famr import --std 0``), before any layer is built."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"architecture {name!r} is not valid; give a name from list_models()")
    for key, value, low in (("num_classes", num_classes, 2), ("in_channels", in_channels, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(
                f"{key}={value!r} is not valid for architecture {name!r}; it must be an "
                f"integer >= {low}"
            )
    for key in ("mean", "std"):
        if kwargs.get(key) is None:
            continue
        values = kwargs[key]
        ok = isinstance(values, (list, tuple)) and len(values) == in_channels
        ok = ok and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in values
        )
        if ok and key == "std":
            ok = all(v > 0 for v in values)
        if not ok:
            rule = "positive finite numbers" if key == "std" else "finite numbers"
            raise ValueError(
                f"{key}={values!r} is not valid for architecture {name!r}; give {in_channels} "
                f"{rule}, one per input channel"
            )


def head_name(model: nn.Module) -> str:
    """The name of the model's classifier: its last ``nn.Linear`` in registration order."""
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("params='head' needs an nn.Linear classifier; the model has none")
    return linears[-1]


def list_models() -> list[str]:
    """Registered architecture names."""
    return MODELS.names()


from . import cifar_resnet, small  # noqa: E402,F401  (registers the architectures)

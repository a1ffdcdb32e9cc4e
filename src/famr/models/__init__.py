"""Model factory: ``create_model(name, ...)`` over one registry, ``list_models()``.

Every model takes ``num_classes`` and ``in_channels`` and ends in an ``nn.Linear`` classifier,
which is what ``params="head"`` selects.
"""

from __future__ import annotations

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

    if is_hub_name(name):
        return create_hub_model(name, num_classes=num_classes, in_channels=in_channels, **kwargs)
    entry = MODELS.get(name)
    try:
        return entry.obj(num_classes=num_classes, in_channels=in_channels, **kwargs)
    except TypeError as err:
        raise ValueError(f"bad arguments for architecture {name!r}: {err}") from None


def list_models() -> list[str]:
    """Registered architecture names."""
    return MODELS.names()


from . import cifar_resnet, small  # noqa: E402,F401  (registers the architectures)

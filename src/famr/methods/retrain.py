"""Retrain from scratch on the retain set: the gold standard every method is measured against."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import TrainConfig
from ..training import fit_cross_entropy
from . import MethodData, register_method


def reinitialize(model: nn.Module) -> None:
    """Re-initialise every submodule that owns parameters or buffers, in place.

    Every submodule's ``reset_parameters()`` / ``reset_running_stats()`` runs, then the model's
    own ``init_weights()`` if it has one.

    Raises:
        ValueError: A submodule has its own parameters but no ``reset_parameters()`` (it would
            silently keep its trained weights).
    """
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        if hasattr(module, "reset_running_stats"):
            module.reset_running_stats()
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        elif own:
            raise ValueError(
                f"cannot re-initialise submodule {name!r} ({type(module).__name__}): "
                "it has parameters but no reset_parameters()"
            )
    # Models with their own initialisation scheme (e.g. Kaiming-normal CIFAR ResNets) apply it
    # again, so the retrained reference starts from the same distribution as the original.
    if hasattr(model, "init_weights"):
        model.init_weights()


@dataclass
class RetrainConfig(TrainConfig):
    """The training schedule (it should match the one that trained the original model)."""


@register_method(
    "retrain",
    config=RetrainConfig,
    needs=("retain",),
    paper="Retraining from scratch without the forget set (exact unlearning)",
)
def retrain(model, data: MethodData, cfg: RetrainConfig, *, device, progress=None):
    """Re-initialise every layer and train on the retain set only.

    Parameters the caller froze (``requires_grad=False``, e.g. a pretrained backbone) keep
    their values: they were not learned from the data, so they are not retrained either.
    """
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    reinitialize(model)
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, value in frozen.items():
            params[name].copy_(value)
    return fit_cross_entropy(
        model, data.retain, cfg, device=device, stream="retain", progress=progress
    )

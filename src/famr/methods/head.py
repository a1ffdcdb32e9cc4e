"""Head-only fast path: when only the classifier moves, compute the frozen body's features once.

With every parameter but the last ``nn.Linear`` frozen, BatchNorm in eval mode, no dropout
and no augmentation, the head's input for a given image never changes during the run. The
method can then optimise the head alone on cached features through the same loop: the same
objective and the same numbers as running the whole network each step (pinned by an
equivalence test), at the cost of one forward pass.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import torch
from torch import Tensor, nn

from ..config import OptimConfig
from ..loop import head_name
from . import MethodData

logger = logging.getLogger(__name__)


def can_cache(model: nn.Module, cfg: OptimConfig) -> bool:
    """Whether the head's inputs are constant during a run with ``cfg``."""
    if cfg.params != "head" or cfg.batchnorm != "eval" or cfg.augment != "none":
        return False
    return not any(
        isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()
    )


@torch.no_grad()
def head_inputs(model: nn.Module, head: nn.Module, images: Tensor, batch_size: int = 512) -> Tensor:
    """The inputs the model feeds its ``head`` for ``images`` (eval mode, float32)."""
    captured: list[Tensor] = []
    hook = head.register_forward_pre_hook(
        lambda _, inputs: captured.append(inputs[0].detach().float())
    )
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size]
            model(x.float().div(255.0) if x.dtype == torch.uint8 else x.float())
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(captured)


def cached_head_problem(model: nn.Module, data: MethodData, cfg: OptimConfig):
    """``(head, data on features, cfg for the head)`` when the fast path applies, else ``None``.

    The path is taken only if the head really is the model's last operation: on a few forget
    images, ``head(features)`` must reproduce ``model(images)``; otherwise the run uses full
    forward passes (and says so in the log).
    """
    if not can_cache(model, cfg):
        return None
    head = model.get_submodule(head_name(model))
    forget_features = head_inputs(model, head, data.forget[0])
    with torch.no_grad():
        probe = data.forget[0][:8]
        probe = probe.float().div(255.0) if probe.dtype == torch.uint8 else probe.float()
        direct = model.eval()(probe)
        via_head = head(forget_features[:8])
    if direct.shape != via_head.shape or not torch.allclose(
        direct.float(), via_head.float(), rtol=1e-4, atol=1e-4
    ):
        logger.info(
            "the last nn.Linear is not the model's final operation; using full forward passes"
        )
        return None
    retain = None
    if data.retain is not None:
        retain = (head_inputs(model, head, data.retain[0]), data.retain[1])
    features = MethodData(
        (forget_features, data.forget[1]), retain, data.num_classes, data.forget_classes
    )
    return head, features, replace(cfg, params="all", channels_last=False)

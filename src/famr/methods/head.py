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
from torch import nn

from ..config import OptimConfig
from ..data.tensors import to_float
from ..features import head_inputs
from ..models import head_name
from . import MethodData

logger = logging.getLogger(__name__)


def can_cache(model: nn.Module, cfg: OptimConfig) -> bool:
    """Whether the head's inputs are constant during a run with ``cfg``."""
    if cfg.params != "head" or cfg.batchnorm != "eval" or cfg.augment != "none":
        return False
    if not all(p.requires_grad for p in model.get_submodule(head_name(model)).parameters()):
        return False  # a frozen head: the full path says so with the parameter names
    return not any(
        isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()
    )


def cached_head_problem(
    model: nn.Module, data: MethodData, cfg: OptimConfig, *, retain: bool = False
):
    """``(head, data on features, cfg for the head)`` when the fast path applies, else ``None``.

    The path is taken only if the head really is the model's last operation: on a few forget
    images, ``head(features)`` must reproduce ``model(images)``; otherwise the run uses full
    forward passes (and says so in the log). Retain features are computed only when
    ``retain`` is true (methods that use retain data).
    """
    if not can_cache(model, cfg):
        return None
    head = model.get_submodule(head_name(model))
    forget_features = head_inputs(model, head, data.forget[0], bf16=cfg.bf16)
    with torch.no_grad():
        probe = data.forget[0][:8]
        probe = to_float(probe)
        with torch.autocast(device_type=probe.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            direct = model.eval()(probe).float()
        via_head = head(forget_features[:8]).float()
    tolerance = 5e-2 if cfg.bf16 else 1e-4  # bf16 keeps about three significant digits
    if direct.shape != via_head.shape or not torch.allclose(
        direct, via_head, rtol=tolerance, atol=tolerance
    ):
        logger.info(
            "the last nn.Linear is not the model's final operation; using full forward passes"
        )
        return None
    retain_features = None
    if retain and data.retain is not None:
        retain_features = (head_inputs(model, head, data.retain[0], bf16=cfg.bf16), data.retain[1])
    anchor = None
    if data.anchor is not None:  # the head's own parameter names
        prefix = head_name(model) + "."
        anchor = {k[len(prefix) :]: v for k, v in data.anchor.items() if k.startswith(prefix)}
    features = MethodData(
        (forget_features, data.forget[1]),
        retain_features,
        data.num_classes,
        data.forget_classes,
        anchor,
    )
    return head, features, replace(cfg, params="all", channels_last=False)

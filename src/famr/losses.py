"""Loss terms as small pure functions (optax style): each takes tensors and returns a scalar.

Low-precision logits are cast to float32 before any log-softmax, so the terms are accurate
under bf16 autocast; float64 stays float64 (for exact tests).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _full_precision(logits: Tensor) -> Tensor:
    """bf16/fp16 logits become float32; float32 and float64 are kept as they are."""
    return logits.float() if logits.dtype in (torch.bfloat16, torch.float16) else logits


def uniform_cross_entropy(logits: Tensor, support: Tensor | None = None) -> Tensor:
    """Mean cross-entropy from a uniform target distribution u to softmax(logits).

    ``CE(u, p) = -(1/|S|) * sum_{k in S} log p_k`` averaged over the batch, where ``S`` is the
    support of ``u``: all K classes when ``support`` is ``None`` (the FAMR paper's target),
    else the classes where the boolean mask ``support`` is true. Over all K classes its minimum,
    ``log K``, is reached exactly at the uniform prediction; over a strict subset S the minimum
    ``log |S|`` needs zero probability outside S.

    Args:
        logits: ``(batch, K)`` scores.
        support: Optional ``(K,)`` boolean mask of the target's classes.

    Returns:
        The batch mean, a scalar tensor.
    """
    log_p = F.log_softmax(_full_precision(logits), dim=1)
    if support is None:
        return -log_p.mean(dim=1).mean()
    support = support.to(device=log_p.device, dtype=torch.bool)
    return -(log_p[:, support]).mean(dim=1).mean()


def uniform_minimum(num_classes: int, support: Tensor | None = None) -> float:
    """The minimum of :func:`uniform_cross_entropy`: ``log`` of the support size."""
    size = num_classes if support is None else int(support.sum())
    return math.log(size)


def cross_entropy(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy of integer ``labels`` under softmax(logits).

    ``label_smoothing`` mixes that much of the uniform distribution into the one-hot targets.
    """
    return F.cross_entropy(_full_precision(logits), labels, label_smoothing=label_smoothing)


def kl_from_reference(
    logits: Tensor, reference_logits: Tensor, support: Tensor | None = None
) -> Tensor:
    """Mean ``KL(p_ref || p)`` with ``p_ref = softmax(reference_logits)``, ``p = softmax(logits)``.

    Used as the function-space anchor (``famr_retain``) and for distillation (``scrub``):
    zero exactly when the two predictive distributions agree. With a boolean ``(K,)``
    ``support``, ``p_ref`` is the reference restricted to those classes and renormalised (the
    original's predictions with the removed classes taken out); ``p`` keeps all K classes, so
    the loss also drives the classes outside the support to zero.
    """
    log_p = F.log_softmax(_full_precision(logits), dim=1)
    reference = _full_precision(reference_logits)
    if support is not None:
        log_p, reference = log_p[:, support], reference[:, support]
    log_ref = F.log_softmax(reference, dim=1)
    return (log_ref.exp() * (log_ref - log_p)).sum(dim=1).mean()


def squared_distance(params: Sequence[Tensor], reference: Sequence[Tensor]) -> Tensor:
    """``sum_i ||params_i - reference_i||^2`` with fused ops (no autograd graph)."""
    if not params:
        return torch.zeros(())
    with torch.no_grad():
        diffs = torch._foreach_sub([p.detach() for p in params], list(reference))
        norms = torch._foreach_norm(diffs)
        return torch.stack([n.float() for n in norms]).pow(2).sum()


def anchor_penalty(params: Sequence[Tensor], reference: Sequence[Tensor], lam: float) -> Tensor:
    """The FAMR weight anchor ``(lam/2) * ||theta - theta_0||^2``, differentiable (plain form)."""
    total = sum(((p - r) ** 2).sum() for p, r in zip(params, reference, strict=True))
    return 0.5 * lam * total


def add_anchor_gradient_(
    params: Sequence[Tensor],
    reference: Sequence[Tensor],
    lam: float,
) -> None:
    """Add the anchor's gradient ``lam * (theta - theta_0)`` to each ``param.grad`` in place.

    Equivalent to back-propagating :func:`anchor_penalty` (pinned by a test) but costs two fused
    element-wise ops instead of an autograd graph over every parameter.
    """
    if lam == 0.0 or not params:
        return
    with torch.no_grad():
        grads = []
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        diffs = torch._foreach_sub([p.detach() for p in params], list(reference))
        torch._foreach_add_(grads, diffs, alpha=lam)

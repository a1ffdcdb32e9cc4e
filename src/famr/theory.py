"""The FAMR certificate: what the anchored objective guarantees about how far the model moved.

For F(theta) = L_f(theta) + (lam/2)||theta - theta_0||^2 and any theta with F(theta) <= F(theta_0)
(= L_f(theta_0), since the anchor vanishes at theta_0):

    (lam/2)||theta - theta_0||^2 <= L_f(theta_0) - L_f(theta) <= L_f(theta_0) - min L_f,

and min L_f = log |S| (the uniform target's support size) because CE(u, p) >= H(u) = log |S|.
So ||theta - theta_0|| <= sqrt((2/lam)(L_f(theta_0) - log|S|)) a priori, and
<= sqrt((2/lam)(L_f(theta_0) - L_f(theta))) at the final theta. Both are exact inequalities;
the only condition is that the run decreased F, which is checked, not assumed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .losses import uniform_cross_entropy, uniform_minimum


@torch.no_grad()
def mean_uniform_loss(
    model: nn.Module, images: Tensor, support: Tensor | None, *, batch_size: int = 512
) -> float:
    """L_f: the mean uniform-target cross-entropy over ``images`` in eval mode, float32."""
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].float()
        total += float(uniform_cross_entropy(model(x), support)) * len(x)
    model.train(was_training)
    return total / len(images)


def parameter_distances(original: nn.Module, updated: nn.Module) -> tuple[float, dict[str, float]]:
    """``||theta - theta_0||`` in total and per parameter tensor (only those that moved)."""
    before = dict(original.named_parameters())
    per_layer = {}
    total = 0.0
    for name, p in updated.named_parameters():
        d = float((p.detach().double() - before[name].detach().double()).pow(2).sum())
        total += d
        if d > 0:
            per_layer[name] = math.sqrt(d)
    return math.sqrt(total), per_layer


def deviation_certificate(
    original: nn.Module,
    updated: nn.Module,
    forget_images: Tensor,
    lam: float,
    support: Tensor | None,
    num_classes: int,
) -> dict:
    """Check and report the deviation bounds of an anchored FAMR run.

    Args:
        original: The model at theta_0.
        updated: The model after unlearning.
        forget_images: The forget set's images (on the models' device).
        lam: Anchor strength used by the run.
        support: The uniform target's support mask (``None`` = all classes).
        num_classes: K.

    Returns:
        A JSON-ready dict: ``uniform_loss_before`` / ``_after`` (L_f), ``objective_before`` /
        ``_after`` (F), ``objective_decreased``, ``distance`` (total) and
        ``distance_per_parameter``, ``a_priori_bound`` and ``final_bound`` on the distance
        (``None`` when lam = 0, where no bound exists), ``bound_holds`` and ``certified``
        (F decreased and the distance is within the final bound).
    """
    minimum = uniform_minimum(num_classes, support)
    before = mean_uniform_loss(original, forget_images, support)
    after = mean_uniform_loss(updated, forget_images, support)
    distance, per_layer = parameter_distances(original, updated)
    objective_after = after + 0.5 * lam * distance**2
    # Tolerance for float32 evaluation noise of L_f.
    decreased = objective_after <= before + 1e-6 * max(1.0, abs(before))
    a_priori = math.sqrt(2.0 / lam * max(0.0, before - minimum)) if lam > 0 else None
    final = math.sqrt(2.0 / lam * max(0.0, before - after)) if lam > 0 else None
    holds = final is not None and distance <= final * (1 + 1e-6) + 1e-9
    return {
        "lam": lam,
        "uniform_minimum": minimum,
        "uniform_loss_before": before,
        "uniform_loss_after": after,
        "objective_before": before,
        "objective_after": objective_after,
        "objective_decreased": bool(decreased),
        "distance": distance,
        "distance_per_parameter": per_layer,
        "a_priori_bound": a_priori,
        "final_bound": final,
        "bound_holds": bool(holds),
        "certified": bool(decreased and holds),
    }

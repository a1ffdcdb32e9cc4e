"""FAMR in one shot: the damped Newton (influence-function) step to the anchored optimum.

    theta = theta_0 - (H_f(theta_0) + lam I)^-1 grad L_f(theta_0)

with H_f the Hessian of FAMR's uniform loss on the forget set, applied through Hessian-vector
products and solved by conjugate gradients (no dense Hessian). Accurate when lam dominates the
curvature the step travels through (see docs/theory.md); where H_f + lam I is not positive
definite the run stops with an error instead of returning a meaningless step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.tensors import to_float
from ..loop import DivergenceError, select_parameters
from ..losses import uniform_cross_entropy
from ..theory.curvature import newton_step
from . import MethodData, register_method
from .famr import PAPER, FamrHeadConfig, refuse_classless_request, target_support
from .head import cached_head_problem


@dataclass
class FamrNewtonConfig(FamrHeadConfig):
    """Attributes:
    lam: Damping = the anchor strength of the FAMR objective being approximated (large lam:
        small, accurate steps).
    cg_iterations: Conjugate-gradient iterations.
    samples: Forget images the gradient and Hessian are taken over.
    """

    lam: float = 1.0
    cg_iterations: int = 100
    samples: int = 5000
    batch_size: int = 512

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("cg_iterations", "samples"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name}={value!r} is not valid; it must be an integer >= 1")


@register_method(
    "famr_newton",
    config=FamrNewtonConfig,
    paper=PAPER + "; Koh & Liang, ICML 2017 (influence functions)",
    certificate=True,
    summary="FAMR in one shot: damped Newton / influence step -(H_f + lam I)^-1 grad L_f by CG",
)
def famr_newton(model, data: MethodData, cfg: FamrNewtonConfig, *, device, progress=None):
    """One damped Newton step on FAMR's objective (Hessian-vector products + CG)."""
    refuse_classless_request(cfg, data)
    support = target_support(cfg, data)
    cached = cached_head_problem(model, data, cfg) if cfg.cache_features else None
    if cached is not None:
        model, data, cfg = cached
    model.eval()
    names = [n for n, _ in select_parameters(model, cfg.params)]
    images, labels = data.forget
    keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(cfg.seed))[
        : cfg.samples
    ]
    x = images[keep.to(images.device)]
    x = to_float(x)
    # (images, labels) batches; the uniform target ignores labels, so the forget labels ride along
    y = labels[keep.to(labels.device)]
    batches = [
        (x[i : i + cfg.batch_size], y[i : i + cfg.batch_size])
        for i in range(0, len(x), cfg.batch_size)
    ]

    def loss_fn(logits, _):
        return uniform_cross_entropy(logits, support)

    delta, info = newton_step(model, names, loss_fn, batches, cfg.lam, max_iter=cfg.cg_iterations)
    if info["negative_curvature"]:
        raise DivergenceError(
            f"H_f + lam I is not positive definite at lam={cfg.lam} (negative curvature after "
            f"{info['iterations']} CG iterations): the Newton step is meaningless here; raise lam "
            "or use params='head'"
        )
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, d in zip(names, delta, strict=True):
            params[name].add_(d.to(params[name].dtype))
    if progress is not None:
        progress(1, 1)
    distance = sum(float(d.double().pow(2).sum()) for d in delta) ** 0.5
    return [
        {
            "epoch": 1,
            "distance": distance,
            "cg_iterations": float(info["iterations"]),
            "cg_relative_residual": info["relative_residual"],
            "predicted_decrease": info["predicted_decrease"],
        }
    ]

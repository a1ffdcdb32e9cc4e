"""Influence unlearning: one damped Newton step towards the retain-only optimum.

Removing D_f from the training loss L = (n_r L_r + n_f L_f) / n + (wd/2)||theta||^2 moves its
optimum, to first order, by

    delta = (n_f / n_r) (H_r + wd I + damping I)^-1 (grad L_f(theta_0) + wd theta_0)

(from grad L(theta_0) = 0; wd = ``weight_decay``, the l2 coefficient the model was trained with;
Koh & Liang 2017;
the "IU" baseline of Unlearn-Sparse uses a Fisher approximation of H_r; here the exact Hessian
of a retain sample is applied through Hessian-vector products and conjugate gradients).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import OptimConfig, check_positive
from ..data.tensors import to_float
from ..loop import select_parameters
from ..losses import cross_entropy
from ..theory.curvature import conjugate_gradient, loss_hvp, mean_gradient
from . import MethodData, register_method


@dataclass
class InfluenceConfig(OptimConfig):
    """Attributes:
    weight_decay: The l2 coefficient of the original training objective (enters both the
        gradient and the Hessian of the expansion).
    damping: Added to the Hessian's diagonal (keeps the system positive definite).
    hessian_samples: Retain images the Hessian is estimated on.
    gradient_samples: Forget images the gradient is taken over.
    cg_iterations: Conjugate-gradient iterations.
    scale: Multiplier on the step (1 = the influence-function estimate).
    batch_size: Batch size of the Hessian and gradient passes.
    """

    epochs: int = 1
    batch_size: int = 256
    weight_decay: float = 5e-4
    damping: float = 0.01
    hessian_samples: int = 1024
    gradient_samples: int = 4096
    cg_iterations: int = 20
    scale: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("damping", self.damping)
        check_positive("scale", self.scale)
        for name in ("hessian_samples", "gradient_samples", "cg_iterations"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name}={value!r} is not valid; it must be an integer >= 1")


def _sample(data, count: int, batch_size: int, seed: int):
    images, labels = data
    keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:count].to(
        labels.device
    )
    x, y = images[keep], labels[keep]
    x = to_float(x)
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(y), batch_size)]


@register_method(
    "influence",
    config=InfluenceConfig,
    needs=("forget", "retain"),
    paper="Koh & Liang. Understanding Black-box Predictions via Influence Functions. ICML 2017; "
    "Izzo et al. AISTATS 2021; Jia et al. (IU baseline), NeurIPS 2023",
)
def influence(model, data: MethodData, cfg: InfluenceConfig, *, device, progress=None):
    """theta <- theta_0 + scale (n_f/n_r) (H_r + (wd + damping) I)^-1 (grad L_f + wd theta_0), by CG."""
    model.eval()  # BatchNorm with running statistics: the function the model computes at test time
    names = [n for n, _ in select_parameters(model, cfg.params)]
    forget = _sample(data.forget, cfg.gradient_samples, cfg.batch_size, cfg.seed)
    retain = _sample(data.retain, cfg.hessian_samples, cfg.batch_size, cfg.seed + 1)
    params = dict(model.named_parameters())
    gradient = mean_gradient(model, names, cross_entropy, forget)
    gradient = tuple(
        g + cfg.weight_decay * params[n].detach() for n, g in zip(names, gradient, strict=True)
    )
    hvp = loss_hvp(model, names, cross_entropy, retain)
    calls = [0]

    def counted(v):
        calls[0] += 1
        if progress is not None:
            progress(min(calls[0], cfg.cg_iterations), cfg.cg_iterations)
        return hvp(v)

    damping = cfg.damping + cfg.weight_decay
    step, info = conjugate_gradient(counted, gradient, damping=damping, max_iter=cfg.cg_iterations)
    ratio = len(data.forget[1]) / len(data.retain[1])
    with torch.no_grad():
        for name, s in zip(names, step, strict=True):
            params[name].add_(s, alpha=cfg.scale * ratio)
    distance = float(sum(s.double().pow(2).sum() for s in step)) ** 0.5 * cfg.scale * ratio
    return [
        {
            "epoch": 1,
            "distance": distance,
            "cg_iterations": float(info["iterations"]),
            "cg_relative_residual": info["relative_residual"],
            "negative_curvature": float(info["negative_curvature"]),
        }
    ]

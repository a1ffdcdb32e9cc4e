"""Second-order tools: Hessian-vector products, conjugate gradients, the damped Newton step.

No dense Hessian is ever formed: ``loss_hvp`` differentiates twice through ``torch.func`` and
``conjugate_gradient`` solves ``(H + damping I) x = b`` with those products. The certificate
(:mod:`famr.theory.certificate`) compares FAMR's result with the Newton step; ``famr_newton``
and ``influence`` apply such steps as methods.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def loss_hvp(model: nn.Module, names: list[str], loss_fn, batches):
    """A function ``v -> H v`` for the Hessian of the mean of ``loss_fn`` over ``batches``.

    Uses forward-over-reverse differentiation (``torch.func.jvp`` of ``torch.func.grad``) on
    the parameters ``names`` with every other parameter and buffer held fixed; the model is
    evaluated in its current mode (use eval mode so BatchNorm uses its running statistics).

    Args:
        model: The network.
        names: Names of the parameters the Hessian is taken over.
        loss_fn: ``loss_fn(logits, labels) -> scalar`` (a batch mean).
        batches: A list of ``(images, labels)``; the loss is their size-weighted mean.

    Returns:
        ``hvp(vectors) -> vectors`` over tuples of tensors shaped like the parameters.
    """
    from torch.func import functional_call, grad, jvp

    params = dict(model.named_parameters())
    fixed = {n: p.detach() for n, p in params.items() if n not in names}
    fixed.update({n: b for n, b in model.named_buffers()})
    primals = tuple(params[n].detach() for n in names)
    total = sum(len(y) for _, y in batches)

    def batch_loss(theta, x, y):
        state = {**fixed, **dict(zip(names, theta, strict=True))}
        return loss_fn(functional_call(model, state, (x,)), y)

    def hvp(vectors):
        out = None
        for x, y in batches:
            _, hv = jvp(
                lambda t, x=x, y=y: grad(batch_loss)(t, x, y), (primals,), (tuple(vectors),)
            )
            weight = len(y) / total
            out = (
                [h * weight for h in hv]
                if out is None
                else [o + h * weight for o, h in zip(out, hv, strict=True)]
            )
        return tuple(out)

    return hvp


def _dot(a, b) -> Tensor:
    return sum((x.double() * y.double()).sum() for x, y in zip(a, b, strict=True))


def conjugate_gradient(matvec, rhs, *, damping: float = 0.0, max_iter: int = 50, tol: float = 1e-6):
    """Solve ``(A + damping I) x = rhs`` for symmetric ``A`` given only ``matvec``.

    Stops when the residual norm falls below ``tol * ||rhs||``, after ``max_iter`` iterations,
    or when a search direction has non-positive curvature ``p^T (A + damping I) p <= 0``: then
    the system is not positive definite, the iterate so far is returned and the info says so
    (the caller must not treat it as a solution).

    Args:
        matvec: ``v -> A v`` over tuples of tensors.
        rhs: The right-hand side (tuple of tensors).
        damping: Added to the diagonal.
        max_iter: Iteration cap.
        tol: Relative residual tolerance.

    Returns:
        ``(x, info)`` with ``info`` = ``iterations``, ``relative_residual``,
        ``negative_curvature`` (bool), ``converged`` (bool).
    """
    x = tuple(torch.zeros_like(r) for r in rhs)
    r = tuple(t.clone() for t in rhs)
    p = tuple(t.clone() for t in rhs)
    rs = _dot(r, r)
    norm_rhs = math.sqrt(float(rs)) or 1.0
    info = {
        "iterations": 0,
        "relative_residual": 1.0 if float(rs) > 0 else 0.0,
        "negative_curvature": False,
        "converged": float(rs) == 0.0,
    }
    for it in range(max_iter):
        if info["converged"]:
            break
        ap = tuple(a + damping * q for a, q in zip(matvec(p), p, strict=True))
        curvature = _dot(p, ap)
        if float(curvature) <= 0:
            info["negative_curvature"] = True
            break
        alpha = rs / curvature
        x = tuple(xi + alpha.to(xi.dtype) * pi for xi, pi in zip(x, p, strict=True))
        r = tuple(ri - alpha.to(ri.dtype) * ai for ri, ai in zip(r, ap, strict=True))
        rs_new = _dot(r, r)
        info["iterations"] = it + 1
        info["relative_residual"] = math.sqrt(float(rs_new)) / norm_rhs
        if info["relative_residual"] < tol:
            info["converged"] = True
            break
        beta = rs_new / rs
        p = tuple(ri + beta.to(ri.dtype) * pi for ri, pi in zip(r, p, strict=True))
        rs = rs_new
    return x, info


def mean_gradient(model: nn.Module, names: list[str], loss_fn, batches) -> tuple[Tensor, ...]:
    """The gradient of the size-weighted mean loss over ``batches`` w.r.t. parameters ``names``."""
    params = dict(model.named_parameters())
    chosen = [params[n] for n in names]
    total = sum(len(y) for _, y in batches)
    out = [torch.zeros_like(p) for p in chosen]
    for x, y in batches:
        loss = loss_fn(model(x), y) * (len(y) / total)
        grads = torch.autograd.grad(loss, chosen)
        for o, g in zip(out, grads, strict=True):
            o.add_(g)
    return tuple(out)


def newton_step(
    model: nn.Module,
    names: list[str],
    loss_fn,
    batches,
    lam: float,
    *,
    max_iter: int = 100,
    tol: float = 1e-8,
) -> tuple[tuple[Tensor, ...], dict]:
    """The damped Newton step ``delta = -(H_f(theta_0) + lam I)^-1 grad L_f(theta_0)``.

    Setting grad F(theta*) = 0 for F = L_f + (lam/2)||theta - theta_0||^2 and expanding
    grad L_f to first order around theta_0 gives theta* - theta_0 ~= delta: the influence-
    function estimate of FAMR's optimum. H_f is applied through Hessian-vector products and
    the system solved by conjugate gradients; negative curvature (H_f + lam I not positive
    definite, possible for small lam on a deep network) is detected and reported in ``info``.

    Returns:
        ``(delta, info)``: the step over parameters ``names`` and the CG info plus
        ``gradient_norm`` and ``predicted_decrease`` (the quadratic model's F(theta_0) - F(theta_0 + delta)).
    """
    gradient = mean_gradient(model, names, loss_fn, batches)
    hvp = loss_hvp(model, names, loss_fn, batches)
    solution, info = conjugate_gradient(hvp, gradient, damping=lam, max_iter=max_iter, tol=tol)
    delta = tuple(-s for s in solution)
    # quadratic model: F(theta_0 + d) - F(theta_0) ~= g.d + 1/2 d.(H + lam I).d = 1/2 g.d at the solution
    info["gradient_norm"] = float(_dot(gradient, gradient)) ** 0.5
    info["predicted_decrease"] = -0.5 * float(_dot(gradient, delta))
    return delta, info


def displacement(original: nn.Module, updated: nn.Module, names: list[str]) -> tuple[Tensor, ...]:
    """``theta - theta_0`` over parameters ``names``."""
    before = dict(original.named_parameters())
    after = dict(updated.named_parameters())
    return tuple((after[n] - before[n]).detach() for n in names)


def step_agreement(predicted: tuple[Tensor, ...], achieved: tuple[Tensor, ...]) -> dict[str, float]:
    """Cosine and relative error between two displacement vectors (predicted vs achieved)."""
    dot = float(_dot(predicted, achieved))
    norm_p = float(_dot(predicted, predicted)) ** 0.5
    norm_a = float(_dot(achieved, achieved)) ** 0.5
    diff = tuple(p - a for p, a in zip(predicted, achieved, strict=True))
    return {
        "cosine": dot / (norm_p * norm_a) if norm_p > 0 and norm_a > 0 else 0.0,
        "relative_error": float(_dot(diff, diff)) ** 0.5 / norm_a if norm_a > 0 else float("inf"),
        "predicted_norm": norm_p,
        "achieved_norm": norm_a,
    }

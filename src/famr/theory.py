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


# ---------------------------------------------------------------------------------------------
# Curvature: Hessian-vector products and conjugate gradients (no dense Hessian is ever formed).


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

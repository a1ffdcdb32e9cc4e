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

from ..data.tensors import to_float
from ..losses import uniform_cross_entropy, uniform_minimum
from .curvature import _dot, displacement, newton_step, step_agreement


@torch.no_grad()
def mean_uniform_loss(
    model: nn.Module, images: Tensor, support: Tensor | None, *, batch_size: int = 512
) -> float:
    """L_f: the mean uniform-target cross-entropy over ``images`` in eval mode, float32."""
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, len(images), batch_size):
        x = to_float(images[start : start + batch_size])
        total += float(uniform_cross_entropy(model(x), support)) * len(x)
    model.train(was_training)
    return total / len(images)


def parameter_distances(original: nn.Module, updated: nn.Module) -> tuple[float, dict[str, float]]:
    """``||theta - theta_0||`` in total and per parameter tensor (only those that moved)."""
    before = dict(original.named_parameters())
    per_layer = {}
    total = 0.0
    for name, p in updated.named_parameters():
        b = before[name].detach().to(p.device, torch.float64)
        d = float((p.detach().double() - b).pow(2).sum())
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
    before = mean_uniform_loss(original, forget_images, support)
    after = mean_uniform_loss(updated, forget_images, support)
    distance, per_layer = parameter_distances(original, updated)
    return bounds_report(
        before, after, distance, per_layer, lam, uniform_minimum(num_classes, support)
    )


def bounds_report(
    before: float,
    after: float,
    distance: float,
    per_layer: dict[str, float],
    lam: float,
    minimum: float,
    start_distance: float = 0.0,
) -> dict:
    """The deviation bounds from L_f(theta_s), L_f(theta), ||theta - theta_a|| and lambda.

    ``theta_s`` is where the run started and ``theta_a`` the anchor point, at distance
    ``start_distance`` from it (0 in the usual case theta_a = theta_s = theta_0). Whenever
    F(theta) <= F(theta_s), (lam/2)||theta - theta_a||^2 <= L_f(theta_s) - L_f(theta)
    + (lam/2) start_distance^2.
    """
    offset = 0.5 * lam * start_distance**2
    objective_before = before + offset
    objective_after = after + 0.5 * lam * distance**2
    # Tolerance for float32 evaluation noise of L_f.
    decreased = objective_after <= objective_before + 1e-6 * max(1.0, abs(objective_before))
    a_priori = math.sqrt(2.0 / lam * max(0.0, before - minimum + offset)) if lam > 0 else None
    final = math.sqrt(2.0 / lam * max(0.0, before - after + offset)) if lam > 0 else None
    # an infinite bound (lam so small that 2 / lam overflows) bounds nothing
    holds = final is not None and math.isfinite(final) and distance <= final * (1 + 1e-6) + 1e-9
    return {
        "lam": lam,
        "uniform_minimum": minimum,
        "uniform_loss_before": before,
        "uniform_loss_after": after,
        "objective_before": objective_before,
        "start_distance": start_distance,
        "objective_after": objective_after,
        "objective_decreased": bool(decreased),
        "distance": distance,
        "distance_per_parameter": per_layer,
        "a_priori_bound": a_priori,
        "final_bound": final,
        "bound_holds": bool(holds),
        "certified": bool(decreased and holds),
    }


@torch.no_grad()
def output_deviation(
    original: nn.Module, updated: nn.Module, images: Tensor, *, batch_size: int = 512
) -> dict:
    """How much the predictions moved on ``images``: KL(p_theta0 || p_theta) and changed labels.

    Returns:
        ``mean_kl``, ``max_kl`` (nats) and ``changed_predictions`` (fraction of arg-max changes).
    """
    kls, changed = [], 0
    original.eval()
    updated.eval()
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        x = to_float(x)
        a, b = original(x).double(), updated(x).double()
        log_a, log_b = torch.log_softmax(a, 1), torch.log_softmax(b, 1)
        kls.append((log_a.exp() * (log_a - log_b)).sum(1))
        changed += int((a.argmax(1) != b.argmax(1)).sum())
    kl = torch.cat(kls)
    return {
        "mean_kl": float(kl.mean()),
        "max_kl": float(kl.max()),
        "changed_predictions": changed / len(images),
    }


@torch.no_grad()
def head_logit_bound(
    original_head: nn.Linear, updated_head: nn.Linear, features: Tensor
) -> dict[str, float]:
    """The exact head-only bound ``|delta logits(x)| <= ||dW||_2 ||phi(x)|| + ||db||``, checked.

    With only the linear classifier moved, ``delta logits(x) = dW phi(x) + db``, so its
    Euclidean norm is at most the spectral norm of dW times ||phi(x)|| plus ||db||.

    Returns:
        ``max_logit_change`` (max over x of ||delta logits||), ``max_bound``, ``holds``
        (every example within its own bound), ``spectral_norm`` of dW, ``bias_change``.
    """
    dw = (updated_head.weight - original_head.weight).double()
    db = torch.zeros(dw.shape[0], dtype=torch.float64)
    if updated_head.bias is not None:
        db = (updated_head.bias - original_head.bias).double()
    phi = features.double()
    change = (phi @ dw.T + db).norm(dim=1)
    spectral = float(torch.linalg.matrix_norm(dw, ord=2))
    bound = spectral * phi.norm(dim=1) + float(db.norm())
    return {
        "max_logit_change": float(change.max()),
        "max_bound": float(bound.max()),
        "holds": bool((change <= bound * (1 + 1e-9) + 1e-12).all()),
        "spectral_norm": spectral,
        "bias_change": float(db.norm()),
    }


def solve_head_exactly(
    head: nn.Linear,
    features: Tensor,
    lam: float,
    support: Tensor | None = None,
    *,
    max_iter: int = 500,
) -> nn.Linear:
    """Minimise F(W, b) = mean CE(u, softmax(W phi + b)) + (lam/2)||(W, b) - (W_0, b_0)||^2 exactly.

    The uniform cross-entropy is convex in the logits, the logits are linear in (W, b), and the
    anchor adds lam I to the Hessian: F is lam-strongly convex with a unique minimiser, found
    here by L-BFGS (strong Wolfe line search) in float64 to gradient norm ~1e-10.

    Returns:
        A new ``nn.Linear`` (float64) at the optimum.
    """
    import copy

    solved = copy.deepcopy(head).double()
    anchor = [p.detach().clone() for p in solved.parameters()]
    phi = features.double()
    opt = torch.optim.LBFGS(
        list(solved.parameters()),
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = uniform_cross_entropy(solved(phi), support)
        loss = loss + 0.5 * lam * sum(
            ((p - a) ** 2).sum() for p, a in zip(solved.parameters(), anchor, strict=True)
        )
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    return solved


def certify(
    original: nn.Module,
    updated: nn.Module,
    forget_images: Tensor,
    lam: float,
    support: Tensor | None,
    num_classes: int,
    *,
    check_images: dict[str, Tensor] | None = None,
    newton: bool | None = None,
    cg_iterations: int = 100,
    anchor: nn.Module | None = None,
) -> dict:
    """The FAMR certificate: deviation bounds, output deviation, and the Newton-step link.

    When only the linear classifier moved, everything is computed from the frozen body's
    features (one forward pass per image set, float64 head arithmetic).

    Args:
        original: theta_0.
        updated: theta after unlearning.
        forget_images: The forget set's images.
        lam: The anchor strength of the run.
        support: The uniform target's support (``None`` = all K classes).
        num_classes: K.
        check_images: ``{name: images}`` on which to report output deviation (e.g. retain and
            test images); the head-only logit bound is checked on them too.
        newton: Compare the achieved displacement with the damped Newton step (default: when
            only the classifier head moved, where it is cheap and the problem is convex).
        cg_iterations: CG iterations for the Newton step.
        anchor: The anchor point theta_a when it is not ``original`` (a sequential request
            anchored to the first model): distances are then measured from it, and the bound
            accounts for the start's own distance from it (no Newton comparison).

    Returns:
        :func:`deviation_certificate`'s fields plus ``head_only``, ``output_deviation`` per
        check set, ``head_logit_bound`` (head-only) and ``newton`` (agreement, objective at the
        Newton step, CG info) where computed.
    """
    from ..features import head_inputs
    from ..models import head_name

    checks = check_images or {}
    start_distance = 0.0
    if anchor is not None:
        start_distance = parameter_distances(anchor, original)[0]
        newton = False
    distance, per_layer = parameter_distances(anchor if anchor is not None else original, updated)
    name = head_name(updated)
    prefix = name + "." if name else ""
    head_only = bool(per_layer) and all(
        n.startswith(prefix) and "." not in n[len(prefix) :] for n in per_layer
    )
    minimum = uniform_minimum(num_classes, support)
    if head_only:
        head0 = original.get_submodule(name)
        head1 = updated.get_submodule(name)
        features = {
            k: head_inputs(original, head0, v).double()
            for k, v in {"forget": forget_images, **checks}.items()
        }
        h0, h1 = _double(head0), _double(head1)
        with torch.no_grad():
            before = float(uniform_cross_entropy(h0(features["forget"]), support))
            after = float(uniform_cross_entropy(h1(features["forget"]), support))
        out = bounds_report(before, after, distance, per_layer, lam, minimum, start_distance)
        out["output_deviation"] = {
            k: _logit_deviation(h0(features[k]), h1(features[k])) for k in checks
        }
        out["head_logit_bound"] = {
            k: head_logit_bound(head0, head1, f) for k, f in features.items()
        }
    else:
        before = mean_uniform_loss(original, forget_images, support)
        after = mean_uniform_loss(updated, forget_images, support)
        out = bounds_report(before, after, distance, per_layer, lam, minimum, start_distance)
        out["output_deviation"] = {
            k: output_deviation(original, updated, v) for k, v in checks.items()
        }
    out["head_only"] = head_only
    if newton is None:
        newton = head_only
    if newton and lam > 0:
        if head_only:
            out["newton"] = _newton_report(
                h0, _double(head1), features["forget"], lam, support, cg_iterations
            )
        else:
            x = to_float(forget_images)
            out["newton"] = _newton_report(original, updated, x, lam, support, cg_iterations)
    return out


def _double(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module).double().eval()


@torch.no_grad()
def _logit_deviation(before: Tensor, after: Tensor) -> dict:
    log_a, log_b = torch.log_softmax(before, 1), torch.log_softmax(after, 1)
    kl = (log_a.exp() * (log_a - log_b)).sum(1)
    changed = (before.argmax(1) != after.argmax(1)).double().mean()
    return {
        "mean_kl": float(kl.mean()),
        "max_kl": float(kl.max()),
        "changed_predictions": float(changed),
    }


def _newton_report(model, target, x, lam, support, cg_iterations) -> dict:
    """Damped Newton step from ``model`` on inputs ``x`` vs the achieved ``target`` parameters."""
    import copy

    def loss_fn(logits, _):
        return uniform_cross_entropy(logits, support)

    model = copy.deepcopy(model).eval()
    names = [n for n, p in model.named_parameters() if p.requires_grad]  # frozen ones stay put
    batches = [(x[i : i + 512], torch.zeros(len(x[i : i + 512]))) for i in range(0, len(x), 512)]
    delta, info = newton_step(model, names, loss_fn, batches, lam, max_iter=cg_iterations)
    report = {
        "cg_iterations": info["iterations"],
        "cg_relative_residual": info["relative_residual"],
        "negative_curvature": info["negative_curvature"],
    }
    if info["negative_curvature"]:
        report["note"] = "H_f + lam I is not positive definite: no Newton prediction"
        return report
    report.update(step_agreement(delta, displacement(model, target, names)))
    with torch.no_grad():
        params = dict(model.named_parameters())
        for n, d in zip(names, delta, strict=True):
            params[n].add_(d.to(params[n].dtype))
        newton_loss = sum(float(loss_fn(model(b), None)) * len(b) for b, _ in batches) / len(x)
    report["objective_at_newton_step"] = newton_loss + 0.5 * lam * float(_dot(delta, delta))
    report["predicted_decrease"] = info["predicted_decrease"]
    return report

"""The exact case: head-only FAMR on frozen features is lam-strongly convex (docs/theory.md §5)."""

import copy
import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import famr
from famr.losses import uniform_cross_entropy
from famr.theory import deviation_certificate, newton_step, solve_head_exactly


def _problem(seed=0, n=40, d=8, k=4):
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(d, k))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(k, d, generator=g) * 2)
        model[1].bias.copy_(torch.randn(k, generator=g))
    x = torch.randn(n, 1, 1, d, generator=g)
    y = torch.zeros(n, dtype=torch.long)
    return model, x, y


def _flat(module):
    return torch.cat([p.detach().double().flatten() for p in module.parameters()])


def test_iterative_famr_converges_to_the_exact_optimum():
    model, x, y = _problem()
    lam = 0.5
    exact = solve_head_exactly(model[1], x.flatten(1), lam)
    result = famr.unlearn(
        model,
        TensorDataset(x, y),
        method="famr",
        lam=lam,
        target="uniform",
        optimizer="sgd",
        momentum=0.9,
        lr=0.05,
        epochs=3000,
        batch_size=40,
    )
    assert torch.allclose(_flat(result.model[1]), _flat(exact), atol=1e-4)


@pytest.mark.science
def test_newton_step_error_falls_like_lambda_to_the_minus_three():
    model, x, _ = _problem(seed=1)
    head = copy.deepcopy(model[1]).double()
    phi = x.flatten(1).double()
    errors, lams = [], [20.0, 40.0, 80.0, 160.0, 320.0]
    for lam in lams:
        exact = _flat(solve_head_exactly(model[1], phi, lam)) - _flat(head)
        delta, info = newton_step(
            head,
            ["weight", "bias"],
            lambda z, _: uniform_cross_entropy(z),
            [(phi, torch.zeros(len(phi)))],
            lam,
            tol=1e-12,
        )
        assert not info["negative_curvature"]
        errors.append(float((torch.cat([d.flatten() for d in delta]) - exact).norm()))
    slope = torch.linalg.lstsq(
        torch.tensor([[math.log(v), 1.0] for v in lams], dtype=torch.float64),
        torch.tensor([math.log(e) for e in errors], dtype=torch.float64)[:, None],
    ).solution[0, 0]
    assert -3.5 <= float(slope) <= -2.5, (errors, float(slope))


@pytest.mark.science
def test_famr_newton_method_matches_the_exact_optimum_at_large_lambda():
    model, x, y = _problem(seed=2)
    lam = 200.0
    exact = _flat(solve_head_exactly(model[1], x.flatten(1), lam)) - _flat(model[1])
    result = famr.unlearn(
        model, TensorDataset(x, y), method="famr_newton", lam=lam, target="uniform"
    )
    achieved = _flat(result.model[1]) - _flat(model[1])
    assert float((achieved - exact).norm() / exact.norm()) < 1e-3
    assert result.certificate["certified"]


@pytest.mark.science
def test_bound_holds_on_every_decreasing_iterate():
    model, x, _ = _problem(seed=3)
    lam = 0.3
    phi = x.flatten(1)
    iterate = copy.deepcopy(model)
    opt = torch.optim.SGD(iterate[1].parameters(), lr=0.05)
    anchor = [p.detach().clone() for p in model[1].parameters()]
    checked = 0
    for _ in range(200):
        opt.zero_grad()
        loss = uniform_cross_entropy(iterate[1](phi)) + 0.5 * lam * sum(
            ((p - a) ** 2).sum() for p, a in zip(iterate[1].parameters(), anchor, strict=True)
        )
        loss.backward()
        opt.step()
        cert = deviation_certificate(model, iterate, x, lam, None, 4)
        if cert["objective_decreased"]:
            assert cert["bound_holds"] and cert["distance"] <= cert["a_priori_bound"] + 1e-9
            checked += 1
    assert checked == 200  # full-batch gradient descent with a small step decreases F every step


def test_negative_curvature_is_reported_by_famr_newton():
    # a deep, confident network at tiny lambda: H_f + lam I is indefinite for the full network
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)
    )
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4)
    x = torch.randn(30, 1, 1, 6)
    y = torch.zeros(30, dtype=torch.long)
    with pytest.raises(famr.DivergenceError, match="not positive definite"):
        famr.unlearn(
            model,
            TensorDataset(x, y),
            method="famr_newton",
            lam=1e-6,
            params="all",
            target="uniform",
            cg_iterations=300,
        )


def test_newton_step_is_exact_on_a_quadratic():
    # least squares on a linear model: L is quadratic, so one damped Newton step lands exactly
    # on argmin L(theta) + (lam/2)||theta - theta_0||^2, whose closed form is a linear solve
    torch.manual_seed(0)
    x = torch.randn(30, 5, dtype=torch.float64)
    t = torch.randn(30, 2, dtype=torch.float64)
    model = nn.Linear(5, 2, bias=False).double()
    w0 = model.weight.detach().clone()
    lam = 0.3

    def loss_fn(out, target):
        return 0.5 * ((out - target) ** 2).sum(1).mean()

    delta, info = newton_step(model, ["weight"], loss_fn, [(x, t)], lam, tol=1e-14)
    # closed form: (X^T X / n + lam I) W^T = X^T T / n + lam W0^T
    n = len(x)
    w_star = torch.linalg.solve(
        x.T @ x / n + lam * torch.eye(5, dtype=torch.float64), x.T @ t / n + lam * w0.T
    ).T
    torch.testing.assert_close(w0 + delta[0], w_star)
    assert info["converged"]

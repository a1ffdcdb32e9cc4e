"""Hessian-vector products and conjugate gradients against dense computations."""

import pytest
import torch
from torch import nn

from famr.losses import cross_entropy
from famr.theory import conjugate_gradient, loss_hvp, mean_gradient


def _tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x = torch.randn(10, 1, 2, 3, dtype=torch.float64)
    y = torch.arange(10) % 3
    return model, [(x[:6], y[:6]), (x[6:], y[6:])]


def test_hvp_matches_dense_hessian():
    model, batches = _tiny()
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach().clone() for _, p in model.named_parameters()]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]

    def flat_loss(flat):
        chunks = torch.split(flat, sizes)
        state = {n: c.view(s) for n, c, s in zip(names, chunks, shapes, strict=True)}
        return cross_entropy(torch.func.functional_call(model, state, (x,)), y)

    dense = torch.autograd.functional.hessian(flat_loss, torch.cat([p.flatten() for p in params]))
    v = torch.randn(dense.shape[0], dtype=torch.float64)
    hv = loss_hvp(model, names, cross_entropy, batches)(
        tuple(c.view(s) for c, s in zip(torch.split(v, sizes), shapes, strict=True))
    )
    torch.testing.assert_close(torch.cat([h.flatten() for h in hv]), dense @ v)


def test_hvp_matches_finite_differences_of_the_gradient():
    model, batches = _tiny()
    names = ["3.weight", "3.bias"]
    params = dict(model.named_parameters())
    v = tuple(torch.randn_like(params[n]) for n in names)
    hv = loss_hvp(model, names, cross_entropy, batches)(v)
    eps = 1e-5
    with torch.no_grad():
        for n, d in zip(names, v, strict=True):
            params[n].add_(eps * d)
    g_plus = mean_gradient(model, names, cross_entropy, batches)
    with torch.no_grad():
        for n, d in zip(names, v, strict=True):
            params[n].sub_(2 * eps * d)
    g_minus = mean_gradient(model, names, cross_entropy, batches)
    for h, a, b in zip(hv, g_plus, g_minus, strict=True):
        torch.testing.assert_close(h, (a - b) / (2 * eps), rtol=1e-5, atol=1e-7)


def test_conjugate_gradient_matches_dense_solve():
    torch.manual_seed(0)
    m = torch.randn(8, 8, dtype=torch.float64)
    a = m @ m.T + 0.1 * torch.eye(8, dtype=torch.float64)
    b = torch.randn(8, dtype=torch.float64)
    x, info = conjugate_gradient(lambda v: (a @ v[0],), (b,), damping=0.5, max_iter=100, tol=1e-12)
    expected = torch.linalg.solve(a + 0.5 * torch.eye(8, dtype=torch.float64), b)
    torch.testing.assert_close(x[0], expected)
    assert info["converged"] and not info["negative_curvature"]


def test_conjugate_gradient_reports_negative_curvature():
    a = torch.diag(torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))
    b = torch.ones(3, dtype=torch.float64)
    _, info = conjugate_gradient(lambda v: (a @ v[0],), (b,), max_iter=10)
    assert info["negative_curvature"] and not info["converged"]
    _, damped = conjugate_gradient(lambda v: (a @ v[0],), (b,), damping=2.5, max_iter=10, tol=1e-10)
    assert damped["converged"] and not damped["negative_curvature"]


@pytest.mark.parametrize("n", [1, 3])
def test_conjugate_gradient_exact_in_n_steps_for_rank_n(n):
    a = torch.diag(torch.tensor([2.0] * n + [0.0] * (5 - n), dtype=torch.float64)) + torch.eye(
        5, dtype=torch.float64
    )
    b = torch.ones(5, dtype=torch.float64)
    x, info = conjugate_gradient(lambda v: (a @ v[0],), (b,), max_iter=50, tol=1e-12)
    assert info["iterations"] <= 2  # two distinct eigenvalues: CG converges in two steps
    torch.testing.assert_close(x[0], torch.linalg.solve(a, b))

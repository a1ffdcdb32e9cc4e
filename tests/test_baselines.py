"""Method-specific checks of the baselines (the registry-wide contract is in test_methods.py)."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import famr
from famr.methods import MethodData
from famr.methods.salun import SalUnConfig, saliency_mask


@pytest.mark.science
def test_salun_mask_holds_against_momentum_and_weight_decay(tiny):
    model, forget, retain = tiny
    result = famr.unlearn(
        model,
        forget,
        retain,
        method="salun",
        fraction=0.3,
        momentum=0.9,
        weight_decay=0.1,
        lr=0.05,
        epochs=3,
    )
    before = dict(model.named_parameters())
    data = MethodData(forget.tensors, retain.tensors, 4, [0])
    mask = saliency_mask(model, data, SalUnConfig(fraction=0.3))  # the mask salun computed
    moved_outside = 0
    moved_inside = 0
    for name, p in result.model.named_parameters():
        changed = p != before[name]
        moved_outside += int((changed & ~mask[name]).sum())
        moved_inside += int((changed & mask[name]).sum())
    assert moved_outside == 0
    assert moved_inside > 0


def test_salun_mask_selects_the_requested_fraction(tiny):
    model, forget, retain = tiny
    data = MethodData(forget.tensors, retain.tensors, 4, [0])
    mask = saliency_mask(model, data, SalUnConfig(fraction=0.25))
    total = sum(m.numel() for m in mask.values())
    chosen = sum(int(m.sum()) for m in mask.values())
    assert chosen == pytest.approx(0.25 * total, rel=0.05)


def test_scrub_student_changes_and_teacher_is_untouched(tiny):
    model, forget, retain = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = famr.unlearn(model, forget, retain, method="scrub", epochs=2, max_epochs=1, lr=0.01)
    assert any(not torch.equal(v, before[k]) for k, v in result.model.state_dict().items())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert "forget_kl" in result.history[0] and "forget_kl" not in result.history[1]


def test_scrub_counts_its_phases(tiny):
    model, forget, retain = tiny  # 16 forget, 48 retain
    totals = []
    famr.unlearn(
        model,
        forget,
        retain,
        method="scrub",
        epochs=3,
        max_epochs=2,
        batch_size=16,
        progress=lambda s, t: totals.append(t),
    )
    assert totals[-1] == 2 * 1 + 3 * 3 == len(totals)


def test_l1_weight_decays_linearly_to_zero(tiny):
    model, forget, retain = tiny
    result = famr.unlearn(
        model, forget, retain, method="l1_sparse", epochs=4, l1=1e-3, batch_size=48
    )
    weights = [h["l1_weight"] for h in result.history]  # one step per epoch: gamma = l1 (1 - t/T)
    assert weights == pytest.approx([1e-3, 0.75e-3, 0.5e-3, 0.25e-3])


def test_ssd_only_shrinks_weights(tiny):
    model, forget, retain = tiny
    result = famr.unlearn(model, forget, retain, method="ssd", alpha=1.0)
    before = dict(model.named_parameters())
    for name, p in result.model.named_parameters():
        assert bool((p.abs() <= before[name].abs() + 1e-12).all()), name
    assert result.history[0]["selected"] > 0


def test_uniform_kl_is_famr_with_lambda_zero(tiny):
    model, forget, _ = tiny
    a = famr.unlearn(model, forget, method="uniform_kl", epochs=2)
    b = famr.unlearn(
        model,
        forget,
        method="famr",
        lam=0.0,
        target="uniform",
        params="all",
        optimizer="sgd",
        lr=1e-3,
        epochs=2,
    )
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.science
def test_influence_moves_towards_the_retain_only_optimum():
    # convex problem: logistic regression on fixed features; retrain-only optimum by L-BFGS
    torch.manual_seed(0)
    x = torch.randn(200, 1, 1, 5)
    w_true = torch.randn(5, 3)
    y = (x.flatten(1) @ w_true).argmax(1)
    forget_mask = torch.arange(200) < 20
    model = nn.Sequential(nn.Flatten(), nn.Linear(5, 3))

    def fit(m, xs, ys):
        opt = torch.optim.LBFGS(
            m.parameters(), lr=1, max_iter=500, tolerance_grad=1e-10, tolerance_change=1e-12
        )
        wd = 1e-2

        def closure():
            opt.zero_grad()
            loss = nn.functional.cross_entropy(m(xs), ys) + wd / 2 * sum(
                (p**2).sum() for p in m.parameters()
            )
            loss.backward()
            return loss

        opt.step(closure)
        return m

    fit(model, x, y)
    retrained = fit(nn.Sequential(nn.Flatten(), nn.Linear(5, 3)), x[~forget_mask], y[~forget_mask])
    target = torch.cat([p.flatten() for p in retrained.parameters()])
    start = torch.cat([p.detach().flatten() for p in model.parameters()])
    result = famr.unlearn(
        model,
        TensorDataset(x[forget_mask], y[forget_mask]),
        TensorDataset(x[~forget_mask], y[~forget_mask]),
        method="influence",
        weight_decay=1e-2,
        damping=1e-6,
        hessian_samples=180,
        cg_iterations=100,
    )
    moved = torch.cat([p.detach().flatten() for p in result.model.parameters()])
    assert (moved - target).norm() < 0.5 * (start - target).norm()

import math

import pytest
import torch

from famr.losses import (
    add_anchor_gradient_,
    anchor_penalty,
    cross_entropy,
    kl_from_reference,
    squared_distance,
    uniform_cross_entropy,
    uniform_minimum,
)


def test_uniform_ce_is_log_k_at_uniform_prediction():
    logits = torch.zeros(5, 10)
    assert uniform_cross_entropy(logits).item() == pytest.approx(math.log(10), abs=1e-6)


def test_uniform_ce_hand_computed_case():
    # p = softmax([0, log 3]) = (1/4, 3/4); CE(u, p) = -(log 1/4 + log 3/4) / 2
    logits = torch.tensor([[0.0, math.log(3.0)]])
    expected = -(math.log(0.25) + math.log(0.75)) / 2
    assert uniform_cross_entropy(logits).item() == pytest.approx(expected, rel=1e-6)


def test_uniform_ce_with_support_ignores_excluded_classes():
    # support {1, 2}: p = softmax([5, 0, 0]); CE = -(log p1 + log p2) / 2 = -log p1
    logits = torch.tensor([[5.0, 0.0, 0.0]])
    p1 = 1.0 / (math.exp(5.0) + 2.0)
    support = torch.tensor([False, True, True])
    assert uniform_cross_entropy(logits, support).item() == pytest.approx(-math.log(p1), rel=1e-6)
    assert uniform_minimum(3, support) == pytest.approx(math.log(2))


def test_uniform_ce_minimum_is_reached_only_at_uniform():
    torch.manual_seed(0)
    logits = torch.randn(100, 7) * 3
    assert (uniform_cross_entropy(logits) > math.log(7)).item()


def test_uniform_ce_of_confident_model_is_large():
    logits = torch.tensor([[30.0, 0.0, 0.0, 0.0]])
    assert uniform_cross_entropy(logits).item() == pytest.approx(30 * 3 / 4, rel=1e-3)


def test_cross_entropy_and_kl_known_answers():
    logits = torch.tensor([[0.0, 0.0]])
    assert cross_entropy(logits, torch.tensor([1])).item() == pytest.approx(math.log(2))
    assert kl_from_reference(logits, logits).item() == pytest.approx(0.0, abs=1e-7)
    ref = torch.tensor([[0.0, math.log(3.0)]])  # p_ref = (1/4, 3/4), p = (1/2, 1/2)
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert kl_from_reference(logits, ref).item() == pytest.approx(expected, rel=1e-6)


def test_kl_on_a_support_renormalises_the_reference_known_answer():
    # reference softmax = (1/6, 2/6, 3/6); without class 2 it is (1/3, 2/3)
    ref = torch.log(torch.tensor([[1.0, 2.0, 3.0]]))
    logits = torch.zeros(1, 3)  # p = (1/3, 1/3, 1/3)
    support = torch.tensor([True, True, False])
    expected = (1 / 3) * math.log((1 / 3) / (1 / 3)) + (2 / 3) * math.log((2 / 3) / (1 / 3))
    assert kl_from_reference(logits, ref, support).item() == pytest.approx(expected, rel=1e-6)
    # a model that gives the removed class no mass and matches the renormalised rest scores 0
    matched = torch.log(torch.tensor([[1.0, 2.0, 1e-30]]))
    assert kl_from_reference(matched, ref, support).item() == pytest.approx(0.0, abs=1e-6)
    # and its gradient pushes the removed class's logit down
    logits.requires_grad_(True)
    kl_from_reference(logits, ref, support).backward()
    assert logits.grad[0, 2].item() > 0


def test_label_smoothed_cross_entropy_known_answer():
    # p = softmax([0, log 3]) = (1/4, 3/4); smoothing 0.2 over K = 2: target (0.1, 0.9) for label 1
    logits = torch.tensor([[0.0, math.log(3.0)]])
    expected = -(0.1 * math.log(0.25) + 0.9 * math.log(0.75))
    got = cross_entropy(logits, torch.tensor([1]), label_smoothing=0.2).item()
    assert got == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("bad", [-0.1, 1.0, float("nan")])
def test_train_config_refuses_bad_label_smoothing(bad):
    from famr.config import TrainConfig

    with pytest.raises(ValueError, match="label_smoothing=.* must be in \\[0, 1\\)"):
        TrainConfig(label_smoothing=bad)


def test_anchor_penalty_known_answer():
    p = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    r = [torch.tensor([0.0, 0.0]), torch.tensor([[1.0]])]
    # ||.||^2 = 1 + 4 + 4 = 9
    assert anchor_penalty(p, r, lam=2.0).item() == pytest.approx(9.0)
    assert squared_distance(p, r).item() == pytest.approx(9.0)


def test_fused_anchor_gradient_equals_autograd_of_plain_formula():
    torch.manual_seed(0)
    params = [torch.randn(3, 4, requires_grad=True), torch.randn(5, requires_grad=True)]
    reference = [p.detach() + torch.randn_like(p) for p in params]
    lam = 0.7
    anchor_penalty(params, reference, lam).backward()
    autograd = [p.grad.clone() for p in params]
    for p in params:
        p.grad = torch.randn_like(p)  # an existing loss gradient must be added to, not replaced
    existing = [p.grad.clone() for p in params]
    add_anchor_gradient_(params, reference, lam)
    for p, a, e in zip(params, autograd, existing, strict=True):
        torch.testing.assert_close(p.grad, e + a)

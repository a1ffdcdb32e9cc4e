"""The deviation certificate: its bound must hold on every run that decreases F."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import TensorDataset

import famr
from famr.theory import deviation_certificate, mean_uniform_loss


def _head_problem(seed, k, d=5, n=20):
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(d, k))
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(k, d, generator=g) * 3)
    x = torch.randn(n, d, generator=g)
    y = torch.zeros(n, dtype=torch.long)
    return model, TensorDataset(x, y)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(2, 6),
    lam=st.floats(0.01, 10.0),
    lr=st.floats(1e-3, 0.1),
    target=st.sampled_from(["uniform", "retained"]),
)
@pytest.mark.science
def test_bound_holds_whenever_the_objective_decreased(seed, k, lam, lr, target):
    model, forget = _head_problem(seed, k)
    result = famr.unlearn(
        model,
        forget,
        method="famr",
        lam=lam,
        lr=lr,
        epochs=5,
        batch_size=8,
        params="all",
        target=target,
        device="cpu",
        forget_classes=[0],
    )
    cert = result.certificate
    if cert["objective_decreased"]:
        assert cert["distance"] <= cert["final_bound"] * (1 + 1e-5) + 1e-7
        assert cert["final_bound"] <= cert["a_priori_bound"] + 1e-9
        assert cert["certified"]
    assert cert["uniform_loss_after"] >= cert["uniform_minimum"] - 1e-6


def test_certificate_known_answer_on_a_hand_built_case():
    # one-logit-pair model: at theta_0 = 0 the prediction is uniform (L_f = log 2 = minimum)
    model = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    moved = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        moved.weight.copy_(torch.tensor([[1.0], [0.0]]))
    x = torch.ones(3, 1)
    cert = deviation_certificate(model, moved, x, lam=1.0, support=None, num_classes=2)
    assert cert["uniform_loss_before"] == pytest.approx(math.log(2))
    assert cert["distance"] == pytest.approx(1.0)
    assert cert["a_priori_bound"] == pytest.approx(0.0, abs=1e-3)  # sqrt of float32 noise
    assert not cert["objective_decreased"] and not cert["certified"]


def test_mean_uniform_loss_matches_direct_computation():
    model, forget = _head_problem(0, 4)
    x, _ = forget.tensors
    direct = -torch.log_softmax(model(x), 1).mean().item()
    assert mean_uniform_loss(model, x, None, batch_size=7) == pytest.approx(direct, rel=1e-6)


def test_certificate_losses_scale_uint8_images_like_training():
    # uint8 images (the CIFAR data path) must be evaluated as x / 255, as in training
    torch.manual_seed(0)
    model = famr.create_model("small_cnn", 4, in_channels=3, width=4).eval()
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    assert mean_uniform_loss(model, images, None) == pytest.approx(
        mean_uniform_loss(model, images.float() / 255.0, None), rel=1e-6
    )

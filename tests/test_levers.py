"""Each FAMR option is a real lever: changing it changes what the run does."""

import math

import pytest
import torch
from torch.utils.data import TensorDataset

import famr

pytestmark = pytest.mark.science  # thresholds on trained models: rerun under AVX2


def _weights(result):
    return torch.cat([p.detach().flatten() for p in result.model.parameters()])


@pytest.mark.parametrize(
    "change",
    [
        {"lam": 5.0},
        {"optimizer": "sgd"},
        {"lr": 0.001},
        {"grad_clip": 0.01},
        {"epochs": 1},
        {"max_steps": 1},
        {"batch_size": 3},
        {"params": "all"},
        {"target": "uniform"},
        {"batchnorm": "train", "params": "all"},
        {"seed": 5, "batch_size": 4},
        {"bf16": True},
    ],
)
def test_each_option_changes_the_result(tiny, change):
    model, forget, _ = tiny
    base = famr.unlearn(model, forget, method="famr", epochs=3, device="cpu", forget_classes=[0])
    other = famr.unlearn(
        model, forget, method="famr", device="cpu", forget_classes=[0], **{"epochs": 3, **change}
    )
    assert not torch.equal(_weights(base), _weights(other)), change


def test_grad_clip_bounds_a_plain_sgd_step():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    forget = TensorDataset(torch.randn(8, 1, 2, 2) * 10, torch.zeros(8, dtype=torch.long))
    result = famr.unlearn(
        model,
        forget,
        method="famr",
        optimizer="sgd",
        momentum=0.0,
        lr=1.0,
        grad_clip=0.01,
        max_steps=1,
        batch_size=8,
        lam=0.0,
        params="all",
        forget_classes=[0],
    )
    assert result.history[-1]["distance"] == pytest.approx(0.01, rel=1e-4)


def test_target_retained_drives_forgotten_probability_to_zero_uniform_to_one_over_k(
    digits_model, digits_splits
):
    x, _ = digits_splits.forget.tensors

    def mean_prob(target):
        r = famr.unlearn(
            digits_model,
            digits_splits,
            method="famr",
            recipe="head",  # FAMR's uniform-prediction term (no retain data)
            target=target,
            lam=0.0,
            epochs=60,
        )
        return torch.softmax(r.model(x), 1)[:, 3].mean().item()

    assert mean_prob("retained") < 0.02
    assert mean_prob("uniform") == pytest.approx(0.1, abs=0.03)


def test_params_head_leaves_the_body_alone(tiny):
    model, forget, _ = tiny
    result = famr.unlearn(model, forget, method="famr", params="head", epochs=2, forget_classes=[0])
    moved = {
        n
        for n, p in result.model.named_parameters()
        if not torch.equal(p, dict(model.named_parameters())[n])
    }
    assert moved == {"classifier.weight", "classifier.bias"}


def test_larger_lambda_moves_less(tiny):
    model, forget, _ = tiny
    d = [
        famr.unlearn(model, forget, lam=lam, epochs=5, forget_classes=[0]).certificate["distance"]
        for lam in (0.01, 1.0, 100.0)
    ]
    assert d[0] > d[1] > d[2]


def test_epochs_and_batch_size_set_the_number_of_steps(tiny):
    model, forget, _ = tiny  # 16 forget images
    steps = []
    famr.unlearn(
        model,
        forget,
        epochs=3,
        batch_size=5,
        forget_classes=[0],
        progress=lambda s, t: steps.append(t),
    )
    assert steps[-1] == 3 * math.ceil(16 / 5) and len(steps) == steps[-1]


def test_bad_device_is_refused(tiny):
    model, forget, _ = tiny
    with pytest.raises(ValueError, match="device='tpu9'"):
        famr.unlearn(model, forget, device="tpu9")

"""Science tests for requests beyond one class, on the real digits data."""

from __future__ import annotations

import pytest
import torch

import famr
from famr.data import hold_out_validation


@pytest.fixture(scope="module")
def random_request():
    data = hold_out_validation(famr.load_dataset("digits"), 0.2, seed=0)
    torch.manual_seed(0)
    net = famr.create_model("small_cnn", 10, in_channels=1, width=16)
    model = famr.train(net, data.train, epochs=15, seed=0).model
    splits = famr.RandomForget(0.1, seed=0).split(data.train, data.test, 10)
    retrained = famr.unlearn(model, splits.forget, splits.retain, method="retrain", epochs=15)
    return data, model, splits, retrained.model


def _metrics(model, splits, reference=None):
    return famr.evaluate(
        model,
        forget=splits.forget,
        retain=splits.retain,
        test_retain=splits.test_retain,
        reference=reference,
    )


def test_matched_stopping_lands_nearer_the_retrained_model(random_request):
    data, model, splits, retrained = random_request
    reference = _metrics(retrained, splits)
    pushed = famr.unlearn(model, splits.forget, method="famr", forget_classes=[])
    matched = famr.unlearn(
        model, splits.forget, method="famr_matched", forget_classes=[], holdout=data.validation
    )
    pushed_m = _metrics(pushed.model, splits, reference)
    matched_m = _metrics(matched.model, splits, reference)
    # pushing random samples to uniform over-forgets: they stand out to the attack
    assert pushed_m["mia_efficacy"] > reference["mia_efficacy"] + 20
    assert matched_m["mia_gap"] < pushed_m["mia_gap"] / 2
    assert matched_m["avg_gap"] < pushed_m["avg_gap"]
    assert matched.history[-1]["stopped_at"] >= 1  # the rule ended the run
    assert matched.history[-1]["forget_confidence"] <= matched.history[-1]["holdout_confidence"]
    assert matched.certificate["certified"]


def test_matched_needs_holdout(random_request):
    _, model, splits, _ = random_request
    with pytest.raises(ValueError, match="needs holdout data"):
        famr.unlearn(model, splits.forget, method="famr_matched")

"""Sequential requests: the anchor option and the certificate it carries."""

from __future__ import annotations

import contextlib
import io as stdio
import json
import math

import pytest
import torch

import famr
from famr import io
from famr.cli import main
from famr.theory import bounds_report, parameter_distances

pytestmark = pytest.mark.science  # thresholds on trained models: rerun under AVX2


def run(argv):
    """Run the CLI quietly and require success."""
    with contextlib.redirect_stdout(stdio.StringIO()):
        assert main([*argv, "--quiet"]) == 0


def test_bounds_with_a_start_away_from_the_anchor_known_answer():
    # (lam/2)||theta - theta_a||^2 <= L(theta_s) - L(theta) + (lam/2) d_s^2 = 1 + 1
    report = bounds_report(2.0, 1.0, 1.2, {}, 2.0, 0.5, start_distance=1.0)
    assert report["final_bound"] == pytest.approx(math.sqrt(2.0))
    assert report["a_priori_bound"] == pytest.approx(math.sqrt(1.5 + 1.0))
    assert report["objective_before"] == pytest.approx(3.0)
    assert report["certified"] is True
    assert bounds_report(2.0, 1.0, 1.5, {}, 2.0, 0.5, start_distance=1.0)["certified"] is False


@pytest.fixture(scope="module")
def two_digit_splits(digits):
    return [famr.ClassForget(c).split(digits.train, digits.test, 10) for c in (3, 5)]


@pytest.mark.parametrize("method", ["famr", "famr_literal"])
def test_anchor_at_the_input_is_the_default(digits_model, two_digit_splits, method):
    request = two_digit_splits[0].forget  # no retain set: famr's anchored head recipe
    run = dict(method=method, epochs=2, forget_classes=[3])
    default = famr.unlearn(digits_model, request, **run)
    explicit = famr.unlearn(digits_model, request, anchor=digits_model, **run)
    for a, b in zip(default.model.parameters(), explicit.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert default.certificate["distance"] == explicit.certificate["distance"]


def test_second_request_anchored_to_the_original(digits_model, two_digit_splits):
    first, second = two_digit_splits
    step1 = famr.unlearn(digits_model, first.forget, method="famr_literal", lam=1.0, epochs=3)
    step2 = famr.unlearn(
        step1.model, second.forget, method="famr_literal", lam=1.0, epochs=3, anchor=digits_model
    )
    c = step2.certificate
    d_start = parameter_distances(digits_model, step1.model)[0]
    assert c["start_distance"] == pytest.approx(d_start)
    assert c["distance"] == pytest.approx(parameter_distances(digits_model, step2.model)[0])
    assert c["certified"] and c["distance"] <= c["final_bound"]
    # the loop's logged distance is measured from the anchor too
    assert step2.history[-1]["distance"] == pytest.approx(c["distance"], rel=1e-4)


def test_a_strong_anchor_pulls_back_towards_the_original(digits_model, two_digit_splits):
    first, second = two_digit_splits
    step1 = famr.unlearn(digits_model, first.forget, method="famr_literal", lam=0.1, epochs=5)
    away = parameter_distances(digits_model, step1.model)[0]
    common = dict(method="famr_literal", lam=100.0, epochs=5, lr=1e-3)
    to_original = famr.unlearn(step1.model, second.forget, anchor=digits_model, **common)
    to_previous = famr.unlearn(step1.model, second.forget, **common)
    assert parameter_distances(digits_model, to_original.model)[0] < away
    assert (
        parameter_distances(digits_model, to_previous.model)[0]
        > parameter_distances(digits_model, to_original.model)[0]
    )


def test_anchor_must_match_the_model(digits_model, two_digit_splits, tiny):
    other, _, _ = tiny
    with pytest.raises(ValueError, match="anchor model's parameters do not match"):
        famr.unlearn(digits_model, two_digit_splits[0], anchor=other, epochs=1)


@pytest.mark.parametrize("anchor_to_original", [False, True])
def test_cli_sequential_requests_compose_their_bounds(tmp_path, anchor_to_original):
    original = tmp_path / "original.safetensors"
    run(["train", "--epochs", "4", "--out", str(original)])
    first, second = tmp_path / "first.safetensors", tmp_path / "second.safetensors"
    common = ["forget", "--method", "famr_literal", "--lam", "1", "--epochs", "2"]
    run([*common, "--checkpoint", str(original), "--classes", "3", "--out", str(first)])
    # anchored to the original, the second step takes the cumulative request
    extra = ["--anchor", str(original), "--classes", "3,5"] if anchor_to_original else []
    extra = extra or ["--classes", "5"]
    run([*common, "--checkpoint", str(first), "--out", str(second), *extra])
    chain = json.loads(second.with_suffix(".audit.json").read_text())["deviation_chain"]
    steps = chain["steps"]
    assert chain["origin_sha256"] == io.sha256_file(original) and len(steps) == 2
    expected = steps[1]["bound"] if anchor_to_original else steps[0]["bound"] + steps[1]["bound"]
    assert chain["bound"] == pytest.approx(expected)
    distance = parameter_distances(io.load_checkpoint(original)[0], io.load_checkpoint(second)[0])
    assert distance[0] <= chain["bound"]


def test_cli_second_request_keeps_the_first_class_forgotten(tmp_path, digits):
    original = tmp_path / "original.safetensors"
    run(["train", "--epochs", "8", "--out", str(original)])
    first, second = tmp_path / "first.safetensors", tmp_path / "second.safetensors"
    run(["forget", "--checkpoint", str(original), "--classes", "3", "--out", str(first)])
    run(["forget", "--checkpoint", str(first), "--classes", "5", "--out", str(second)])
    assert json.loads(io.sidecar_path(second).read_text())["forgotten_classes"] == [3, 5]
    model, _ = io.load_checkpoint(second)
    threes = famr.ClassForget(3).split(digits.train, digits.test, 10).test_forget
    # the second request's "retained" target leaves class 3 out, so it stays forgotten
    assert (
        famr.evaluate(model, test_forget=threes, metrics=["test_forget_acc"])["test_forget_acc"]
        <= 5.0
    )

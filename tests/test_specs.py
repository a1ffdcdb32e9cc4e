"""Forget specs: what they select, what they refuse, how they round-trip."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest
import torch
from torch.utils.data import TensorDataset

import famr
from famr.data import RandomForget, SampleForget, forget_spec_from_dict, indices_sha256
from famr.methods.famr_auto import FamrRecipeWarning

# --- forget specs ------------------------------------------------------------------------


def _toy(n=20):
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1)
    y = torch.arange(n) % 4
    return TensorDataset(x, y), TensorDataset(x[:8], y[:8])


def test_sample_forget_splits_exactly_the_given_indices():
    train, test = _toy()
    splits = SampleForget([7, 2, 11]).split(train, test, 4)
    assert splits.forget_indices.tolist() == [2, 7, 11]
    assert splits.forget.tensors[0].flatten().tolist() == [2.0, 7.0, 11.0]
    assert len(splits.retain) == 17 and 7.0 not in splits.retain.tensors[0].flatten().tolist()
    assert splits.test_forget is None and len(splits.test_retain) == 8
    assert splits.forget_classes == []  # no class is removed: every class stays retained


@pytest.mark.parametrize(
    ("indices", "match"),
    [
        ([], "no example to forget"),
        ([3, 3], "index 3 is listed more than once"),
        ([5, 20], "index 20 is out of range; valid indices: 0..19"),
        ([-1], "index -1 is out of range"),
        (list(range(20)), "forgetting all 20 training examples"),
    ],
)
def test_sample_forget_rejects_bad_indices(indices, match):
    train, test = _toy()
    with pytest.raises(ValueError, match=match):
        SampleForget(indices).split(train, test, 4)


@pytest.mark.parametrize("bad", [2.5, True, "x", None])
def test_non_integer_indices_and_classes_are_refused(bad):
    with pytest.raises(ValueError, match="is not an integer"):
        SampleForget([1, bad])
    with pytest.raises(ValueError, match="is not an integer"):
        famr.ClassForget([1, bad])


def test_random_forget_is_reproducible_and_sized():
    train, test = _toy(200)
    a = RandomForget(0.1, seed=3).split(train, test, 4).forget_indices
    b = RandomForget(0.1, seed=3).split(train, test, 4).forget_indices
    c = RandomForget(0.1, seed=4).split(train, test, 4).forget_indices
    assert len(a) == 20 and torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5, 1.5, float("nan"), float("inf")])
def test_random_forget_rejects_bad_fractions(fraction):
    with pytest.raises(ValueError, match="random fraction"):
        RandomForget(fraction).validate()


def test_indices_hash_known_answer_and_order_free():
    expected = hashlib.sha256(struct.pack("<3q", 1, 5, 9)).hexdigest()
    assert indices_sha256([9, 1, 5]) == expected == indices_sha256(torch.tensor([5, 9, 1]))
    assert indices_sha256([1, 5, 10]) != expected


@pytest.mark.parametrize(
    "spec", [famr.ClassForget([1, 3]), SampleForget([4, 0]), RandomForget(0.25, seed=2)]
)
def test_specs_round_trip_through_json(spec):
    again = forget_spec_from_dict(json.loads(json.dumps(spec.to_dict())))
    train, test = _toy()
    assert torch.equal(
        again.split(train, test, 4).forget_indices, spec.split(train, test, 4).forget_indices
    )


def test_class_spec_indices_are_that_class():
    train, test = _toy()
    splits = famr.ClassForget(2).split(train, test, 4)
    assert splits.forget_indices.tolist() == [2, 6, 10, 14, 18]


def test_retained_target_refuses_a_sample_request_instead_of_degrading_the_model(
    digits, digits_model
):
    """Issue 19, item 6: FAMR's no-retain target on a sample request used to become a silent
    uniform push over all classes (test accuracy 99.6 -> 49.7 %); that recipe now refuses,
    with what to give instead, while the request object, which carries the retain set, is
    taken by famr's last_stage recipe."""
    splits = RandomForget(0.05, seed=0).split(digits.train, digits.test, digits.num_classes)
    common = dict(method="famr", epochs=2, certificate=False)
    head = dict(common, recipe="head")
    with pytest.raises(ValueError, match="removes no whole class.*famr. with the retain set"):
        famr.unlearn(digits_model, splits.forget, forget_classes=[], **common)
    with pytest.raises(ValueError, match="removes no whole class"):
        famr.unlearn(digits_model, splits, **head)
    with pytest.raises(ValueError, match="removes no whole class"):
        famr.unlearn(digits_model, splits, method="famr_newton", certificate=False)
    # a plain forget set alone cannot say what it is: the caller must
    with pytest.raises(ValueError, match="must know which classes the request removes"):
        famr.unlearn(digits_model, splits.forget, **common)
    # with a retain set that still holds the forget set's classes, it is not a class request
    with pytest.raises(ValueError, match="also appear in the retain set"):
        famr.unlearn(digits_model, splits.forget, splits.retain, **common)
    with pytest.warns(FamrRecipeWarning, match="random-share request without held-out data"):
        assert famr.unlearn(digits_model, splits, **common).config.recipe == "last_stage"
    # the uniform push is still there when asked for by name
    uniform = famr.unlearn(digits_model, splits, target="uniform", **head)
    assert uniform.moved == ["classifier.weight", "classifier.bias"]

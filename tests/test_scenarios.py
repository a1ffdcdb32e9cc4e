"""Science tests for requests beyond one class, on the real digits data."""

from __future__ import annotations

import math

import pytest
import torch

import famr
from famr.data import hold_out_validation
from famr.methods.famr_quantile import true_label_outputs

pytestmark = pytest.mark.science  # thresholds on trained models: rerun under AVX2


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


def _unlearn_samples(request, method, **overrides):
    """``method`` on the random request's forget and retain sets, the validation split held out."""
    data, model, splits, _ = request
    return famr.unlearn(
        model,
        splits.forget,
        splits.retain,
        method=method,
        forget_classes=[],
        holdout=data.validation,
        **overrides,
    )


def test_true_label_statistic_known_answers():
    from famr.methods.famr_quantile import true_label_statistic

    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0], [0.0, math.log(4.0)]])
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        net[1].weight.copy_(logits.T)  # one-hot image i gives logits[i]
    images, labels = torch.eye(3).view(3, 1, 1, 3), torch.tensor([0, 0, 0])
    # true-label probabilities 3/4, 1/2 and 1/5; the top prediction is right for the first
    # two (the tie in the second goes to the first index, as torch.argmax documents)
    confidence = true_label_statistic(net, images, labels, batch=2)
    assert confidence == pytest.approx((0.75 + 0.5 + 0.2) / 3, abs=1e-6)
    assert true_label_statistic(net, images, labels, statistic="accuracy") == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="statistic='median'.*confidence"):
        famr.unlearn(
            net,
            torch.utils.data.TensorDataset(images, labels),
            torch.utils.data.TensorDataset(images, labels),
            method="famr_quantile",
            holdout=torch.utils.data.TensorDataset(images, labels),
            statistic="median",
        )


def test_quantile_needs_holdout(random_request):
    _, model, splits, _ = random_request
    with pytest.raises(ValueError, match="'famr_quantile' needs holdout data"):
        famr.unlearn(model, splits.forget, splits.retain, method="famr_quantile")


# --- concept and style --------------------------------------------------------------------

from famr.data import DIGITS_COARSE, add_style, coarsen, sketch  # noqa: E402


def test_coarsen_relabels_by_group(digits):
    coarse = coarsen(digits, DIGITS_COARSE)
    y = coarse.data.train.tensors[1]
    expected = torch.tensor([0, 1, 2, 2, 1, 2, 0, 1, 0, 0])[coarse.fine_train]
    assert torch.equal(y, expected) and coarse.data.class_names == list(DIGITS_COARSE)
    with pytest.raises(ValueError, match="exactly once"):
        coarsen(digits, {"a": (0, 1), "b": (1, 2)})


def test_concept_forget_removes_one_fine_class_inside_its_group(digits):
    coarse = coarsen(digits, DIGITS_COARSE)
    spec = famr.ConceptForget(8, coarse.fine_train, coarse.fine_test, name="eight")
    splits = spec.split(coarse.data.train, coarse.data.test, 3)
    assert torch.equal(splits.forget_indices, torch.nonzero(coarse.fine_train == 8).flatten())
    assert set(splits.forget.tensors[1].tolist()) == {0}  # eights are "loops"
    assert len(splits.test_forget) == int((coarse.fine_test == 8).sum())
    assert splits.forget_classes == []  # "loops" stays a class
    with pytest.raises(ValueError, match="whole coarse class"):
        solo = coarsen(digits, {"eight": (8,), "rest": (0, 1, 2, 3, 4, 5, 6, 7, 9)})
        famr.ConceptForget(8, solo.fine_train, solo.fine_test).split(
            solo.data.train, solo.data.test, 2
        )


def test_sketch_known_answers():
    flat = torch.full((1, 3, 6, 6), 0.3)
    assert torch.equal(sketch(flat), torch.ones(1, 3, 6, 6))  # no edge: white paper
    step = torch.zeros(1, 1, 6, 6)
    step[..., 3:] = 1.0
    out = sketch(step)[0, 0]
    assert out[:, 2:4].max() < 0.01 and torch.equal(out[:, 0], torch.ones(6))  # dark stroke
    as_bytes = sketch((step * 255).to(torch.uint8).expand(-1, 3, -1, -1))
    assert as_bytes.dtype == torch.uint8 and as_bytes[0, :, :, 0].eq(255).all()


def test_add_style_renders_a_seeded_fraction(digits):
    a = add_style(digits, 0.25, seed=1)
    b = add_style(digits, 0.25, seed=1)
    assert torch.equal(a.styled_train, b.styled_train)
    share = float(a.styled_train.float().mean())
    assert 0.2 < share < 0.3
    x0, y0 = digits.train.tensors
    x1, y1 = a.data.train.tensors
    assert torch.equal(y0, y1) and torch.equal(x0[~a.styled_train], x1[~a.styled_train])
    assert not torch.equal(x0[a.styled_train], x1[a.styled_train])
    splits = famr.StyleForget(a.styled_train, a.styled_test).split(a.data.train, a.data.test, 10)
    assert len(splits.forget) == int(a.styled_train.sum())
    assert len(splits.test_forget) == int(a.styled_test.sum())


def test_concept_forgetting_science(digits):
    """Eights stop being "loops" while 0, 6 and 9 still are (real digits)."""
    coarse = coarsen(digits, DIGITS_COARSE)
    torch.manual_seed(0)
    net = famr.create_model("small_cnn", 3, in_channels=1, width=16)
    model = famr.train(net, coarse.data.train, epochs=15, seed=0).model
    spec = famr.ConceptForget(8, coarse.fine_train, coarse.fine_test)
    splits = spec.split(coarse.data.train, coarse.data.test, 3)
    siblings = torch.isin(coarse.fine_test, torch.tensor([0, 6, 9]))
    tx, ty = coarse.data.test.tensors
    sibling_set = torch.utils.data.TensorDataset(tx[siblings], ty[siblings])

    def accuracies(m):
        out = famr.evaluate(
            m,
            test_forget=splits.test_forget,
            test_retain=sibling_set,
            metrics=["test_forget_acc", "test_retain_acc"],
        )
        return out["test_forget_acc"], out["test_retain_acc"]

    before_concept, before_siblings = accuracies(model)
    torch.manual_seed(1)
    retrained = famr.unlearn(model, splits.forget, splits.retain, method="retrain", epochs=15)
    retrain_concept, _ = accuracies(retrained.model)
    common = dict(forget_classes=splits.forget_classes)
    with pytest.raises(ValueError, match="removes no whole class"):  # the default refuses
        famr.unlearn(model, splits.forget, method="famr", **common)
    alone = famr.unlearn(model, splits.forget, method="famr", target="uniform", **common)
    guarded = famr.unlearn(model, splits.forget, splits.retain, method="famr_retain", **common)
    alone_concept, alone_siblings = accuracies(alone.model)
    guarded_concept, guarded_siblings = accuracies(guarded.model)
    # a model retrained without eights still calls many of them "loops" (they look like 0/6/9)
    assert before_concept > 95 and 40 < retrain_concept < 90
    # with a retain buffer (which holds the siblings) famr lands near the retrained model and
    # the siblings stay "loops"
    assert abs(guarded_concept - retrain_concept) < 15
    assert guarded_siblings > before_siblings - 10
    # without retain data the uniform target over-forgets and drags the siblings along
    assert alone_concept < retrain_concept - 20 and alone_siblings < guarded_siblings - 20


@pytest.mark.parametrize(
    ("data_flags", "what", "method"),
    [
        (["--coarse", "digits"], ["--concept", "8"], "famr_retain"),
        # random labels cost digits more than --max-retain-drop: kept only with --write-anyway
        (["--style", "sketch:0.2"], ["--forget-style", "--write-anyway"], "random_label"),
    ],
)
def test_cli_concept_and_style_requests_verify(tmp_path, data_flags, what, method):
    import contextlib
    import io as stdio
    import json

    from famr.cli import main

    def run(argv):
        with contextlib.redirect_stdout(stdio.StringIO()):
            return main([*argv, "--quiet"] if argv[0] != "verify" else argv)

    model, out = tmp_path / "m.safetensors", tmp_path / "f.safetensors"
    assert run(["train", *data_flags, "--epochs", "4", "--out", str(model)]) == 0
    argv = ["forget", *data_flags, *what, "--method", method, "--epochs", "2"]
    assert run([*argv, "--checkpoint", str(model), "--out", str(out)]) == 0
    record = json.loads(out.with_suffix(".audit.json").read_text())
    assert record["request"]["forget"]["kind"] in ("concept", "style")
    assert run(["verify", str(out.with_suffix(".audit.json"))]) == 0
    # without the data flags the request cannot be formed: a one-line usage error
    assert (
        run(
            [*argv[:1], *what, "--checkpoint", str(model), "--out", str(tmp_path / "x.safetensors")]
        )
        == 2
    )


def test_quantile_targets_known_answers():
    from famr.methods.famr_quantile import confidence_map, matched_targets

    # forget confidences 0.2..0.8 (mid-rank quantiles 1/8, 3/8, 5/8, 7/8) onto held-out 0, 0.5, 1
    transport = confidence_map(torch.tensor([0.8, 0.2, 0.6, 0.4]), torch.tensor([1.0, 0.0, 0.5]))
    got = transport(torch.tensor([0.2, 0.5, 0.8]))
    assert got.tolist() == pytest.approx([0.125, 0.5, 0.875], abs=1e-6)
    targets = matched_targets(torch.tensor([1, 0]), torch.tensor([0.4, 1.0 / 3]), 3)
    expected = torch.tensor([[0.3, 0.4, 0.3], [1 / 3, 1 / 3, 1 / 3]])
    assert torch.allclose(targets, expected, atol=1e-6)
    # off the label in proportion to the original's other classes: 0.6 split 1:3; a reference
    # with all its mass on the label falls back to the even split
    reference = torch.tensor([[0.1, 0.6, 0.3], [1.0, 0.0, 0.0]])
    targets = matched_targets(torch.tensor([1, 0]), torch.tensor([0.4, 0.2]), 3, reference)
    expected = torch.tensor([[0.15, 0.4, 0.45], [0.2, 0.4, 0.4]])
    assert torch.allclose(targets, expected, atol=1e-6)
    # a low target confidence now moves the top class off the label, as held-out errors do
    assert targets[0].argmax() == 2


def test_quantile_stops_at_the_held_out_accuracy(random_request):
    splits = random_request[2]
    result = _unlearn_samples(random_request, "famr_quantile", lr=5e-4, check_every=1)
    last = result.history[-1]
    # the forget set started above the held-out accuracy and the rule stopped the run there
    assert last["forget_level_start"] > last["holdout_level"]
    assert last["stopped_at"] >= 1 and last["forget_level"] <= last["holdout_level"]
    # the rule's measurement is the forget accuracy that evaluate reports
    metrics = _metrics(result.model, splits)
    assert metrics["forget_acc"] == pytest.approx(
        100 * last["forget_level"], abs=1e-4
    )  # float32 mean vs float64: one image is ~1 point


def test_quantile_defaults_move_the_forget_set_toward_held_out_the_l2_anchored_form_does_not(
    random_request,
):
    """On digits the forget set starts at 100 % accuracy and the held-out level is 98.8-99.2 %
    (the trained model itself differs by kernel), so whether the accuracy rule fires within 25
    epochs turns on one or two images: it fired with AVX-512 kernels and not with AVX2 ones
    (issue 16). The confidence is what moves steadily, so that is what this test asserts.

    Measured with AVX-512, AVX2 and default ATen kernels, 1 and 2 threads (six settings): the
    defaults close 0.70-0.76 of the distance from the forget set's starting mean confidence to
    the held-out one, the l2-anchored form 0.23-0.24; avg gap default 1.36-1.90 vs anchored
    2.35-2.60 (smallest difference 0.45).
    """
    data, model, splits, retrained = random_request
    reference = _metrics(retrained, splits)
    default = _unlearn_samples(random_request, "famr_quantile")  # lam 0, beta 0.3
    # the defaults before the CIFAR-10 probes
    anchored = _unlearn_samples(random_request, "famr_quantile", lam=0.1, beta=10.0)
    held_out = true_label_outputs(model, *data.validation.tensors)[0].double().mean()
    start = true_label_outputs(model, *splits.forget.tensors)[0].double().mean()

    def closed(result) -> float:
        end = true_label_outputs(result.model, *splits.forget.tensors)[0].double().mean()
        return float((start - end) / (start - held_out))

    assert start > held_out + 0.01  # there is a distance to close (measured 0.96 vs 0.94)
    assert closed(default) >= 0.5 and closed(anchored) <= 0.4
    # held short of the level by the anchor: the run ends at the epoch cap, not by the rule
    assert anchored.history[-1].get("stopped_at") is None
    gap = _metrics(default.model, splits, reference)["avg_gap"]
    assert gap < _metrics(anchored.model, splits, reference)["avg_gap"]

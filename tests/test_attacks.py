"""The attacks: known answers, equivalence with a direct transcription, and the science on
real data (a head-only edit keeps the features; a retrained model's are different)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import famr
from famr.attacks import ATTACKS, AttackData, attack
from famr.attacks.epsilon import (
    DELTA,
    bin_edges,
    challenge_score,
    epsilon_report,
    example_epsilon,
    forget_quality,
    logit_confidence,
    points,
)
from famr.data import hold_out_validation
from famr.loop import select_parameters
from famr.presets import PRESETS

# --- the epsilon score: known answers ---------------------------------------------------


def test_identical_samples_score_best_and_disjoint_ones_worst():
    sample = np.random.default_rng(0).normal(size=16)
    assert example_epsilon(sample, sample.copy()) == 0.0
    assert example_epsilon(sample, sample + 100.0) == 50.0
    n = 16
    assert forget_quality(np.array([0.0, 0.0]), n) == 1.0
    assert forget_quality(np.array([50.0, 50.0]), n) == 0.0


def test_a_constant_unlearned_sample_is_peaky_and_scores_nothing():
    """A deterministic method under the challenge's protocol: N equal values per example."""
    spread = np.random.default_rng(1).normal(size=16)
    assert example_epsilon(np.full(16, spread.mean()), spread) == 50.0
    assert example_epsilon(np.full(8, 2.0), np.full(8, 2.0)) == 0.0
    assert example_epsilon(np.full(8, 2.0), np.full(8, 3.0)) == 50.0


def test_a_hand_computed_epsilon():
    """U = {0, 0, 1}, R = {1, 1, 0}: the best attacks err on a third of each side, so
    epsilon = log(1 - delta - 1/3) - log(1/3) = ln(2 - 3 delta); with N = 3 the bins end at
    ceil(ln 2) = 1, and 0.693 lies in the second bin: half a point."""
    eps = example_epsilon(np.array([0.0, 0.0, 1.0]), np.array([1.0, 1.0, 0.0]))
    assert eps == pytest.approx(math.log(2 - 3 * DELTA), abs=1e-12)
    assert bin_edges(3).tolist() == [0.5, 1.0]
    assert points(np.array([eps]), 3).tolist() == [0.5]


def test_bins_and_points_follow_the_scoring_code():
    assert len(bin_edges(512)) == 14 and bin_edges(512)[-1] == 7.0  # ceil(ln 511) = 7
    assert len(bin_edges(256)) == 12 and len(bin_edges(100)) == 10
    got = points(np.array([0.0, 0.49, 0.5, 0.99, 1.0, 6.9, 7.0, 50.0]), 512)
    assert got.tolist() == [1, 1, 0.5, 0.5, 0.25, 2 / 2**14, 0, 0]
    assert challenge_score(0.5, [90, 92], [91, 91], [80], [82]) == pytest.approx(
        0.5 * (91 / 91) * (80 / 82)
    )


def _direct_epsilon(u: np.ndarray, r: np.ndarray, delta: float = DELTA) -> float:
    """A literal transcription: every attack compared with every value (no sorting or binary
    search), the error rates pooled, the same rules. Slow; for the equivalence test."""
    pos, neg = (r, u) if np.median(r) > np.median(u) else (u, r)
    if min(np.ptp(pos), np.ptp(neg)) / max(np.ptp(pos), np.ptp(neg)) < 0.01:
        return 50.0
    lo, hi = min(pos.min(), neg.min()), max(pos.max(), neg.max())
    rates = []
    for t in np.linspace(lo, hi, math.ceil((hi - lo) * 100)):
        rates.append((np.mean(neg >= t), 1 - np.mean(pos >= t)))
    narrow, wide = (pos, neg) if np.ptp(pos) < np.ptp(neg) else (neg, pos)
    w = np.ptp(narrow)
    for right in np.linspace(narrow.min() + w - 2, narrow.max() + 2, 400):
        lefts = np.linspace(right - w - 2, right - w + 2, 400)[:, None]  # every value compared
        inside_n = ((narrow >= lefts) & (narrow <= right)).mean(axis=1)
        inside_w = ((wide >= lefts) & (wide <= right)).mean(axis=1)
        rates.extend(zip(inside_w.tolist(), (1 - inside_n).tolist(), strict=True))
    best = -math.inf
    for fpr, fnr in rates:
        if fpr + fnr == 0:
            return 50.0
        if fpr * fnr == 0:
            continue
        values = [
            math.log(1 - delta - fpr) - math.log(fnr) if 1 - delta - fpr > 0 else -math.inf,
            math.log(1 - delta - fnr) - math.log(fpr) if 1 - delta - fnr > 0 else -math.inf,
        ]
        best = max(best, max(0.0, max(values)))
    return min(best, 50.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_epsilon_equals_the_direct_transcription(seed):
    rng = np.random.default_rng(seed)
    u, r = rng.normal(size=6), rng.normal(loc=0.7, scale=1.3, size=6)
    assert example_epsilon(u, r) == pytest.approx(_direct_epsilon(u, r), abs=1e-12)


def test_logit_confidence_is_exact_where_float32_saturates():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [200.0, 0.0]])
    labels = torch.tensor([0, 0, 0])
    got = logit_confidence(logits, labels)
    # p = 1/2 -> 0; p = 3/4 -> log 3; a margin of 200 nats is 200 (not capped near 103.6)
    assert got.tolist() == pytest.approx([0.0, math.log(3.0), 200.0])


def test_epsilon_report_of_models_against_themselves():
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (5,))
    models = [torch.randn(5, 3) for _ in range(8)]
    same = epsilon_report(models, models, labels, retain_acc=([90], [90]), test_acc=([80], [80]))
    assert same["forget_quality"] == 1.0 and same["score"] == 1.0
    assert sum(same["histogram"]) == 5 and same["histogram"][0] == 5
    frozen = epsilon_report([models[0]] * 8, models, labels)  # a deterministic method
    assert frozen["forget_quality"] == 0.0 and frozen["peaky_or_separated"] == 1.0


# --- linear probe and relearning ---------------------------------------------------------


@pytest.fixture(scope="module")
def digits_request():
    data = hold_out_validation(famr.load_dataset("digits"), 0.2, seed=0)
    splits = famr.ClassForget(3).split(data.train, data.test, 10)
    torch.manual_seed(0)
    net = famr.create_model("small_cnn", 10, in_channels=1, width=16)
    model = famr.train(net, data.train, epochs=15, seed=0).model
    retrained = famr.unlearn(model, splits, method="retrain", epochs=15).model
    return data, splits, model, retrained


def test_attacks_are_registered_with_their_contract():
    assert {"linear_probe", "relearn"} <= set(famr.list_attacks())
    for entry in ATTACKS:
        assert entry.meta["direction"] and entry.meta["retrain"] and entry.obj.__doc__
        assert entry.meta["values"].endswith("_")  # its values' prefix (famr.attacks.attack_values)
    with pytest.raises(ValueError, match="'probe_t' overlaps attack 'linear_probe'"):
        famr.register_attack(
            "other", config=object, needs=(), values="probe_t", direction="", retrain=""
        )
    with pytest.raises(ValueError, match="values must be a non-empty prefix"):
        famr.register_attack(
            "nameless", config=object, needs=(), values="", direction="", retrain=""
        )


@pytest.mark.science
def test_a_head_only_edit_keeps_the_probe_exactly_and_relearns_fast(digits_request):
    """famr without retain data (its head recipe) edits the classifier only: the features,
    hence the probe, are the
    original's to the last bit, and 30 relearning steps bring the digit back; the retrained
    model stays far lower. Measured (AVX-512, AVX2 and default kernels, 1 and 2 threads):
    relearned digit 3 after 30 steps famr 96.4 %, retrained 1.8 %; probe original 98.2 %."""
    data, splits, model, retrained = digits_request
    given = AttackData(splits, data.validation, original=model)
    edited = famr.unlearn(model, splits, method="famr", recipe="head").model
    original_r, edited_r, retrained_r = (attack(m, given) for m in (model, edited, retrained))
    for key in ("probe_test_forget_acc", "probe_test_acc", "probe_forget_acc"):
        assert edited_r[key] == original_r[key]
    assert edited_r["relearn_start_acc"] <= 5 and retrained_r["relearn_start_acc"] <= 5
    assert edited_r["relearn_forget_acc"] >= 50 and retrained_r["relearn_forget_acc"] <= 20
    assert retrained_r["relearn_steps_to_half"] is None and edited_r["relearn_steps_to_half"] <= 30
    assert len(edited_r["relearn_curve"]) == 30


@pytest.mark.science
def test_re_initialising_the_last_stage_forgets_in_the_weights(digits_request):
    """famr with the request's retain set (its last_stage recipe): the body's last stage and
    the head re-initialised and trained again on the retain buffer alone (the original's
    predictions without the digit; the forget set unread): the
    relearning attack finds the digit no more than on the retrained model, where the head-only
    edit gives it back. Measured (AVX-512, 2 threads, at the digits preset, 3 passes at
    temperature 4, 2026-12-07; the same at the earlier distilled forget target and feature
    pull): relearned 0.0 % (retrained 1.8 %, head-only famr 96.4 %), retained test accuracy
    99.0 % (original 98.8 %)."""
    data, splits, model, _ = digits_request
    # famr at the demo's preset: the last_stage recipe (params="last_stage_but_first",
    # reset=True, retain_target="retained", forget_target="none", batchnorm="moved", SGD
    # one-cycle, distillation temperature 4)
    result = famr.unlearn(model, splits, **PRESETS["digits"]["famr"])
    assert result.config.recipe == "last_stage"
    stage = {n for n, _ in select_parameters(model, "last_stage")}
    assert set(result.moved) <= stage and "features.3.0.weight" in result.moved
    before, after = dict(model.named_parameters()), dict(result.model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before if n not in stage)
    scores = attack(result.model, AttackData(splits, data.validation, original=model))
    assert scores["relearn_start_acc"] == 0.0 and scores["relearn_forget_acc"] <= 20
    metrics = famr.evaluate(
        result.model, test_retain=splits.test_retain, metrics=["test_retain_acc"], device="cpu"
    )
    assert metrics["test_retain_acc"] >= 95


def test_attacks_do_not_modify_the_model_and_say_what_they_need(digits_request):
    data, splits, model, _ = digits_request
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = attack(model, AttackData(splits), config={"relearn": {"steps": 2}})
    assert "relearn_forget_acc" in result and "probe_test_acc" not in result  # no probe data
    assert all(k.startswith(ATTACKS.get("relearn").meta["values"]) for k in result)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="needs \\['probe_train'\\]"):
        attack(model, AttackData(splits), attacks=["linear_probe"])
    with pytest.raises(ValueError, match="steps=0 is not valid"):
        attack(model, AttackData(splits), config={"relearn": {"steps": 0}})
    for bad, says in [
        ({"forget_fraction": 0.0}, "forget_fraction=0.0"),
        ({"batchnorm": "bogus"}, "batchnorm='bogus'"),
        ({"lr": (0.01, -1.0)}, "lr=-1.0"),
    ]:
        with pytest.raises(ValueError, match=re.escape(says)):
            attack(model, AttackData(splits), config={"relearn": bad})
    with pytest.raises(ValueError, match="unknown attack"):
        attack(model, AttackData(splits), attacks=["lira"])


def test_relearning_at_several_rates_reports_the_strongest_run(digits_request):
    """Several learning rates: one run each, the same numbers as running each rate alone, and
    the strongest (highest final accuracy) reported, with the rate that reached it."""
    # the original, which knows the digit: a small rate keeps it (96.4 %), a rate far too
    # large wrecks it (0.0 %), on AVX-512 and AVX2 alike; the retrained model's relearning at a
    # middle rate is chaotic (0 % or 78 % after 5 steps, by the CPU's kernels), so it cannot
    # tell the two runs apart
    data, splits, model, _ = digits_request
    given = AttackData(splits)
    alone = {
        rate: attack(model, given, ["relearn"], config={"relearn": {"lr": rate, "steps": 5}})
        for rate in (0.01, 30.0)
    }
    both = attack(model, given, ["relearn"], config={"relearn": {"lr": (0.01, 30.0), "steps": 5}})
    finals = {rate: r["relearn_forget_acc"] for rate, r in alone.items()}
    assert both["relearn_by_lr"] == {str(rate): acc for rate, acc in finals.items()}
    best = max(finals, key=finals.get)
    assert finals[0.01] >= 90 > finals[30.0]  # the two rates differ, so the choice is tested
    assert both["relearn_lr"] == best and both["relearn_curve"] == alone[best]["relearn_curve"]
    assert "relearn_lr" not in alone[0.01]  # one rate: reported as before


def test_relearning_measured_on_a_seeded_sample_of_the_measured_images(digits_request):
    """eval_limit: the accuracy is read on a seeded sample, drawn after the relearning images
    (so the relearning itself is unchanged): the same numbers as the attack without a limit on
    a request whose test images are that sample; a limit at least the set's size changes
    nothing, to the bit."""
    import dataclasses

    from famr.data.tensors import to_tensors

    # the original, whose accuracy on the digit is measured (the retrained model's stays at 0 %
    # on some kernels, where a sample and the whole set cannot differ)
    _, splits, model, _ = digits_request
    cfg = {"steps": 5, "lr": 0.01}
    full = attack(model, AttackData(splits), ["relearn"], config={"relearn": cfg})
    tx, ty = to_tensors(splits.test_forget)
    same = attack(
        model,
        AttackData(splits),
        ["relearn"],
        config={"relearn": {**cfg, "eval_limit": 10_000}},
    )
    assert same == full and full["relearn_eval_images"] == len(ty)
    limit = 20
    sampled = attack(
        model, AttackData(splits), ["relearn"], config={"relearn": {**cfg, "eval_limit": limit}}
    )
    # the attack's draws: forget order, retained extras, then the sample of the measured images
    generator = torch.Generator().manual_seed(0)
    torch.randperm(len(to_tensors(splits.forget)[1]), generator=generator)
    torch.randperm(len(to_tensors(splits.retain)[1]), generator=generator)
    chosen = torch.randperm(len(ty), generator=generator)[:limit]
    subset = dataclasses.replace(
        splits, test_forget=torch.utils.data.TensorDataset(tx[chosen], ty[chosen])
    )
    expected = attack(model, AttackData(subset), ["relearn"], config={"relearn": cfg})
    assert sampled == expected and sampled["relearn_eval_images"] == limit
    assert sampled["relearn_curve"] != full["relearn_curve"]  # the sample is what is measured
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match=re.escape(f"eval_limit={bad!r}")):
            attack(model, AttackData(splits), ["relearn"], config={"relearn": {"eval_limit": bad}})


@pytest.mark.science
def test_sample_requests_are_measured_on_unused_forget_images(digits_request):
    data, _, model, _ = digits_request
    splits = famr.RandomForget(0.1, seed=0).split(data.train, data.test, 10)
    result = attack(model, AttackData(splits, data.validation), config={"relearn": {"steps": 2}})
    assert result["relearn_forget_images"] == 10 and "probe_test_forget_acc" not in result
    assert result["probe_forget_acc"] > 90  # training images, seen by this model


def test_probe_on_a_named_layer(digits_request):
    data, splits, model, _ = digits_request
    layer = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)][-1]
    out = attack(
        model,
        AttackData(splits, data.validation),
        attacks=["linear_probe"],
        config={"linear_probe": {"layer": layer}},
    )
    assert 0 <= out["probe_test_forget_acc"] <= 100
    with pytest.raises(ValueError, match="not a submodule"):
        attack(
            model,
            AttackData(splits, data.validation),
            attacks=["linear_probe"],
            config={"linear_probe": {"layer": "nope"}},
        )


# --- CIFAR-10-shaped real data ----------------------------------------------------------

LOSSLESS = "../shared/data/cifar10-lossless-subset/cifar10_train_first4000_lossless.npz"


@pytest.mark.science
def test_probe_separates_a_head_edit_from_retraining_on_cifar10_images():
    """4,000 original CIFAR-10 images (skipped when the shared data is absent): forgetting
    cats, the head-only edit's probe equals the original's exactly, the retrained model's is
    lower. Measured with AVX-512, AVX2 and default kernels, 1 and 2 threads: probe on the 55
    test cats original 25.5-29.1 %, retrained 3.6-14.5 %, the difference 12.7-23.6 points; the
    test asks for 5."""
    import os

    path = os.path.join(os.path.dirname(__file__), "..", LOSSLESS)
    if not os.path.exists(path):
        pytest.skip("shared CIFAR-10 subset not present")
    arrays = np.load(path)
    images = torch.from_numpy(arrays["images"]).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(arrays["labels"]).long()
    train = TensorDataset(images[:2800], labels[:2800])
    validation = TensorDataset(images[2800:3400], labels[2800:3400])
    test = TensorDataset(images[3400:], labels[3400:])
    splits = famr.ClassForget(3).split(train, test, 10)  # cats
    torch.manual_seed(0)
    net = famr.create_model("small_cnn", 10, in_channels=3, width=16)
    common = dict(epochs=10, seed=0, augment="crop_flip")
    model = famr.train(net, train, **common).model
    retrained = famr.unlearn(model, splits, method="retrain", **common).model
    edited = famr.unlearn(model, splits, method="famr", recipe="head").model
    given = AttackData(splits, validation)
    probe = {
        name: attack(m, given, attacks=["linear_probe"])["probe_test_forget_acc"]
        for name, m in (("original", model), ("edited", edited), ("retrained", retrained))
    }
    assert probe["edited"] == probe["original"]
    assert probe["retrained"] < probe["original"] - 5, probe


# --- the command line ---------------------------------------------------------------------


def test_cli_attack_writes_json_markdown_and_plot(tmp_path):
    import contextlib
    import io as stdio
    import json

    from famr.cli import main

    def run(argv):
        out, err = stdio.StringIO(), stdio.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return main(argv), out.getvalue(), err.getvalue()

    m, r, f = (tmp_path / f"{n}.safetensors" for n in ("m", "r", "f"))
    common = ["--validation", "0.2", "--epochs", "6", "--quiet"]
    assert run(["train", *common, "--out", str(m)])[0] == 0
    assert run(["train", *common, "--exclude-classes", "3", "--out", str(r)])[0] == 0
    forget = ["forget", "--checkpoint", str(m), "--classes", "3", "--out", str(f), "--quiet"]
    forget += ["--set", "recipe=head"]  # famr without the retain set's last_stage recipe
    assert run(forget)[0] == 0
    meta = json.loads(f.with_suffix(".json").read_text())
    assert meta["validation"] == {"fraction": 0.2, "seed": 0}
    record = json.loads(f.with_suffix(".audit.json").read_text())
    assert record["request"]["validation"] == {"fraction": 0.2, "seed": 0}
    assert run(["verify", str(f.with_suffix(".audit.json"))])[0] == 0
    argv = ["attack", "--unlearned", str(f), "--original", str(m), "--retrained", str(r)]
    sets = ["--set", "relearn.steps=5", "--set", "relearn.lr=0.01,0.1"]  # two rates
    code, out, err = run([*argv, *sets, "--out", str(tmp_path / "a")])
    assert code == 0, err
    payload = json.loads((tmp_path / "a" / "attack.json").read_text())
    assert set(payload["results"]) == {"original", "retrained", "unlearned"}
    assert payload["request"] == {"kind": "classes", "classes": [3]}  # from the metadata
    assert len(payload["results"]["unlearned"]["relearn_curve"]) == 5
    assert set(payload["results"]["unlearned"]["relearn_by_lr"]) == {"0.01", "0.1"}
    # famr's default edits the head only: the unlearned features are the original's
    assert (
        payload["results"]["unlearned"]["probe_test_forget_acc"]
        == payload["results"]["original"]["probe_test_forget_acc"]
    )
    assert "| probe: forgotten class, test images (%) |" in out
    assert (tmp_path / "a" / "attack.png").stat().st_size > 1000
    # without a validation split the probe cannot run: one line, what to do
    plain = tmp_path / "plain.safetensors"
    assert run(["train", "--epochs", "2", "--quiet", "--out", str(plain)])[0] == 0
    code, _, err = run(
        [
            "attack",
            "--unlearned",
            str(plain),
            "--original",
            str(plain),
            "--classes",
            "3",
            "--out",
            str(tmp_path / "b"),
        ]
    )
    assert code == 2 and "famr train --validation" in err and not (tmp_path / "b").exists()
    code, _, err = run(
        ["attack", "--unlearned", str(f), "--original", str(plain), "--out", str(tmp_path / "c")]
    )
    assert code == 2 and "different validation splits" in err


def test_relearning_edge_cases_and_unequal_populations(digits_request):
    data, _, model, _ = digits_request
    one = famr.SampleForget([0]).split(data.train, data.test, 10)
    with pytest.raises(ValueError, match="at least 2 forget examples"):
        attack(model, AttackData(one), attacks=["relearn"])
    with pytest.raises(ValueError, match="N models on each side"):
        from famr.attacks.epsilon import epsilons

        epsilons(np.zeros((4, 3)), np.zeros((5, 3)))


def test_probe_options_from_the_command_line_are_parsed():
    from famr.attacks.probe import ProbeConfig

    assert ProbeConfig(cs="0.1,1").cs == (0.1, 1.0) and ProbeConfig(cs=2).cs == (2.0,)
    for bad in ("x", "0,1", -1):
        with pytest.raises(ValueError, match="cs="):
            ProbeConfig(cs=bad)
    with pytest.raises(ValueError, match="seed=-1"):
        ProbeConfig(seed=-1)

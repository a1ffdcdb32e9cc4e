"""Choosing configurations on the validation split (famr.experiment): the selection rule's
known answers and a study on digits."""

import re

import pytest

from famr.data import hold_out_validation, per_class_subset
from famr.experiment import choose_config, choose_configs, validation_study


def test_the_study_choice_is_the_lowest_score_or_the_smallest_drop_under_the_ceiling():
    rows = {  # config name -> (val forget acc, val retain drop, seconds)
        "a": (0.5, 3.0, 1.0),  # under the ceiling, larger drop
        "b": (0.8, 1.5, 5.0),  # under the ceiling, smallest drop: chosen with a ceiling
        "c": (2.0, 0.0, 1.0),  # lowest score (2.0): chosen without one
        "d": (1.5, 0.5, 0.5),  # the same score as c but faster: ties go to the faster
    }
    configs = [{"name": n} for n in rows]

    def mean(key, config):
        forget, drop, seconds = rows[config["name"]]
        return {"val_forget_acc": forget, "val_retain_drop": drop, "seconds": seconds}.get(
            key, forget + drop
        )

    assert choose_config(configs, mean) == {"name": "d"}
    assert choose_config(configs, mean, ceiling=1.0) == {"name": "b"}
    assert choose_config(configs, mean, ceiling=0.1) == {"name": "d"}  # none meets it


def test_under_a_ceiling_relearning_counts_beside_the_retained_drop():
    rows = {"a": (0.0, 1.0, 60.0), "b": (0.0, 3.0, 5.0)}  # forget, drop, relearned

    def mean(key, config):
        forget, drop, relearned = rows[config["name"]]
        return {"val_forget_acc": forget, "val_retain_drop": drop, "val_relearned": relearned}.get(
            key, 1.0
        )

    configs = [{"name": n} for n in rows]
    assert choose_config(configs, mean, ceiling=1.0) == {"name": "b"}  # 3 + 5 < 1 + 60


def _attack_means(rows):
    """``mean(key, config)`` over ``{name: (forget, drop, relearned, probe)}`` (1.0 for any
    other key)."""

    def mean(key, config):
        forget, drop, relearned, probe = rows[config["name"]]
        values = {"val_forget_acc": forget, "val_retain_drop": drop, "val_relearned": relearned}
        return (values | {"val_probe": probe}).get(key, 1.0)

    return mean


def test_under_a_ceiling_the_probe_counts_and_one_standard_error_is_a_tie():
    """The cost is val retain drop + val relearned + val probe; within one standard error of
    the lowest cost (the tolerance) the smallest drop + relearned wins."""
    rows = {  # forget, drop, relearned, probe
        "a": (0.0, 0.2, 0.0, 70.0),  # smallest drop, but the probe finds 8 points more
        "b": (0.0, 1.5, 0.0, 62.0),  # lowest cost: 63.5
        "c": (0.0, 1.0, 0.0, 63.5),  # cost 64.5: within 2 points of b's, a smaller drop
    }

    mean = _attack_means(rows)
    configs = [{"name": n} for n in rows]
    assert choose_config(configs, mean, ceiling=1.0) == {"name": "b"}
    assert choose_config(configs, mean, ceiling=1.0, standard_error=lambda c: 0.5) == {"name": "b"}
    assert choose_config(configs, mean, ceiling=1.0, standard_error=lambda c: 2.0) == {"name": "c"}
    assert choose_config(configs, mean, ceiling=1.0, standard_error=lambda c: 9.0) == {"name": "a"}


def test_a_drop_ceiling_keeps_the_attacks_from_buying_back_retained_accuracy():
    """With a drop ceiling, a configuration whose retained drop exceeds it is not chosen however
    low its cost (the attacks' points); when none meets it, the ceiling is not applied."""
    rows = {  # forget, drop, relearned, probe
        "deep": (0.0, 6.0, 0.0, 74.0),  # the lowest cost, 80, at a 6-point drop
        "kept": (0.0, 1.0, 23.0, 67.0),  # cost 91
        "head": (0.0, 0.4, 18.0, 79.0),  # cost 97.4
    }

    mean = _attack_means(rows)
    configs = [{"name": n} for n in rows]
    assert choose_config(configs, mean, ceiling=1.0) == {"name": "deep"}
    assert choose_config(configs, mean, ceiling=1.0, drop_ceiling=2.0) == {"name": "kept"}
    assert choose_config(configs, mean, ceiling=1.0, drop_ceiling=0.5) == {"name": "head"}
    assert choose_config(configs, mean, ceiling=1.0, drop_ceiling=0.1) == {"name": "deep"}


def test_the_tolerance_is_the_probes_binomial_standard_error_at_the_lowest_cost():
    """choose_configs with ``probe_images``: sqrt(sum_c p_c (1 - p_c) / n_c) / C at the
    lowest-cost configuration (known answer), recorded with the choice."""
    rows = [
        {
            "class": c,
            "method": "m",
            "config": {"k": k},
            "score": 1.0,
            "seconds": 1.0,
            "val_forget_acc": 0.0,
            "val_retain_drop": drop,
            "val_relearned": 0.0,
            "val_probe": probe,
        }
        for k, c, drop, probe in [
            (1, 3, 1.0, 60.0),
            (1, 8, 1.0, 80.0),  # cost 71.0: the lowest
            (2, 3, 0.0, 64.0),
            (2, 8, 0.0, 79.0),  # cost 71.5, drop 0: within the tolerance
        ]
    ]
    grid = {"m": [{"k": 1}, {"k": 2}]}
    expected = 100 * ((0.6 * 0.4 / 250 + 0.8 * 0.2 / 200) ** 0.5) / 2
    chosen = choose_configs(rows, grid, {"m": 1.0}, probe_images={3: 250, 8: 200})
    assert chosen["m"]["tolerance"] == pytest.approx(expected)  # 2.10 points
    assert chosen["m"]["config"] == {"k": 2} and chosen["m"]["val_probe"] == pytest.approx(71.5)
    plain = choose_configs(rows, grid, {"m": 1.0})  # no tolerance: the lowest cost
    assert plain["m"]["config"] == {"k": 1} and "tolerance" not in plain["m"]


@pytest.mark.science
def test_a_validation_study_scores_on_the_validation_split_and_chooses_per_method(
    digits, digits_model
):
    data = hold_out_validation(digits, 0.2, seed=0)
    grid = {
        "famr": [{}],  # its defaults: val forget acc 0.0 on both classes (measured)
        # a step too small to change anything: the original's validation accuracy, no drop
        "finetune": [{"lr": 1e-9, "epochs": 1}, {"lr": 0.05, "epochs": 2}],
    }
    rows = validation_study(digits_model, data, [3, 8], grid, seed=0)
    assert len(rows) == 2 * 3 and {r["class"] for r in rows} == {3, 8}
    val_counts = {c: int((data.validation.tensors[1] == c).sum()) for c in (3, 8)}
    for row in rows:
        assert row["score"] == pytest.approx(row["val_forget_acc"] + row["val_retain_drop"])
        # an accuracy over the class's validation images: a multiple of 100 / their count
        hits = row["val_forget_acc"] * val_counts[row["class"]] / 100
        assert hits == pytest.approx(round(hits), abs=1e-6)
    still = [r for r in rows if r["config"] == {"lr": 1e-9, "epochs": 1}]
    assert all(r["val_forget_acc"] > 80 and abs(r["val_retain_drop"]) < 1e-9 for r in still)
    assert all(r["val_forget_acc"] < 5 for r in rows if r["method"] == "famr")
    chosen = choose_configs(rows, grid)
    assert chosen["famr"]["config"] == grid["famr"][0]
    best = min(
        grid["finetune"],
        key=lambda c: sum(r["score"] for r in rows if r["config"] == c),
    )
    assert chosen["finetune"]["config"] == best
    assert chosen["finetune"]["score"] == pytest.approx(
        sum(r["score"] for r in rows if r["config"] == best) / 2
    )


def test_a_validation_study_needs_a_validation_split(digits, digits_model):
    with pytest.raises(ValueError, match="validation split"):
        validation_study(digits_model, digits, [3], {"famr": [{}]})


def test_a_grid_configuration_without_rows_is_named():
    rows = [{"method": "famr", "config": {"lam": 0.1}, "score": 1.0, "seconds": 1.0}]
    with pytest.raises(ValueError, match=r"no rows for famr \{'lam': 1.0\}"):
        choose_configs(rows, {"famr": [{"lam": 0.1}, {"lam": 1.0}]})


@pytest.mark.science
def test_the_study_can_score_relearning_on_the_validation_split(digits, digits_model):
    """famr's head recipe hides the digit, its last_stage recipe forgets it: the relearning
    attack scored on the validation split tells them apart and the rule picks the second.
    Measured (AVX-512 1 thread, AVX2 2 threads, the same): val relearned 96.2 % / 0.0 %."""
    data = hold_out_validation(digits, 0.2, seed=0)
    grid = {"famr": [{"recipe": "head"}, {"recipe": "last_stage", "lr": 0.1, "epochs": 3}]}
    rows = validation_study(digits_model, data, [3], grid, seed=0, relearn=["famr"])
    by = {r["config"]["recipe"]: r for r in rows}
    for row in rows:
        total = row["val_forget_acc"] + row["val_retain_drop"] + row["val_relearned"]
        assert row["score"] == pytest.approx(total)
    assert by["head"]["val_relearned"] >= 50 and by["last_stage"]["val_relearned"] <= 20
    chosen = choose_configs(rows, grid, {"famr": 5.0})
    assert chosen["famr"]["config"]["recipe"] == "last_stage"
    assert chosen["famr"]["val_relearned"] == by["last_stage"]["val_relearned"]


def test_the_study_measures_the_probe_on_the_validation_split_alone(digits, digits_model):
    """val_probe: a linear probe fit on one half of the validation split (per class, seeded)
    and scored on the other half's images of the class, the same number as the attack run
    directly on those halves; the head recipe moves no feature, so its probe is the original's
    to the bit; the probe is reported, never added to the score."""
    from dataclasses import replace

    from famr import ClassForget
    from famr.attacks import AttackData, attack

    data = hold_out_validation(digits, 0.2, seed=0)
    grid = {"famr": [{"recipe": "head"}, {"recipe": "last_stage", "lr": 0.1, "epochs": 3}]}
    rows = validation_study(digits_model, data, [3], grid, seed=0, probe=["famr"])
    halves = hold_out_validation(replace(data, train=data.validation), 0.5, seed=0)
    assert len(halves.train) + len(halves.validation) == len(data.validation)
    scored = ClassForget(3).split(data.train, halves.train, data.num_classes)
    direct = attack(digits_model, AttackData(scored, halves.validation), ["linear_probe"])
    by = {r["config"]["recipe"]: r for r in rows}
    for row in rows:
        assert row["val_probe_original"] == direct["probe_test_forget_acc"]
        assert row["score"] == pytest.approx(row["val_forget_acc"] + row["val_retain_drop"])
        assert "val_relearned" not in row  # each measurement only where asked for
    assert by["head"]["val_probe"] == by["head"]["val_probe_original"]
    assert 0 < by["head"]["val_probe"] <= 100
    no_probe = validation_study(digits_model, data, [3], {"famr": grid["famr"][:1]}, seed=0)
    assert "val_probe" not in no_probe[0]


def test_each_rows_probe_is_its_own_models(digits, digits_model, monkeypatch):
    """The probe is run on the original once per class and on every run's model, each row
    carrying its own run's number (an attack that answers 10, 20, 30, ... in call order) and
    the original's beside it; the models probed are the runs' own, not the original."""
    import famr.experiment as experiment

    probed = []

    def numbered(model, data, attacks, device=None, config=None):
        assert attacks == ["linear_probe"] and data.probe_train is not None
        probed.append(model)
        return {"probe_test_forget_acc": 10.0 * len(probed)}

    monkeypatch.setattr(experiment, "attack", numbered)
    data = hold_out_validation(digits, 0.2, seed=0)
    grid = {"famr": [{"recipe": "head"}, {"recipe": "head", "lam": 1.0}]}
    rows = validation_study(digits_model, data, [3, 8], grid, seed=0, probe=["famr"])
    assert [r["val_probe"] for r in rows] == [20.0, 30.0, 50.0, 60.0]
    assert [r["val_probe_original"] for r in rows] == [10.0, 10.0, 40.0, 40.0]
    assert probed[0] is digits_model and probed[3] is digits_model
    assert all(m is not digits_model for i, m in enumerate(probed) if i not in (0, 3))


def test_relearning_at_several_rates_scores_their_mean(digits, digits_model, monkeypatch):
    """With several attack rates the row's val_relearned is the mean of the rates' runs (each
    kept in val_relearned_by_lr), not the strongest run the attack reports; the attack is asked
    for the rates given, and the score counts the mean."""
    import famr.experiment as experiment

    asked = []

    def relearned(model, data, attacks, device=None, config=None):
        asked.append(config["relearn"])
        by_lr = {"0.01": 0.0, "0.03": 30.0, "0.1": 90.0}
        return {"relearn_forget_acc": 90.0, "relearn_by_lr": by_lr}

    monkeypatch.setattr(experiment, "attack", relearned)
    data = hold_out_validation(digits, 0.2, seed=0)
    rates = {"lr": (0.01, 0.03, 0.1)}
    grid = {"famr": [{"recipe": "head"}]}
    (row,) = validation_study(
        digits_model, data, [3], grid, seed=0, relearn=["famr"], relearn_config=rates
    )
    assert asked == [rates]
    assert row["val_relearned"] == 40.0
    assert row["val_relearned_by_lr"] == {"0.01": 0.0, "0.03": 30.0, "0.1": 90.0}
    assert row["score"] == pytest.approx(row["val_forget_acc"] + row["val_retain_drop"] + 40.0)


def test_rows_relearned_at_different_rates_are_refused():
    """A grid whose rows hold the relearning attack at one rate for some configurations and at
    three for others would compare two measurements: refused, naming both."""
    row = {"class": 3, "method": "famr", "seconds": 1.0, "val_forget_acc": 0.0}
    row |= {"val_retain_drop": 1.0, "score": 1.0, "val_relearned": 0.0}
    three = {"val_relearned_by_lr": {"0.01": 0.0, "0.03": 0.0, "0.1": 0.0}}
    rows = [row | {"config": {"lr": 0.1}}, row | {"config": {"lr": 0.4}} | three]
    grid = {"famr": [{"lr": 0.1}, {"lr": 0.4}]}
    with pytest.raises(ValueError, match=r"different rates \(one rate and 0.01, 0.03, 0.1\)"):
        choose_configs(rows, grid)
    assert choose_configs([r | three for r in rows], grid)["famr"]["config"] == {"lr": 0.1}


def test_a_per_class_subset_keeps_that_many_of_each_class_and_nothing_else(digits):
    """per_class_subset: at most ``per_class`` training images of each class, all of them
    drawn from the training split, the same draw for the same seed; the validation and test
    splits untouched; a bad count is a one-line error naming it."""
    import torch

    data = hold_out_validation(digits, 0.2, seed=0)
    small = per_class_subset(data, 20, seed=0)
    x, y = small.train.tensors
    assert torch.equal(torch.bincount(y, minlength=10), torch.full((10,), 20))
    tx, _ = data.train.tensors
    rows = {tuple(r.flatten().tolist()) for r in tx}
    assert all(tuple(r.flatten().tolist()) in rows for r in x)
    assert small.validation is data.validation and small.test is data.test
    assert torch.equal(x, per_class_subset(data, 20, seed=0).train.tensors[0])
    assert not torch.equal(x, per_class_subset(data, 20, seed=1).train.tensors[0])
    everything = per_class_subset(data, 10_000, seed=0)
    assert len(everything.train) == len(data.train)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match=f"per_class={bad!r}"):
            per_class_subset(data, bad)


def test_known_reference_rows_reuse_their_attacks_only_on_the_same_models(digits, monkeypatch):
    """compare_methods(known=...): the original's and retrained model's rows measured earlier
    (through JSON, as a results file holds them) come out the same as measuring them again,
    with the attacks run on the method's model only; a row whose metrics differ from the ones
    measured now (another model), or that holds no attack values, is refused by name."""
    import json

    import famr
    import famr.experiment as experiment
    from famr.experiment import compare_methods

    data = hold_out_validation(digits, 0.2, seed=0)
    splits = famr.ClassForget(3).split(data.train, data.test, data.num_classes)
    original = famr.train(
        famr.create_model("small_cnn", 10, in_channels=1, width=8), data.train, epochs=2, seed=0
    )
    retrained = famr.unlearn(original.model, splits, method="retrain", epochs=2, seed=0)
    common = dict(probe_data=data.validation, attack_config={"relearn": {"steps": 3}})
    runs = {"famr": {"recipe": "head"}}
    first = compare_methods(original, retrained, splits, data, runs, **common).results["runs"]
    stored = json.loads(json.dumps({k: first[k] for k in ("original", "retrain")}))
    attacked = []
    real = experiment.attack

    def counted(model, *args, **kwargs):
        attacked.append(model)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(experiment, "attack", counted)
    again = compare_methods(original, retrained, splits, data, runs, known=stored, **common)
    again = json.loads(json.dumps(again.results["runs"]))
    assert len(attacked) == 1 and attacked[0] is not original.model
    assert again["original"] == stored["original"] and again["retrain"] == stored["retrain"]
    assert again["famr"]["avg_gap"] == pytest.approx(first["famr"]["avg_gap"])
    swapped = {"original": stored["retrain"]}  # another model's row
    with pytest.raises(ValueError, match=r"known row 'original': \w+ is .*, measured now "):
        compare_methods(original, retrained, splits, data, {}, known=swapped, **common)
    bare = {"retrain": {k: v for k, v in stored["retrain"].items() if not k.startswith("probe_")}}
    with pytest.raises(ValueError, match="no value of attack 'linear_probe'"):
        compare_methods(original, retrained, splits, data, {}, known=bare, **common)
    with pytest.raises(ValueError, match=r"known rows \['famr'\]"):
        compare_methods(original, retrained, splits, data, {}, known={"famr": {}}, **common)
    with pytest.raises(ValueError, match="give probe_data"):
        compare_methods(original, retrained, splits, data, {}, known=stored)


def test_known_rows_compare_metrics_as_a_results_file_stores_them():
    """_same_metrics: NaN (written "nan" by famr.io) equals NaN, lists compare element-wise,
    a value off by more than 1e-6 or missing is named."""
    from famr.experiment import _same_metrics

    measured = {"mia_gap": float("nan"), "per_class": [1.0, 2.0], "forget_acc": 50.0, "n": 3}
    _same_metrics(
        "retrain", measured, {"mia_gap": "nan", "per_class": [1, 2.0], "forget_acc": 50.0}
    )
    for row, says in [
        ({"mia_gap": "nan", "per_class": [1.0, 2.0], "forget_acc": 50.01}, "forget_acc is 50.01"),
        ({"mia_gap": "nan", "per_class": [1.0], "forget_acc": 50.0}, "per_class is [1.0]"),
        ({"mia_gap": 0.0, "per_class": [1.0, 2.0], "forget_acc": 50.0}, "mia_gap is 0.0"),
        ({"mia_gap": "nan", "per_class": [1.0, 2.0]}, "forget_acc is None"),
    ]:
        with pytest.raises(ValueError, match=f"known row 'retrain': {re.escape(says)}"):
            _same_metrics("retrain", measured, row)

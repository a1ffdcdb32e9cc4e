"""Contract tests over every registered method, and method-specific checks."""

import copy
import dataclasses
import math
import re
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import famr
from famr.loop import select_parameters
from famr.methods import METHODS
from famr.methods.famr_auto import FamrRecipeWarning
from famr.methods.random_label import random_other_labels
from famr.methods.retrain import reinitialize

ALL = METHODS.names()


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _fields(method):
    return {f.name for f in dataclasses.fields(METHODS.get(method).meta["config"])}


def _calibrates(method):
    """The method's stopping rule reads held-out data (famr's quantile recipe has the rule too,
    but these class requests resolve to its last_stage recipe)."""
    return "holdout" in METHODS.get(method).meta["needs"]


def _holdout(model, forget):
    """Held-out examples for the methods that calibrate on them: the forget images labelled with the class the model
    finds least likely, so the held-out confidence level is low and the rule lets FAMR run."""
    x, _ = forget.tensors
    with torch.no_grad():
        least = model.eval()(x).argmin(dim=1)
    return TensorDataset(x, least)


@pytest.mark.parametrize("method", ALL)
def test_method_contract(method, tiny):
    model, forget, retain = tiny
    before = _state(model)
    holdout = _holdout(model, forget)
    # the untrained model already gets the forget set wrong, so a rule that matches the
    # held-out accuracy would (rightly) not start: match the confidence here
    extra = {"statistic": "confidence"} if _calibrates(method) else {}
    result = famr.unlearn(
        model, forget, retain, method=method, epochs=2, device="cpu", holdout=holdout, **extra
    )
    # the input model is bit-identical
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # the returned model changed
    changed = [k for k, v in result.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, f"{method} did not change any weight"
    # finite history, one record per epoch
    assert len(result.history) >= 1
    for record in result.history:
        assert all(math.isfinite(v) for v in record.values()), record
    assert result.seconds > 0 and result.method == method
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    entry = METHODS.get(method)
    assert entry.meta["paper"], f"{method} must cite its source"
    # a certificate exactly when the method minimises the anchored objective and the
    # (resolved) config asks for one: famr's last_stage recipe, given a retain set, does not
    wanted = entry.meta["certificate"] and getattr(result.config, "certificate", True)
    assert (result.certificate is not None) == wanted


@pytest.mark.science
def test_quantile_cross_entropy_retain_term_fits_the_buffer_labels(tiny):
    """With retain_loss="cross_entropy" and a heavy retain weight, the retain term is plain
    cross-entropy on the buffer labels: it must fall."""
    from famr.losses import cross_entropy

    model, forget, retain = tiny
    x, y = retain.tensors
    with torch.no_grad():
        before = float(cross_entropy(model.eval()(x), y))
    result = famr.unlearn(
        model,
        forget,
        retain,
        method="famr_quantile",
        retain_loss="cross_entropy",
        statistic="confidence",
        beta=100.0,
        lr=1e-3,
        epochs=5,
        device="cpu",
        holdout=_holdout(model, forget),
    )
    assert result.history[-1]["retain_loss"] < before
    with torch.no_grad():
        assert float(cross_entropy(result.model.eval()(x), y)) < before
    with pytest.raises(ValueError, match="retain_loss='mse'.*kl, cross_entropy"):
        famr.unlearn(
            model,
            forget,
            retain,
            method="famr_quantile",
            retain_loss="mse",
            holdout=_holdout(model, forget),
        )


@pytest.mark.parametrize("method", ALL)
def test_same_seed_gives_bit_identical_weights(method, tiny):
    model, forget, retain = tiny
    common = dict(method=method, epochs=1, seed=3, device="cpu", holdout=_holdout(model, forget))
    a = famr.unlearn(model, forget, retain, **common)
    b = famr.unlearn(model, forget, retain, **common)
    for (k, v), w in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(v, w), k


def test_unlearn_does_not_touch_global_rng(tiny):
    model, forget, retain = tiny
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    famr.unlearn(model, forget, retain, method="random_label", epochs=1, device="cpu")
    assert torch.equal(torch.rand(3), expected)


def test_unknown_config_key_lists_valid_keys(tiny):
    model, forget, _ = tiny
    with pytest.raises(ValueError, match=r"unknown config key\(s\) lambda.*valid keys:.*lam"):
        famr.unlearn(model, forget, method="famr", **{"lambda": 1.0})


def test_unknown_method_lists_choices(tiny):
    model, forget, _ = tiny
    with pytest.raises(ValueError, match="unknown method 'GA'; valid choices: .*gradient_ascent"):
        famr.unlearn(model, forget, method="GA")


@pytest.mark.parametrize("method", [m for m in ALL if "retain" in METHODS.get(m).meta["needs"]])
def test_methods_needing_retain_refuse_without_it(method, tiny):
    model, forget, _ = tiny
    with pytest.raises(ValueError, match="needs retain data"):
        famr.unlearn(model, forget, method=method)


@pytest.mark.parametrize(
    "bad",
    [
        {"lam": -1.0},
        {"lam": float("nan")},
        {"lam": float("inf")},
        {"lr": 0.0},
        {"lr": -1e-3},
        {"epochs": 0},
        {"batch_size": 0},
        {"optimizer": "rmsprop"},
        {"target": "zero"},
    ],
)
def test_bad_config_values_name_the_value(bad, tiny):
    model, forget, _ = tiny
    key = next(iter(bad))
    with pytest.raises(ValueError, match=key):
        famr.unlearn(model, forget, method="famr", **bad)


def test_nan_weights_are_refused(tiny):
    model, forget, _ = tiny
    broken = famr.create_model("small_cnn", 4, in_channels=2, width=4)
    with torch.no_grad():
        broken.classifier.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        famr.unlearn(broken, forget)


def test_labels_outside_model_outputs_are_refused(tiny):
    from torch.utils.data import TensorDataset

    model, forget, _ = tiny
    x, y = forget.tensors
    with pytest.raises(ValueError, match="labels outside 0..3"):
        famr.unlearn(model, TensorDataset(x, y + 9))


def test_retrain_reinitialises_every_parameter_and_buffer(digits_model):
    trained = {k: v.clone() for k, v in digits_model.state_dict().items()}
    copy = famr.create_model("small_cnn", 10, in_channels=1, width=16)
    copy.load_state_dict(trained)
    reinitialize(copy)
    for name, value in copy.state_dict().items():
        if name.endswith("num_batches_tracked"):
            assert int(value) == 0
        else:  # every weight, bias and running statistic left its trained value
            assert not torch.equal(value, trained[name]), name


def test_retrain_result_differs_from_original_everywhere(digits_model, digits_splits):
    result = famr.unlearn(
        digits_model, digits_splits.forget, digits_splits.retain, method="retrain", epochs=1
    )
    for (name, p), q in zip(
        result.model.named_parameters(), digits_model.parameters(), strict=True
    ):
        assert not torch.isclose(p, q).all(), name


def test_retrain_refuses_modules_it_cannot_reset():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(1))

    with pytest.raises(ValueError, match="no reset_parameters"):
        reinitialize(Odd())


def test_random_other_labels_never_returns_the_true_label():
    labels = torch.arange(1000) % 10
    wrong = random_other_labels(labels, 10, torch.Generator().manual_seed(0))
    assert not bool((wrong == labels).any())
    assert set(wrong.tolist()) == set(range(10))


def test_famr_history_has_the_objective_terms(tiny):
    model, forget, _ = tiny
    result = famr.unlearn(model, forget, method="famr", epochs=3, lam=1.0, forget_classes=[0])
    for record in result.history:
        assert {"uniform_loss", "anchor", "objective", "distance"} <= set(record)
    assert result.certificate["lam"] == 1.0


def test_famr_literal_is_the_paper_form():
    cfg = METHODS.get("famr_literal").meta["config"]()
    assert (cfg.target, cfg.params, cfg.optimizer) == ("uniform", "all", "sgd")


def test_famr_with_lam_zero_is_unanchored(tiny):
    model, forget, _ = tiny
    result = famr.unlearn(model, forget, method="famr", lam=0.0, epochs=2, forget_classes=[0])
    assert "anchor" not in result.history[-1]
    assert result.certificate["a_priori_bound"] is None and not result.certificate["certified"]


@pytest.mark.parametrize("method", ALL)
def test_frozen_parameters_never_move(method, tiny):
    """Issue 19, item 7: requires_grad=False was ignored (famr, famr_literal moved frozen
    weights, and the certificate then crashed). Frozen means frozen, for every method, and the
    result names what moved."""
    model, forget, retain = tiny
    model = __import__("copy").deepcopy(model)
    frozen = [n for n, _ in model.named_parameters()][:2]  # the first layer's weight and bias
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen)
    before = _state(model)
    extra = {"statistic": "confidence"} if _calibrates(method) else {}
    result = famr.unlearn(
        model,
        forget,
        retain,
        method=method,
        epochs=2,
        device="cpu",
        holdout=_holdout(model, forget),
        forget_classes=[0],
        **extra,
    )
    after = dict(result.model.named_parameters())
    for name in frozen:
        assert torch.equal(after[name], before[name]), (method, name)
        assert not after[name].requires_grad  # handed back frozen, as it came
    assert not set(frozen) & set(result.moved)
    assert set(result.moved) == {n for n, p in after.items() if not torch.equal(p, before[n])}
    if result.certificate is not None:
        assert result.certificate["distance"] >= 0


def test_names_moved_out_of_the_top_level_api_still_resolve_with_a_warning():
    from famr.config import TrainConfig
    from famr.methods import METHODS

    with pytest.warns(DeprecationWarning, match="famr.METHODS moved to famr.methods.METHODS"):
        assert famr.METHODS is METHODS
    with pytest.warns(DeprecationWarning, match="famr.config.TrainConfig"):
        assert famr.TrainConfig is TrainConfig
    assert "METHODS" not in famr.__all__
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        famr.nonexistent  # noqa: B018


def _flat(result):
    return torch.cat([p.detach().flatten() for p in result.model.parameters()])


def test_famr_last_stage_references_ignore_target_and_sample_requests_skip_the_forget_set(tiny):
    """famr's last_stage recipe (a retain set given): the distilled references take the
    removed classes out whatever ``target`` says; on a sample request the forget images' own
    predictions are no target (the run ignores their pixels); with reset, a given anchor model
    does not pull toward the erased weights."""
    model, forget, retain = tiny
    run = dict(method="famr", epochs=2, device="cpu")
    base = famr.unlearn(model, forget, retain, forget_classes=[0], **run)
    other = famr.unlearn(model, forget, retain, forget_classes=[0], target="uniform", **run)
    assert torch.equal(_flat(base), _flat(other))
    x, y = forget.tensors
    noise = TensorDataset(torch.randn_like(x), y)
    with pytest.warns(FamrRecipeWarning, match="sample request without held-out data"):
        samples = famr.unlearn(model, forget, retain, forget_classes=[], **run)
        samples_noise = famr.unlearn(model, noise, retain, forget_classes=[], **run)
    assert torch.equal(_flat(samples), _flat(samples_noise))
    assert not torch.equal(_flat(samples), _flat(base))  # the class request's forget term acts
    far = __import__("copy").deepcopy(model)
    with torch.no_grad():
        for p in far.parameters():
            p.add_(5.0)
    anchored = famr.unlearn(model, forget, retain, forget_classes=[0], anchor=far, lam=1.0, **run)
    plain = famr.unlearn(model, forget, retain, forget_classes=[0], lam=1.0, **run)
    assert torch.equal(_flat(anchored), _flat(plain))


def test_forget_target_none_never_reads_the_forget_set_yet_the_removed_class_goes(
    tiny, digits_splits, digits_model
):
    """``forget_target="none"``: the re-initialised stage learns from the buffer alone (noise
    in place of the forget images gives the same model, to the bit), and the removed class's
    output, trained only toward zero, is no longer the answer on the class's test images
    (digits, class 3: the original gets them right)."""
    model, forget, retain = tiny
    run = dict(method="famr", forget_target="none", epochs=3, device="cpu")
    x, y = forget.tensors
    plain = famr.unlearn(model, forget, retain, forget_classes=[0], **run)
    noise = famr.unlearn(
        model, TensorDataset(torch.randn_like(x), y), retain, forget_classes=[0], **run
    )
    assert torch.equal(_flat(plain), _flat(noise))
    distilled = famr.unlearn(
        model, forget, retain, forget_classes=[0], forget_target="distilled", epochs=3, device="cpu"
    )
    assert not torch.equal(_flat(plain), _flat(distilled))  # the distilled term reads them
    result = famr.unlearn(digits_model, digits_splits, method="famr", forget_target="none")
    accuracy = famr.evaluate(
        result.model, test_forget=digits_splits.test_forget, metrics=["test_forget_acc"]
    )
    original = famr.evaluate(
        digits_model, test_forget=digits_splits.test_forget, metrics=["test_forget_acc"]
    )
    assert original["test_forget_acc"] > 90 and accuracy["test_forget_acc"] == 0.0


def test_famr_auto_resolves_from_what_the_request_holds(tiny):
    """The one ``famr``: with a retain set (a class, samples without held-out data, a sequential
    step with an anchor model) its ``last_stage`` recipe, a sample request with held-out data
    its ``quantile`` recipe, without a retain set its ``head`` recipe; ``Result.config`` holds
    the resolved recipe with every field filled in, and running that config again gives the
    same model."""
    from famr.methods.famr import FamrHeadConfig
    from famr.methods.famr_quantile import FamrQuantileRecipeConfig
    from famr.methods.famr_retain import FamrLastStageConfig

    model, forget, retain = tiny
    holdout = _holdout(model, forget)
    with_retain = famr.unlearn(model, forget, retain, forget_classes=[0], epochs=2)
    with pytest.warns(FamrRecipeWarning, match="sample request without held-out data"):
        samples = famr.unlearn(model, forget, retain, forget_classes=[], epochs=2)
    sequential = famr.unlearn(model, forget, retain, forget_classes=[0], anchor=model, epochs=2)
    # held-out data changes nothing on a class request
    class_holdout = famr.unlearn(
        model, forget, retain, forget_classes=[0], holdout=holdout, epochs=2
    )
    no_retain = famr.unlearn(model, forget, forget_classes=[0], epochs=2)
    for result in (with_retain, samples, sequential, class_holdout):
        assert result.config.recipe == "last_stage" and result.certificate is None
        # the feature pull shapes the forget set's distilled term, which a sample request's
        # run does not read: it resolves to 0 there
        pull = {} if result is not samples else {"forget_features": 0.0}
        expected = dataclasses.asdict(FamrLastStageConfig(epochs=2, **pull))
        assert {k: getattr(result.config, k) for k in expected} == expected
    # the feature pull is an option, off by default (the validation rule's choice)
    assert with_retain.config.forget_features == 0.0
    assert "forget_features" not in with_retain.history[-1]
    target_none = famr.unlearn(model, forget, retain, forget_classes=[0], forget_target="none")
    assert target_none.config.forget_features == 0.0  # set otherwise by the caller: 0
    assert "forget_features" not in target_none.history[-1]
    assert torch.equal(_flat(class_holdout), _flat(with_retain))
    quantile = famr.unlearn(
        model,
        forget,
        retain,
        forget_classes=[],
        holdout=holdout,
        epochs=2,
        statistic="confidence",  # this untrained model already misses the forget set
    )
    assert quantile.config.recipe == "quantile" and quantile.certificate is None
    expected = dataclasses.asdict(FamrQuantileRecipeConfig(epochs=2, statistic="confidence"))
    assert {k: getattr(quantile.config, k) for k in expected} == expected
    assert quantile.config.beta == 1.0
    assert no_retain.config.recipe == "head" and no_retain.certificate["certified"]
    expected = dataclasses.asdict(FamrHeadConfig(epochs=2))
    assert {k: getattr(no_retain.config, k) for k in expected} == expected
    assert no_retain.config.beta is None  # not a field of the head recipe
    assert set(no_retain.moved) <= {n for n, _ in select_parameters(model, "head")}
    assert any(n.startswith("features.3") for n in with_retain.moved)  # the body moved
    assert any(n.startswith("features.0") for n in quantile.moved)  # every parameter can move
    again = famr.unlearn(
        model, forget, retain, forget_classes=[0], **dataclasses.asdict(with_retain.config)
    )
    assert torch.equal(_flat(again), _flat(with_retain))
    again = famr.unlearn(
        model,
        forget,
        retain,
        forget_classes=[],
        holdout=holdout,
        **dataclasses.asdict(quantile.config),
    )
    assert torch.equal(_flat(again), _flat(quantile))


def test_the_request_kind_is_checked_and_a_concept_never_takes_the_quantile_recipe(tiny):
    """``kind`` names what the request removes: a bad one is refused with the choices, one that
    contradicts the request object is refused, and only sample kinds take per-example targets
    (a concept or a style is not a share of the distribution the held-out data stands for)."""
    model, forget, retain = tiny
    holdout = _holdout(model, forget)
    with pytest.raises(ValueError, match="kind='share' is not valid; choose one of: classes, sam"):
        famr.unlearn(model, forget, retain, kind="share")
    data = famr.load_dataset("digits")
    request = famr.RandomForget(0.1, seed=0).split(data.train, data.test, 10)
    assert request.kind == "random"
    with pytest.raises(ValueError, match="kind='style' contradicts the request, which is a 'ran"):
        famr.unlearn(model, request, kind="style")
    # a kind at odds with the removed classes is refused
    with pytest.raises(ValueError, match=r"kind='samples' contradicts forget_classes=\[0\]"):
        famr.unlearn(model, forget, retain, kind="samples", forget_classes=[0], holdout=holdout)
    with pytest.raises(ValueError, match=r"kind='classes' contradicts forget_classes=\[\]"):
        famr.unlearn(model, forget, retain, kind="classes", forget_classes=[])
    # a request object built by hand, without a kind: its removed classes say what it is
    by_hand = famr.Splits(forget, retain, retain, None, forget_classes=[])
    with pytest.warns(FamrRecipeWarning):
        assert famr.unlearn(model, by_hand, epochs=1).config.recipe == "last_stage"
    assert (
        famr.unlearn(
            model, by_hand, holdout=holdout, epochs=1, statistic="confidence"
        ).config.recipe
        == "quantile"
    )
    run = dict(forget_classes=[], holdout=holdout, epochs=1)
    for kind, recipe in [
        ("samples", "quantile"),
        ("random", "quantile"),
        ("concept", "last_stage"),
        ("style", "last_stage"),
    ]:
        extra = {"statistic": "confidence"} if recipe == "quantile" else {}
        result = famr.unlearn(model, forget, retain, kind=kind, **run, **extra)
        assert result.config.recipe == recipe, kind


def test_famr_recipes_equal_the_forms_they_name(tiny):
    """``recipe="quantile"`` is famr_quantile with FamrQuantileRecipeConfig's values (beta 1),
    ``recipe="last_stage"`` famr_retain with FamrLastStageConfig's values, to the bit;
    ``recipe="head"`` ignores a retain set and equals the run without one."""
    from famr.methods.famr_quantile import FamrQuantileRecipeConfig
    from famr.methods.famr_retain import FamrLastStageConfig

    model, forget, retain = tiny
    holdout = _holdout(model, forget)
    quantile = famr.unlearn(
        model,
        forget,
        retain,
        forget_classes=[],
        holdout=holdout,
        epochs=2,
        statistic="confidence",
    )
    values = dataclasses.asdict(FamrQuantileRecipeConfig(epochs=2, statistic="confidence"))
    assert values["beta"] == 1.0
    spelled = famr.unlearn(
        model,
        forget,
        retain,
        method="famr_quantile",
        forget_classes=[],
        holdout=holdout,
        **values,
    )
    assert torch.equal(_flat(quantile), _flat(spelled))
    auto = famr.unlearn(model, forget, retain, forget_classes=[0], epochs=2)
    values = {**dataclasses.asdict(FamrLastStageConfig(epochs=2)), "certificate": True}
    spelled = famr.unlearn(
        model, forget, retain, method="famr_retain", forget_classes=[0], **values
    )
    assert torch.equal(_flat(auto), _flat(spelled))
    head = famr.unlearn(model, forget, retain, forget_classes=[0], recipe="head", epochs=3)
    alone = famr.unlearn(model, forget, forget_classes=[0], epochs=3)
    assert torch.equal(_flat(head), _flat(alone))


def test_famr_says_what_a_request_lacks_and_rejects_fields_foreign_to_its_recipe(tiny):
    model, forget, retain = tiny
    # samples, no retain set: the head recipe cannot serve them; the message says what to give
    with pytest.raises(ValueError, match="method=.famr. with the retain set"):
        famr.unlearn(model, forget, forget_classes=[])
    with pytest.raises(ValueError, match=r"beta=2\.0: not a field of famr's 'head' recipe, which"):
        famr.unlearn(model, forget, forget_classes=[0], beta=2.0)
    with pytest.raises(ValueError, match="recipe='fast' is not valid; choose one of: auto, head"):
        famr.unlearn(model, forget, retain, recipe="fast")
    with pytest.raises(ValueError, match="lr=-1 is not valid"):
        famr.unlearn(model, forget, retain, lr=-1)
    with pytest.raises(ValueError, match="pass retain="):
        famr.unlearn(model, forget, forget_classes=[0], recipe="last_stage")
    with pytest.raises(ValueError, match="'quantile' recipe .* pass retain=... and holdout="):
        famr.unlearn(model, forget, retain, forget_classes=[], recipe="quantile")
    # a field only the quantile recipe has, on a class request: named with why it resolved so
    with pytest.raises(ValueError, match="off_label='uniform': not a field of famr's 'last_stage"):
        famr.unlearn(model, forget, retain, forget_classes=[0], off_label="uniform")
    # a value no recipe takes fails when the config is built, before any data is read
    for bad in (dict(off_label="even"), dict(beta=-1.0), dict(buffer_size=-5)):
        ((name, value),) = bad.items()
        with pytest.raises(ValueError, match=f"{name}={value!r} is not valid"):
            famr.methods.famr_auto.FamrConfig(**bad)
    # a field the quantile recipe inherits but never uses is refused, not recorded as run
    with pytest.raises(ValueError, match="reset=True is not valid here"):
        famr.unlearn(model, forget, retain, forget_classes=[], holdout=forget, reset=True)


def test_the_default_famr_takes_any_request_object_without_extra_arguments():
    """A sample, a class, a concept and a style request, each handed over as the request
    object: the default method runs on every one (the request's retain set selects the
    last_stage recipe), with no forget_classes or retain argument."""
    data = famr.load_dataset("digits")
    torch.manual_seed(0)
    model = famr.create_model("small_cnn", 10, in_channels=1, width=4)
    coarse = famr.data.coarsen(data, famr.data.DIGITS_COARSE)
    coarse_model = famr.create_model("small_cnn", len(coarse.groups), in_channels=1, width=4)
    styled = famr.data.add_style(data, 0.2, seed=0)
    requests = [
        (model, famr.RandomForget(0.1, seed=0).split(data.train, data.test, 10)),
        (model, famr.ClassForget(3).split(data.train, data.test, 10)),
        (
            coarse_model,
            famr.ConceptForget(8, coarse.fine_train, coarse.fine_test, "8").split(
                coarse.data.train, coarse.data.test, len(coarse.groups)
            ),
        ),
        (
            model,
            famr.StyleForget(styled.styled_train, styled.styled_test).split(
                styled.data.train, styled.data.test, 10
            ),
        ),
    ]
    # without held-out data every one takes the last_stage recipe (the sample request warns);
    # with it, the sample request takes the quantile recipe and the others do not change
    for net, request in requests:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = famr.unlearn(net, request, epochs=1, device="cpu")
        assert result.config.recipe == "last_stage" and result.moved
        assert len(caught) == (request.kind == "random"), request.kind
        # images these (untrained) models never saw, with labels of their own outputs
        holdout = TensorDataset(*request.test_retain[:200])
        held = famr.unlearn(net, request, epochs=1, device="cpu", holdout=holdout)
        assert held.config.recipe == ("quantile" if request.kind == "random" else "last_stage")


def _cached_and_per_batch(model, request, run):
    """``((result, forward passes), (result, forward passes))`` of the run with
    ``cache_reference`` on and off; the copies famr.unlearn makes keep the hook, so the
    student's and the teacher's forward passes both count."""
    calls = []
    hook = model.register_forward_hook(lambda *args: calls.append(1))
    try:
        out = []
        for cache in (True, False):
            calls[:] = []
            out.append((famr.unlearn(model, request, cache_reference=cache, **run), len(calls)))
    finally:
        hook.remove()
    return out


@pytest.mark.parametrize(
    "run",
    [
        # famr's last_stage recipe: the buffer drives, distilled references on both sets
        dict(method="famr", epochs=2, buffer_size=300),
        # famr_retain: the forget set (128 rows) drives 4 steps of 64, FAMR's uniform term; the
        # 200-row buffer is read in full, so cached
        dict(method="famr_retain", epochs=2, buffer_size=200),
    ],
    ids=["last_stage", "famr_retain"],
)
def test_cached_references_equal_per_batch_references(
    run, digits_model, digits_splits, monkeypatch
):
    """``cache_reference``: the original's predictions computed once before the run are the
    ones the objective computed on every batch (same rows, same order of shuffling), so the
    two paths train the same model up to the kernels' last bits; the original then runs once
    per chunk, not once per batch; references misaligned by one row would show; with
    augmentation (other pixels every pass) they are computed per batch, to the bit."""
    from famr.methods import famr_retain

    (cached, n_cached), (plain, n_plain) = _cached_and_per_batch(digits_model, digits_splits, run)
    assert cached.config.cache_reference is True and plain.config.cache_reference is False
    # the copies famr.unlearn makes keep the hook, so the student's and the teacher's forward
    # passes both count: per batch the teacher runs once a step (4 steps here, 1 chunk cached)
    assert n_plain >= n_cached + 3, (n_plain, n_cached)
    diff = (_flat(cached) - _flat(plain)).abs().max().item()
    assert diff < 1e-4, diff  # measured 0.0 with AVX-512 and AVX2-capped kernels (float32)
    # the test can see a fault: each image handed its neighbour's reference
    original = famr_retain.reference_logits
    monkeypatch.setattr(
        famr_retain, "reference_logits", lambda *a, **k: original(*a, **k).roll(1, 0)
    )
    shifted = famr.unlearn(digits_model, digits_splits, cache_reference=True, **run)
    assert (_flat(shifted) - _flat(plain)).abs().max().item() > 1e-3
    monkeypatch.setattr(famr_retain, "reference_logits", original)
    # the rows: what the original says of each image, chunked or not
    x, _ = digits_splits.forget.tensors
    cfg = cached.config
    whole = original(digits_model.eval(), x, cfg, "cpu", chunk=len(x))
    chunked = original(digits_model.eval(), x, cfg, "cpu", chunk=7)
    with torch.no_grad():
        direct = digits_model(x[:5])
    assert torch.allclose(whole, chunked, atol=1e-5) and torch.allclose(
        whole[:5], direct, atol=1e-5
    )
    augmented = {**run, "augment": "crop_flip"}
    a = famr.unlearn(digits_model, digits_splits, cache_reference=True, **augmented)
    b = famr.unlearn(digits_model, digits_splits, cache_reference=False, **augmented)
    assert torch.equal(_flat(a), _flat(b))


def test_quantile_targets_cached_once_equal_the_per_batch_targets(
    digits, digits_model, monkeypatch
):
    """famr_quantile (famr's quantile recipe) with ``cache_reference``: the per-example targets
    and the buffer's references computed once before the run train the same model as the
    objective's two teacher passes per step, up to the kernels' last bits; the teacher then
    runs once per chunk; targets handed to the wrong images would show."""
    from famr.methods import famr_quantile

    request = famr.RandomForget(0.1, seed=0).split(digits.train, digits.test, 10)
    holdout = TensorDataset(*digits.test[:300])  # images the model never trained on
    # two whole epochs (the rule checks only at step 1000), the confidence statistic
    run = dict(method="famr_quantile", epochs=2, check_every=1000, statistic="confidence")
    run.update(buffer_size=200, holdout=holdout)
    (cached, n_cached), (plain, n_plain) = _cached_and_per_batch(digits_model, request, run)
    steps = 2 * -(-len(request.forget) // 64)
    # per batch the teacher runs twice a step (forget targets, buffer references)
    assert n_plain >= n_cached + 2 * steps - 4, (n_plain, n_cached, steps)
    diff = (_flat(cached) - _flat(plain)).abs().max().item()
    assert diff < 1e-4, diff
    start = torch.cat([p.detach().flatten() for p in digits_model.parameters()])
    assert (_flat(cached) - start).abs().max().item() > 1e-3  # it ran
    original = famr_quantile.reference_logits
    monkeypatch.setattr(
        famr_quantile, "reference_logits", lambda *a, **k: original(*a, **k).roll(1, 0)
    )
    shifted = famr.unlearn(digits_model, request, cache_reference=True, **run)
    assert (_flat(shifted) - _flat(plain)).abs().max().item() > 1e-3


def test_references_are_cached_only_for_sets_read_in_full(digits_model, digits_splits):
    """A small forget set driving a few steps reads a fraction of a large buffer: its
    references stay per batch (the teacher never sees the unread rows up front)."""
    from famr.methods import famr_retain

    seen = []
    original = famr_retain.reference_logits

    def spy(model, images, *args, **kwargs):
        seen.append(len(images))
        return original(model, images, *args, **kwargs)

    famr_retain.reference_logits = spy
    try:
        # the forget set (128 rows of 3s) drives 1 step of 64: the 1,000-row buffer is
        # read 64 rows deep, not cached
        famr.unlearn(
            digits_model,
            digits_splits,
            method="famr_retain",
            epochs=1,
            max_steps=1,
            buffer_size=1000,
            batch_size=64,
        )
        assert seen == []
        famr.unlearn(digits_model, digits_splits, method="famr_retain", epochs=1, buffer_size=50)
        assert seen == [50]  # read in full (uniform target: the forget set's never needed)
    finally:
        famr_retain.reference_logits = original


# --- presets: each equals, weight for weight, the method it replaced -------------------------


def _old_uniform_kl_config():
    """The deleted ``uniform_kl`` method's config (FAMR with lam 0, uniform over all K, every
    parameter, SGD at 1e-3 for 5 epochs), written out as it was registered."""
    from famr.methods.famr import FamrHeadConfig

    values = {"lam": 0.0, "target": "uniform", "params": "all", "optimizer": "sgd"}
    values |= {"lr": 1e-3, "epochs": 5}
    return dataclasses.make_dataclass(
        "OldUniformKLConfig",
        [(k, type(v), dataclasses.field(default=v)) for k, v in values.items()],
        bases=(FamrHeadConfig,),
    )


def _old_registration(preset):
    """The method ``preset`` replaced, as it was registered at ed684cf: its function, config
    class, needs, uses and certificate flag (every one of them ``()`` and ``False``)."""
    from famr.methods.famr import run_famr
    from famr.methods.famr_quantile import FamrQuantileConfig, famr_quantile
    from famr.methods.famr_retain import FamrRetainConfig, famr_retain

    return {
        "famr_retain": (famr_retain, FamrRetainConfig, ("forget", "retain")),
        "famr_quantile": (famr_quantile, FamrQuantileConfig, ("forget", "retain", "holdout")),
        "uniform_kl": (run_famr, _old_uniform_kl_config(), ("forget",)),
    }[preset]


@pytest.mark.parametrize("preset", ["famr_retain", "famr_quantile", "uniform_kl"])
def test_preset_equals_the_method_it_replaced_on_digits(preset, digits, digits_model, monkeypatch):
    import pickle

    from famr.registry import Entry

    fn, config, needs = _old_registration(preset)
    entry = METHODS.get(preset)
    assert (entry.meta["needs"], entry.meta["uses"], entry.meta["certificate"]) == (
        needs,
        (),
        False,
    )
    assert entry.meta["preset_of"] in ("famr", "famr_literal")
    assert ("NeurIPS 2023" in entry.meta["paper"]) == (preset == "uniform_kl")  # its own source
    # every value of the old config, resolved as a run resolves it, before any override (the
    # old certificate field was True, never read: the method was registered without one)
    old = dataclasses.asdict(config()) | {"certificate": False}
    resolve = entry.meta["resolve"]
    given = set(needs) - {"forget"}
    resolved = entry.meta["config"]()
    resolved = resolve(resolved, given, "samples") if resolve else resolved
    assert {k: v for k, v in dataclasses.asdict(resolved).items() if k in old} == old
    # and the same weights, through famr.unlearn, bounded in steps to keep the test short
    meta = dict(config=config, needs=needs, uses=(), resolve=None, paper="old", certificate=False)
    monkeypatch.setitem(METHODS._entries, "old", Entry("old", fn, meta))
    if preset == "famr_quantile":  # a sample request, calibrated on unseen images
        splits = famr.RandomForget(0.1, seed=0).split(digits.train, digits.test, 10)
        extra = {"holdout": splits.test_retain, "forget_classes": []}
    else:
        splits, extra = famr.ClassForget(3).split(digits.train, digits.test, 10), {}
    common = dict(max_steps=30, buffer_size=300) if "retain" in needs else dict(max_steps=30)
    a = famr.unlearn(digits_model, splits.forget, splits.retain, method=preset, **common, **extra)
    b = famr.unlearn(digits_model, splits.forget, splits.retain, method="old", **common, **extra)
    assert a.method == preset and a.history[-1]["loss"] == b.history[-1]["loss"]
    for (name, p), q in zip(
        a.model.state_dict().items(), b.model.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q), name
    assert pickle.loads(pickle.dumps(a.config)) == a.config  # a result's config travels


@pytest.mark.parametrize("name", ["famr_matched", "famr_matched_retain", "famr_fisher"])
def test_a_retired_method_says_what_to_run_instead(name, tiny):
    model, forget, retain = tiny
    with pytest.raises(ValueError, match=f"method '{name}' was removed: .*run famr with"):
        famr.unlearn(model, forget, retain, method=name)


def test_a_preset_takes_explicit_values_over_its_own(tiny):
    model, forget, retain = tiny
    result = famr.unlearn(model, forget, retain, method="famr_retain", lr=1e-3, epochs=1)
    assert result.config.lr == 1e-3 and result.config.beta == 10.0
    assert result.config.recipe == "last_stage" and result.config.reset is False
    with pytest.raises(ValueError, match="needs retain data"):
        famr.unlearn(model, forget, method="famr_retain")


def _prefix_modules_run(model) -> list[int]:
    """Counts the images a small_cnn's first convolution computes (frozen under its last_stage
    recipe; a stand-in replaces the block that holds it, so a cached run does not reach it);
    returns the list of batch sizes the counter appends to."""
    ran: list[int] = []
    model.features[0][0].register_forward_hook(lambda _m, inputs, _o: ran.append(len(inputs[0])))
    return ran


def test_a_cached_prefix_trains_the_same_model_and_skips_the_frozen_stages(
    digits_model, digits_splits
):
    """``cache_prefix``: famr's last_stage recipe run from the cached input of its first
    re-initialised stage trains the same weights as full forward passes (the frozen stages
    give the same output on every pass), with the frozen stages run once per chunk, not once
    per step; the history says which path ran."""
    # the forget set read (the distilled target), so that both streams go through the prefix
    run = dict(method="famr", epochs=2, buffer_size=300, forget_target="distilled")
    model = copy.deepcopy(digits_model)
    ran = _prefix_modules_run(model)
    cached = famr.unlearn(model, digits_splits, cache_prefix=True, **run)
    n_cached = sum(ran)
    ran.clear()
    plain = famr.unlearn(model, digits_splits, cache_prefix=False, **run)
    assert cached.history[-1]["prefix_cached"] is True
    assert plain.history[-1]["prefix_cached"] is False
    # measured 0.0 with AVX-512 and with AVX2-capped kernels (float32)
    assert (_flat(cached) - _flat(plain)).abs().max().item() < 1e-5
    # full passes: 10 steps of 64 buffer + 64 forget images, after the teacher's references
    # (the copies famr.unlearn makes keep the hook); cached, the frozen stages see each image
    # once more and the 8-image checks (measured: 905 images against 1,669)
    assert n_cached + 500 <= sum(ran), (n_cached, sum(ran))


class _SkipNet(nn.Module):
    """A net whose output reads a frozen layer's output past the re-initialised stage."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.stage = nn.Conv2d(4, 4, 3, padding=1)
        self.classifier = nn.Linear(4, 10)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        return self.classifier((self.stage(h) + h).mean(dim=(2, 3)))


class _DropNet(_SkipNet):
    """A net with dropout before the re-initialised stage (random in train mode)."""

    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.classifier(self.stage(self.drop(torch.relu(self.stem(x)))).mean(dim=(2, 3)))


class _Gate(nn.Module):
    """``w * h`` with ``w`` starting (and re-initialised) at zero."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def reset_parameters(self):
        nn.init.zeros_(self.w)

    def forward(self, h):
        return self.w * h


class _GateNet(_SkipNet):
    """A frozen output reaching the logits past the moving stage through a moving weight that
    starts at zero: the logits at the start cannot show it, a NaN stand-in can."""

    def __init__(self):
        super().__init__()
        self.gate = _Gate()

    def forward(self, x):
        h = torch.relu(self.stem(x))
        return self.classifier(self.stage(h).mean(dim=(2, 3)) + self.gate(h.mean(dim=(2, 3))))


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, h):
        return self.conv(h) + h


class _ResidualNet(_SkipNet):
    """A residual stage (``conv(h) + h`` inside it): under bf16 autocast the stage must get
    its input in the dtype the full pass hands it (bfloat16), not as the batches carry it."""

    def __init__(self):
        super().__init__()
        self.stage = _Block()

    def forward(self, x):
        return self.classifier(self.stage(torch.relu(self.stem(x))).mean(dim=(2, 3)))


@pytest.mark.parametrize(
    "net, params",
    [
        (_SkipNet, "stage|classifier"),
        (_DropNet, "stage|classifier"),
        (_GateNet, "stage|classifier|gate"),
    ],
    ids=["skip", "dropout", "zero_gate"],
)
def test_a_prefix_that_does_not_reproduce_the_model_is_not_cached(net, params, digits_splits):
    """A frozen output read past the moving stage (a NaN stand-in would replace it), even
    through a moving weight that starts at zero (the logits at the start cannot show it), or
    dropout before the stage (the cached input would freeze one draw): the run takes full
    passes and trains what it trains without the cache (the gate learns)."""
    torch.manual_seed(0)
    model = net()
    run = dict(method="famr", epochs=1, buffer_size=200, params=params)
    first = famr.unlearn(model, digits_splits, cache_prefix=True, **run)
    second = famr.unlearn(model, digits_splits, cache_prefix=False, **run)
    assert first.history[-1]["prefix_cached"] is False
    assert torch.equal(_flat(first), _flat(second))
    if net is _GateNet:
        assert first.model.gate.w.item() != 0.0


def test_a_cached_prefix_under_bf16_hands_the_stage_bfloat16(digits_splits):
    torch.manual_seed(0)
    model = _ResidualNet()
    run = dict(method="famr", epochs=1, buffer_size=200, params="stage|classifier", bf16=True)
    cached = famr.unlearn(model, digits_splits, cache_prefix=True, **run)
    plain = famr.unlearn(model, digits_splits, cache_prefix=False, **run)
    assert cached.history[-1]["prefix_cached"] is True
    diff = (_flat(cached) - _flat(plain)).abs().max().item()
    assert diff < 1e-5, diff


def test_the_prefix_check_leaves_batchnorm_statistics_as_they_were(digits_model, digits_splits):
    """With BatchNorm in train mode before the stage the cache is refused (the statistics move
    on every pass), and the check's own passes leave no trace: the run equals the uncached one,
    buffers included."""
    run = dict(method="famr", epochs=1, buffer_size=200, batchnorm="train")
    cached = famr.unlearn(digits_model, digits_splits, cache_prefix=True, **run)
    plain = famr.unlearn(digits_model, digits_splits, cache_prefix=False, **run)
    assert cached.history[-1]["prefix_cached"] is False
    a, b = cached.model.state_dict(), plain.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_distillation_temperature_is_hintons_scaled_kl(tiny, monkeypatch):
    """``temperature``: the last_stage recipe's KL terms are T^2 KL(softmax(r/T) || softmax(l/T))
    (known answer on fixed logits, the removed classes taken out of the reference), and
    T = 1 is the plain KL to the bit."""
    from famr.losses import kl_from_reference
    from famr.methods.famr_retain import distillation_kl

    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0], [0.3, 0.2, -2.0, 1.0]])
    reference = torch.tensor([[1.0, 0.0, 3.0, -1.0], [-0.5, 2.0, 0.0, 0.5]])
    support = torch.tensor([False, True, True, True])
    t = 4.0
    p_ref = torch.softmax(reference[:, support] / t, dim=1)
    log_p = torch.log_softmax(logits / t, dim=1)[:, support]
    expected = t * t * (p_ref * (p_ref.log() - log_p)).sum(dim=1).mean()
    assert distillation_kl(logits, reference, support, t).item() == pytest.approx(
        expected.item(), rel=1e-6
    )
    assert torch.equal(
        distillation_kl(logits, reference, support, 1.0),
        kl_from_reference(logits, reference, support),
    )
    model, forget, retain = tiny
    run = dict(method="famr", forget_classes=[0], epochs=2, forget_target="distilled", device="cpu")
    plain = famr.unlearn(model, forget, retain, temperature=1.0, **run)
    assert plain.config.temperature == 1.0
    default = famr.unlearn(model, forget, retain, **run)
    assert default.config.temperature == 4.0  # the last_stage recipe's
    warm = famr.unlearn(model, forget, retain, temperature=t, **run)
    assert warm.config.temperature == t
    assert not torch.equal(_flat(plain), _flat(warm))
    # forget_temperature: None follows temperature; set, it applies to the forget term alone
    same = famr.unlearn(model, forget, retain, temperature=t, forget_temperature=t, **run)
    assert torch.equal(_flat(same), _flat(warm))
    split = famr.unlearn(model, forget, retain, temperature=t, forget_temperature=1.0, **run)
    assert not torch.equal(_flat(split), _flat(warm))
    assert not torch.equal(_flat(split), _flat(plain))


def test_mirror_adds_each_images_mirror_and_passes_over_both(tiny):
    """``mirror``: the buffer and the forget set gain each image flipped left to right (labels
    repeated), and a pass of the last_stage recipe reads the doubled buffer (twice the steps)."""
    from famr.methods.famr_retain import with_mirrors

    model, forget, retain = tiny
    data = famr.methods.MethodData(
        forget=forget.tensors, retain=retain.tensors, num_classes=4, forget_classes=[0]
    )
    mirrored = with_mirrors(data)
    for name, dataset in (("forget", forget), ("retain", retain)):
        images, labels = dataset.tensors
        got_images, got_labels = getattr(mirrored, name)
        assert torch.equal(got_images[: len(images)], images)
        assert torch.equal(got_images[len(images) :], images.flip(-1))
        assert torch.equal(got_labels, torch.cat([labels, labels]))
    unread = with_mirrors(data, forget=False)  # a set the objective never reads is not copied
    assert unread.forget is data.forget and len(unread.retain[1]) == 2 * len(retain)
    totals = {}
    for mirror in (False, True):
        famr.unlearn(
            model,
            forget,
            retain,
            method="famr",
            forget_classes=[0],
            epochs=2,
            batch_size=16,
            mirror=mirror,
            device="cpu",
            progress=lambda step, total, key=mirror: totals.__setitem__(key, total),
        )
    assert totals == {False: 6, True: 12}  # 48 retained rows, batches of 16, two passes


@pytest.mark.parametrize(
    "bad, says",
    [
        ({"temperature": 0.0}, "temperature=0.0 is not valid; it must be a finite number > 0"),
        ({"temperature": float("nan")}, "temperature=nan is not valid"),
        ({"forget_temperature": -1.0}, "forget_temperature=-1.0 is not valid"),
        ({"mirror": "yes"}, "mirror='yes' is not valid; it must be true or false"),
        ({"reset": 1}, "reset=1 is not valid; it must be true or false"),
        ({"forget_features": -1.0}, "forget_features=-1.0 is not valid"),
        (
            {"forget_features_target": "far"},
            "forget_features_target='far' is not valid; choose one of: mixture, nearest",
        ),
        (  # the recipe's default target does not read the forget set: nothing to shape
            {"forget_features": 1.0},
            "forget_features=1.0 shapes a re-initialised stage's features toward the distilled "
            "forget target; it needs reset=True and forget_target='distilled' (got reset=True, "
            "forget_target='none')",
        ),
        (
            {"forget_features": 1.0, "forget_target": "uniform"},
            "forget_features=1.0 shapes a re-initialised stage's features toward the distilled "
            "forget target; it needs reset=True and forget_target='distilled' (got reset=True, "
            "forget_target='uniform')",
        ),
    ],
)
def test_bad_distillation_values_are_named_on_the_recipe_that_has_them(bad, says, tiny):
    """On a request that resolves to the last_stage recipe (retain set given) a bad value of
    its distillation fields stops with the value and what it must be."""
    model, forget, retain = tiny
    with pytest.raises(ValueError, match=re.escape(says)):
        famr.unlearn(model, forget, retain, forget_classes=[0], method="famr", **bad)


def test_the_feature_pull_acts_only_on_a_reset_distilled_class_request():
    """pull_can_act, the one rule the config's refusal and auto's resolution share."""
    from famr.methods.famr_retain import pull_can_act

    assert pull_can_act(True, "distilled") and pull_can_act(True, "distilled", "classes")
    assert not pull_can_act(False, "distilled") and not pull_can_act(True, "uniform")
    assert not pull_can_act(True, "none", "classes")
    for kind in ("samples", "concept", "style"):
        assert not pull_can_act(True, "distilled", kind)


def test_feature_pull_is_the_distance_to_the_retained_class_means_mixture():
    """``forget_features``' term (known answer on fixed tensors): the forget features' mean
    squared distance to ``q @ means`` (``q`` the reference renormalised over the kept classes,
    the means soft-assigned by the buffer's renormalised references and decayed over batches),
    over the buffer batch's total feature variance."""
    from famr.methods.famr_retain import FeaturePull

    head = torch.nn.Sequential(torch.nn.Linear(3, 3))
    with pytest.raises(TypeError, match="boolean mask"):
        FeaturePull(head, kept_classes=[0, 2])
    kept = torch.tensor([True, False, True])  # the middle class forgotten
    pull = FeaturePull(head, kept_classes=kept, decay=0.5)
    assert len(head[0]._forward_hooks) == 1
    forget = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]], requires_grad=True)
    retain = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [1.0, 1.0, 1.0]])
    forget_ref = torch.tensor([[0.0, 5.0, 0.0], [1.0, -3.0, 0.0]])
    retain_ref = torch.tensor([[2.0, 0.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])

    def expected(batches):
        sums = counts = None
        for f, r in batches:
            q = torch.softmax(r[:, [0, 2]], dim=1)
            s, c = q.T @ f, q.sum(0)
            sums, counts = (s, c) if sums is None else (0.5 * sums + s, 0.5 * counts + c)
        means = sums / counts[:, None]
        target = torch.softmax(forget_ref[:, [0, 2]], dim=1) @ means
        variance = (retain - retain.mean(0)).pow(2).sum(1).mean()
        return ((forget - target).pow(2).sum(1).mean() / variance).item()

    first = pull(forget, retain, forget_ref, retain_ref)
    assert first.item() == pytest.approx(expected([(retain, retain_ref)]), rel=1e-6)
    first.backward()  # the gradient reaches the forget features, never the buffer's
    assert forget.grad is not None and forget.grad.abs().sum() > 0
    second = pull(forget, retain, forget_ref, retain_ref.flip(0))
    assert second.item() == pytest.approx(
        expected([(retain, retain_ref), (retain, retain_ref.flip(0))]), rel=1e-6
    )
    head(torch.ones(1, 3))
    assert torch.equal(pull.captured(), torch.ones(1, 3))
    # nearest: each forget row toward the buffer row of least distance - log P(same class)
    nearest = FeaturePull(head, kept_classes=kept, nearest=True)
    forget_ref = torch.tensor([[0.0, 5.0, 0.0], [-6.0, 0.0, 6.0]])
    retain_ref = torch.tensor([[2.0, 0.0, 0.0], [6.0, 0.0, -6.0], [0.0, 0.0, 1.0], [0.0, 0.0, 3.0]])
    q_f = torch.softmax(forget_ref[:, [0, 2]], dim=1)
    q_r = torch.softmax(retain_ref[:, [0, 2]], dim=1)
    variance = (retain - retain.mean(0)).pow(2).sum(1).mean()
    distance = torch.cdist(forget, retain).pow(2) / variance
    chosen = (distance - (q_f @ q_r.T).log()).argmin(dim=1)
    # the second forget row's closest buffer row (1) is of the other class: row 3 is taken
    assert distance.argmin(dim=1).tolist() == [2, 1] and chosen.tolist() == [2, 3]
    want = (forget - retain[chosen]).pow(2).sum(1).mean() / variance
    got = nearest(forget, retain, forget_ref, retain_ref)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    nearest.remove()
    pull.remove()
    assert len(head[0]._forward_hooks) == 0


def test_forget_features_moves_the_run_and_leaves_no_hook(tiny):
    """On the last_stage recipe the term changes the weights, is logged, and the hook it reads
    the features with is gone after the run."""
    model, forget, retain = tiny
    run = dict(method="famr", forget_classes=[0], epochs=2, forget_target="distilled", device="cpu")
    plain = famr.unlearn(model, forget, retain, forget_features=0.0, **run)
    pulled = famr.unlearn(model, forget, retain, forget_features=3.0, **run)
    assert pulled.config.forget_features == 3.0
    assert "forget_features" in pulled.history[-1] and "forget_features" not in plain.history[-1]
    assert not torch.equal(_flat(plain), _flat(pulled))
    assert all(not m._forward_pre_hooks for m in pulled.model.modules())
    assert all(not m._forward_hooks for m in pulled.model.modules())


def test_forget_features_survives_a_buffer_batch_of_one_row(tiny):
    """48 buffer rows in batches of 47 leave one row at the end of each pass, whose feature
    variance is 0: the term skips that batch instead of dividing by it (the run diverged)."""
    model, forget, retain = tiny
    run = dict(method="famr", forget_classes=[0], epochs=3, forget_target="distilled", device="cpu")
    result = famr.unlearn(model, forget, retain, batch_size=47, forget_features=0.1, **run)
    assert all(math.isfinite(h["loss"]) for h in result.history)
    assert result.history[-1]["forget_features"] >= 0


def test_forget_features_on_a_request_that_removes_no_class_says_it_is_unused(tiny):
    """A sample request's forget set is not read by the last_stage recipe: the term is not
    computed, and a warning says so instead of silence."""
    model, forget, retain = tiny
    with pytest.warns(UserWarning, match="forget_features=1.0 is not used: this request removes"):
        result = famr.unlearn(
            model,
            forget,
            retain,
            method="famr",
            forget_classes=[],
            forget_target="distilled",
            forget_features=1.0,
            epochs=1,
        )
    assert result.config.recipe == "last_stage"
    assert "forget_features" not in result.history[-1]


@pytest.mark.parametrize("batchnorm", ["moved", "eval"])
@pytest.mark.parametrize("cache_prefix", [True, False])
def test_forget_features_reads_the_forget_rows_own_features(
    tiny, monkeypatch, batchnorm, cache_prefix
):
    """On a model whose penultimate features are its flattened input (an identity convolution,
    frozen, then the head, which alone moves),
    the term reads the forget images (and their mirrors) as forget rows and buffer images as
    buffer rows, whether the batch is one pass or two, and with the frozen prefix cached up to
    the head (its input swapped in by a pre-hook), never the stand-ins' NaN."""
    from famr.methods import famr_retain

    _, forget, retain = tiny
    torch.manual_seed(0)
    identity = torch.nn.Conv2d(2, 2, 1, bias=False)  # frozen, before the head: a prefix
    with torch.no_grad():
        identity.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
    model = torch.nn.Sequential(identity, torch.nn.Flatten(), torch.nn.Linear(32, 4))
    seen = []
    call = famr_retain.FeaturePull.__call__

    def spy(self, forget_features, retain_features, *references):
        seen.append((forget_features.detach().clone(), retain_features.detach().clone()))
        return call(self, forget_features, retain_features, *references)

    monkeypatch.setattr(famr_retain.FeaturePull, "__call__", spy)
    result = famr.unlearn(
        model,
        forget,
        retain,
        method="famr",
        forget_classes=[0],
        params="head",
        batchnorm=batchnorm,
        cache_prefix=cache_prefix,
        forget_target="distilled",
        forget_features=1.0,
        epochs=1,
        batch_size=8,
        device="cpu",
    )
    assert result.history[-1]["prefix_cached"] is cache_prefix
    flat = {
        name: torch.cat([x, x.flip(-1)]).flatten(1)
        for name, x in (("forget", forget.tensors[0]), ("retain", retain.tensors[0]))
    }

    def rows_of(features, name):
        gaps = (features[:, None, :] - flat[name][None]).abs().amax(dim=2)
        return bool((gaps.min(dim=1).values < 1e-5).all())

    assert seen
    for forget_features, retain_features in seen:
        assert rows_of(forget_features, "forget") and not rows_of(forget_features, "retain")
        assert rows_of(retain_features, "retain") and not rows_of(retain_features, "forget")


def test_mirror_refuses_inputs_that_are_not_images():
    from famr.methods.famr_retain import with_mirrors

    data = famr.methods.MethodData(
        forget=(torch.randn(4, 6), torch.zeros(4, dtype=torch.long)),
        retain=(torch.randn(8, 6), torch.ones(8, dtype=torch.long)),
        num_classes=2,
        forget_classes=[0],
    )
    with pytest.raises(ValueError, match=r"shape \(8, 6\), not \(N, \.\.\., H, W\)"):
        with_mirrors(data)


def test_the_quantile_recipe_refuses_the_distillation_fields(tiny):
    """``temperature`` and ``mirror`` belong to the distilled stage; the quantile recipe, which
    inherits the retain anchor's config, says so instead of ignoring them."""
    from famr.methods.famr_quantile import FamrQuantileConfig

    bad_values = (
        {"temperature": 2.0},
        {"forget_temperature": 1.0},
        {"mirror": True},
        {"forget_features": 1.0},
        {"forget_features_target": "nearest"},
    )
    for bad in bad_values:
        with pytest.raises(ValueError, match=f"{next(iter(bad))}=.*not valid for famr's quantile"):
            FamrQuantileConfig(**bad)

"""Generated bad input on the command line: exit 2, one line, nothing written."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
from helpers import files_in, run_cli, train_digits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import famr


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return train_digits(tmp_path_factory.mktemp("checkpoint"))


# --- generated bad input: exit 2, one line, nothing written ----------------------------------

BAD_FLAGS = st.one_of(
    st.tuples(st.just("--lam"), st.sampled_from(["nan", "-1", "inf", "-inf", "abc"])),
    st.tuples(st.just("--lr"), st.sampled_from(["0", "-0.1", "nan", "inf"])),
    st.tuples(st.just("--epochs"), st.integers(-5, 0).map(str)),
    st.tuples(st.just("--batch-size"), st.integers(-5, 0).map(str)),
    st.tuples(st.just("--seed"), st.integers(-100, -1).map(str)),
    st.tuples(st.just("--method"), st.text("abcXYZ_", min_size=1, max_size=8)),
    st.tuples(st.just("--data"), st.sampled_from(["mnist", "imagenet", "", "DIGITS"])),
    st.tuples(st.just("--set"), st.sampled_from(["nope=1", "lam=nan", "batch_size=x", "lr"])),
)
BAD_CLASSES = st.one_of(
    st.integers(10, 10_000).map(str),
    st.integers(-1000, -1).map(str),
    st.integers(0, 9).map(lambda c: f"{c},{c}"),
    st.just(",".join(str(c) for c in range(10))),
    st.sampled_from(["", "cat", "3.5", "3;4"]),
)
BAD_INDICES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True)
    .filter(lambda f: not 0 < f < 1)
    .map(lambda f: f"random:{f}"),
    st.sampled_from(["random:", "random:half", "no/such/file.txt"]),
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    case=st.one_of(
        st.tuples(st.just("flag"), BAD_FLAGS),
        st.tuples(st.just("classes"), BAD_CLASSES),
        st.tuples(st.just("indices"), BAD_INDICES),
        st.tuples(st.just("file"), st.lists(st.integers(-50, 3000), min_size=0, max_size=6)),
    )
)
def test_generated_bad_requests_exit_2_with_one_line_and_write_nothing(checkpoint, tmp_path, case):
    kind, value = case
    folder = Path(tempfile.mkdtemp(dir=tmp_path))  # fresh per example
    base = ["forget", "--checkpoint", str(checkpoint), "--out", str(folder / "o.safetensors")]
    base += ["--quiet", "--epochs", "1"]
    if kind == "flag":
        argv = [*base, "--classes", "3", value[0], value[1]]
    elif kind == "classes":
        argv = [*base, "--classes", value]
    elif kind == "indices":
        argv = [*base, "--indices", value]
    else:  # an index file that is empty, duplicated or out of range (digits has 1,437 train)
        ids = list(value)
        if ids and all(0 <= i < 1437 for i in ids) and len(set(ids)) == len(ids):
            ids.append(ids[0])  # make it bad: a duplicate
        ids_file = tmp_path / "ids.txt"
        ids_file.write_text("\n".join(map(str, ids)))
        argv = [*base, "--indices", str(ids_file)]
    before = files_in(folder)
    code, _, err = run_cli(argv)
    assert code == 2, (argv, err)
    assert len(err.strip().splitlines()) == 1, err
    assert files_in(folder) == before


@settings(  # unlearn never modifies the fixture's model, so sharing it is safe
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    key=st.sampled_from(["lam", "lr", "epochs", "batch_size", "weight_decay", "grad_clip"]),
    value=st.one_of(
        st.floats(max_value=0.0, allow_nan=False), st.just(float("nan")), st.just(float("inf"))
    ),
)
def test_generated_bad_config_values_raise_naming_the_key(tiny, key, value):
    model, forget, retain = tiny
    if key in ("weight_decay", "grad_clip") and value == 0.0:
        value = -1.0  # zero is allowed there
    if key == "lam" and value == 0.0:
        value = -1.0
    with pytest.raises(ValueError, match=key):
        famr.unlearn(model, forget, retain, method="famr", **{key: value})


def test_an_anchor_of_another_architecture_is_refused_naming_both(checkpoint, tmp_path):
    from famr import io

    other = tmp_path / "wide.safetensors"
    arch_args = {"num_classes": 10, "in_channels": 1, "width": 32}
    wide = famr.create_model("small_cnn", **arch_args)
    io.save_checkpoint(other, wide, {"arch": "small_cnn", "arch_args": arch_args})
    out = tmp_path / "out.safetensors"
    argv = ["forget", "--checkpoint", str(checkpoint), "--classes", "3", "--anchor", str(other)]
    code, _, err = run_cli([*argv, "--out", str(out), "--quiet"])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--anchor" in err and "'small_cnn'" in err and "'width': 32" in err
    assert sorted(files_in(tmp_path)) == sorted([other.name, io.sidecar_path(other).name])


@pytest.mark.parametrize(
    "request_flags", [["--indices", "random:0.1"], ["--style", "sketch:0.2", "--forget-style"]]
)
def test_a_sample_request_after_a_class_request_is_refused_naming_the_classes(
    checkpoint, tmp_path, request_flags
):
    from famr.data.files import images_decoded

    first = tmp_path / "first" / "f.safetensors"
    first.parent.mkdir()
    argv = ["forget", "--checkpoint", str(checkpoint), "--classes", "3", "--epochs", "1"]
    assert run_cli([*argv, "--out", str(first), "--quiet"])[0] == 0
    there = tmp_path / "second"
    there.mkdir()
    decoded = images_decoded()
    argv = ["forget", "--checkpoint", str(first), *request_flags]
    code, _, err = run_cli([*argv, "--out", str(there / "g.safetensors"), "--quiet"])
    assert code == 2 and len(err.strip().splitlines()) == 1
    flag = [f for f in request_flags if f in ("--indices", "--forget-style")][0]
    assert err.startswith(f"famr: error: {flag}:") and "forgot classes [3]" in err
    assert "--classes" in err and files_in(there) == {} and images_decoded() == decoded


def test_holdout_test_is_refused_because_it_is_the_split_that_is_scored(checkpoint, tmp_path):
    out = tmp_path / "r.safetensors"
    argv = ["forget", "--checkpoint", str(checkpoint), "--indices", "random:0.1"]
    argv += ["--method", "famr_quantile", "--holdout", "test", "--out", str(out), "--quiet"]
    code, _, err = run_cli(argv)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "scored" in err and "--holdout validation" in err
    assert files_in(tmp_path) == {}


def test_holdout_validation_needs_a_recorded_validation_split(checkpoint, tmp_path):
    out = tmp_path / "r.safetensors"
    argv = ["forget", "--checkpoint", str(checkpoint), "--indices", "random:0.1"]
    argv += ["--method", "famr_quantile", "--holdout", "validation", "--out", str(out), "--quiet"]
    code, _, err = run_cli(argv)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "famr train --validation" in err and str(checkpoint) in err
    assert files_in(tmp_path) == {}
    # a method that does not calibrate on held-out data: refused, not silently ignored
    argv[argv.index("famr_quantile")] = "finetune"
    code, _, err = run_cli(argv)
    assert code == 2 and "'finetune' does not use held-out data" in err
    users = err.split("the methods that do: ")[1].strip().split(", ")
    assert {"famr_quantile", "famr"} <= set(users)  # the default famr takes it too
    assert files_in(tmp_path) == {}


def test_holdout_validation_is_the_retained_classes_of_the_validation_split(tmp_path):
    import json

    from famr.cli.forget import _holdout
    from famr.data import hold_out_validation

    data = hold_out_validation(famr.load_dataset("digits"), 0.2, seed=0)
    labels = data.validation.tensors[1]
    held = _holdout("validation", data, [3, 5], None)
    assert len(held) == int((labels != 3).sum() - (labels == 5).sum())
    assert not torch.isin(held.tensors[1], torch.tensor([3, 5])).any()
    # through the CLI: a checkpoint trained with a validation split, its record says which
    model = tmp_path / "m.safetensors"
    code, _, err = run_cli(
        ["train", "--data", "digits", "--epochs", "4", "--validation", "0.2", "--out", str(model)]
    )
    assert code == 0, err
    out = tmp_path / "r.safetensors"
    argv = ["forget", "--checkpoint", str(model), "--indices", "random:0.1", "--method"]
    argv += [
        "famr_quantile",
        "--epochs",
        "2",
        "--holdout",
        "validation",
        "--out",
        str(out),
        "--quiet",
    ]
    code, _, err = run_cli(argv)
    assert code == 0, err
    record = json.loads(out.with_suffix(".audit.json").read_text())
    assert record["request"]["holdout"] == "validation"
    assert run_cli(["verify", str(out.with_suffix(".audit.json"))])[0] == 0
    # the default famr on a sample request takes the recorded validation split by itself (its
    # quantile recipe), says so, and the record keeps it
    default = tmp_path / "d.safetensors"
    argv = ["forget", "--checkpoint", str(model), "--indices", "random:0.1", "--epochs", "2"]
    code, _, err = run_cli([*argv, "--out", str(default)])
    assert code == 0, err
    assert "uses the checkpoint's validation split as held-out data" in err
    assert "--set recipe=last_stage" in err and "warning" not in err
    record = json.loads(default.with_suffix(".audit.json").read_text())
    assert record["request"]["holdout"] == "validation"
    assert record["config"]["recipe"] == "quantile" and record["config"]["beta"] == 1.0
    assert run_cli(["verify", str(default.with_suffix(".audit.json"))])[0] == 0
    # held-out data famr would not use is refused, not recorded as if it had been: a class
    # request, or the last_stage recipe asked for by name
    for extra in (["--classes", "3"], ["--indices", "random:0.1", "--set", "recipe=last_stage"]):
        argv = ["forget", "--checkpoint", str(model), *extra, "--holdout", "validation"]
        code, _, err = run_cli([*argv, "--out", str(tmp_path / "x.safetensors"), "--quiet"])
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "'last_stage' recipe" in err and "does not use held-out data" in err
    assert not (tmp_path / "x.safetensors").exists()

"""The CLI through ``main(argv)``: the happy paths and every bad input (exit 2, nothing written)."""

import json

import pytest

from famr import io
from famr.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    path = folder / "digits.safetensors"
    assert (
        main(
            [
                "train",
                "--data",
                "digits",
                "--arch",
                "small_cnn",
                "--epochs",
                "8",
                "--out",
                str(path),
                "--quiet",
            ]
        )
        == 0
    )
    return path


def _files(folder):
    return sorted(p.name for p in folder.rglob("*"))


def test_methods_lists_every_method_one_line_each(capsys):
    import famr

    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == famr.list_methods()


def test_metrics_lists_directions(capsys):
    assert main(["metrics"]) == 0
    assert "higher = more forgotten" in capsys.readouterr().out


@pytest.mark.science
def test_train_writes_checkpoint_and_sidecar(checkpoint):
    meta = json.loads(io.sidecar_path(checkpoint).read_text())
    assert meta["arch"] == "small_cnn" and meta["dataset"] == "digits"
    assert meta["metrics"]["test_acc"] > 80


@pytest.mark.science
def test_forget_writes_model_and_metrics(checkpoint, tmp_path, capsys):
    out = tmp_path / "forgot.safetensors"
    code = main(
        [
            "forget",
            "--checkpoint",
            str(checkpoint),
            "--data",
            "digits",
            "--classes",
            "3",
            "--method",
            "famr",
            "--set",
            "recipe=head",  # the certified no-retain recipe
            "--lam",
            "0.1",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    meta = json.loads(io.sidecar_path(out).read_text())
    assert meta["forget"] == {"kind": "classes", "classes": [3]} and meta["method"] == "famr"
    assert meta["config"]["lam"] == 0.1 and meta["config"]["recipe"] == "head"
    assert meta["metrics"]["test_forget_acc"] <= 5.0
    assert meta["certificate"]["certified"] is True
    assert "certificate: certified" in capsys.readouterr().out


@pytest.mark.science
def test_the_default_forget_takes_a_sample_request_and_records_the_recipe(
    checkpoint, tmp_path, capsys
):
    """No --method, a random 10 %, a checkpoint without a validation split: famr is handed the
    retain set, resolves to its last_stage recipe, warns in one line that held-out data would
    give the per-example targets, and the audit record and the output say what ran."""
    out = tmp_path / "samples.safetensors"
    argv = ["forget", "--checkpoint", str(checkpoint), "--data", "digits"]
    code = main([*argv, "--indices", "random:0.1", "--out", str(out), "--quiet"])
    assert code == 0
    said = capsys.readouterr()
    assert said.err.count("famr: warning:") == 1 and "--holdout validation" in said.err
    meta = json.loads(io.sidecar_path(out).read_text())
    assert meta["method"] == "famr" and meta["config"]["recipe"] == "last_stage"
    assert meta["config"]["reset"] is True and meta["config"]["beta"] == 1.0
    record = json.loads(out.with_suffix(".audit.json").read_text())
    assert record["config"]["recipe"] == "last_stage"
    assert "famr (last_stage recipe):" in said.out


def test_forget_with_reference_reports_gaps(checkpoint, tmp_path):
    reference = tmp_path / "retrained.safetensors"
    assert (
        main(
            ["train", "--epochs", "8", "--exclude-classes", "3", "--out", str(reference), "--quiet"]
        )
        == 0
    )
    out = tmp_path / "f.safetensors"
    assert (
        main(
            [
                "forget",
                "--checkpoint",
                str(checkpoint),
                "--classes",
                "3",
                "--reference",
                str(reference),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    metrics = json.loads(io.sidecar_path(out).read_text())["metrics"]
    assert {"avg_gap", "tow", "ua_gap"} <= set(metrics)


def _bad(argv, capsys, folder, match, code=2):
    before = _files(folder)
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert match in err, err
    assert _files(folder) == before, "a failed command must write nothing"


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--classes", "12"], "unknown class id 12; valid class ids: 0..9"),
        (["--classes", ""], "no class to forget"),
        (["--classes", "cat"], "classes 'cat' are not valid"),
        (["--classes", "3", "--lam", "-1"], "lam=-1.0 is not valid"),
        (["--classes", "3", "--lam", "nan"], "lam=nan is not valid"),
        (["--classes", "3", "--lr", "0"], "lr=0.0 is not valid"),
        (["--classes", "3", "--method", "GA"], "unknown method 'GA'; valid choices:"),
        (["--classes", "3", "--set", "lambda=1"], "unknown config key(s) lambda"),
        (["--classes", "3", "--set", "epochs=many"], "epochs='many'"),
        (
            ["--classes", "3", "--data", "mnist"],
            "unknown data set 'mnist'; valid choices: cifar10, digits",
        ),
    ],
)
def test_forget_bad_input(checkpoint, tmp_path, capsys, extra, match):
    out = tmp_path / "out.safetensors"
    argv = ["forget", "--checkpoint", str(checkpoint), "--out", str(out), "--quiet", *extra]
    _bad(argv, capsys, tmp_path, match)


def test_missing_checkpoint(tmp_path, capsys):
    argv = [
        "forget",
        "--checkpoint",
        str(tmp_path / "nope.safetensors"),
        "--classes",
        "3",
        "--out",
        str(tmp_path / "o.safetensors"),
    ]
    _bad(argv, capsys, tmp_path, "not found")


def test_checkpoint_that_does_not_match_architecture(checkpoint, tmp_path, capsys):
    wrong = tmp_path / "wrong.safetensors"
    wrong.write_bytes(checkpoint.read_bytes())
    meta = json.loads(io.sidecar_path(checkpoint).read_text())
    meta["arch_args"]["width"] = 8
    io.sidecar_path(wrong).write_text(json.dumps(meta))
    argv = [
        "forget",
        "--checkpoint",
        str(wrong),
        "--classes",
        "3",
        "--out",
        str(tmp_path / "o.safetensors"),
    ]
    _bad(argv, capsys, tmp_path, "does not match architecture 'small_cnn'")


def test_existing_output_needs_overwrite(checkpoint, tmp_path, capsys):
    out = tmp_path / "o.safetensors"
    out.write_text("precious")
    argv = [
        "forget",
        "--checkpoint",
        str(checkpoint),
        "--classes",
        "3",
        "--out",
        str(out),
        "--quiet",
    ]
    _bad(argv, capsys, tmp_path, "already exists; pass --overwrite")
    assert out.read_text() == "precious"


def test_input_checkpoint_is_never_the_output(checkpoint, capsys):
    argv = [
        "forget",
        "--checkpoint",
        str(checkpoint),
        "--classes",
        "3",
        "--out",
        str(checkpoint),
        "--overwrite",
    ]
    _bad(argv, capsys, checkpoint.parent, "never overwritten")


def test_output_must_be_safetensors(checkpoint, tmp_path, capsys):
    argv = [
        "forget",
        "--checkpoint",
        str(checkpoint),
        "--classes",
        "3",
        "--out",
        str(tmp_path / "o.pt"),
    ]
    _bad(argv, capsys, tmp_path, "must end in .safetensors")


def test_diverging_run_writes_no_model(checkpoint, tmp_path, capsys):
    argv = [
        "forget",
        "--checkpoint",
        str(checkpoint),
        "--classes",
        "3",
        "--method",
        "famr_literal",
        "--lr",
        "1000",  # the largest rate famr accepts; the literal form diverges within 4 steps
        "--out",
        str(tmp_path / "o.safetensors"),
        "--quiet",
    ]
    _bad(argv, capsys, tmp_path, "at step", code=1)


def test_demo_bad_class_and_existing_output(tmp_path, capsys):
    _bad(
        ["demo", "--forget-class", "10", "--out", str(tmp_path / "d")],
        capsys,
        tmp_path,
        "unknown class id 10; valid class ids: 0..9",
    )
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "report.md").write_text("an earlier report")  # one of the demo's files
    _bad(["demo", "--out", str(tmp_path / "d")], capsys, tmp_path, "already exists")


def test_set_none_is_the_string_where_the_recipes_field_takes_it():
    """famr's auto config parses each --set value as the recipe's own type: "none" stays the
    string where the recipe's field is a string (forget_target, augment), and is None ("the
    recipe's value") where the recipe's field takes None (max_steps)."""
    from famr.config import make_config
    from famr.methods import METHODS
    from famr.methods.famr_auto import FamrConfig

    text = {"forget_target": "none", "augment": "none", "max_steps": "none", "epochs": "2"}
    cfg = make_config(FamrConfig, text, parse=True)
    assert (cfg.forget_target, cfg.augment, cfg.max_steps, cfg.epochs) == ("none", "none", None, 2)
    assert make_config(FamrConfig, {"epochs": "none"}, parse=True).epochs is None
    # a preset of famr re-declares the fields it fixes and keeps how they are parsed
    preset = METHODS.get("famr_retain").meta["config"]
    assert preset().forget_target == "uniform"
    assert make_config(preset, {"forget_target": "none"}, parse=True).forget_target == "none"


@pytest.mark.science
def test_forget_target_none_from_the_command_line_runs_what_it_says(checkpoint, tmp_path):
    """--set forget_target=none reaches the last_stage recipe as "none" (it was read as "the
    recipe's value", so the distilled target and its feature pull ran instead), and the
    record says so."""
    out = tmp_path / "none.safetensors"
    argv = ["forget", "--checkpoint", str(checkpoint), "--classes", "3", "--out", str(out)]
    sets = ["--set", "forget_target=none", "--set", "epochs=1", "--quiet"]
    assert main([*argv, *sets]) == 0
    meta = json.loads(io.sidecar_path(out).read_text())
    assert meta["config"]["recipe"] == "last_stage"
    assert meta["config"]["forget_target"] == "none" and meta["config"]["forget_features"] == 0


def test_argparse_errors_return_2(capsys):
    assert main(["forget"]) == 2
    assert main(["frobnicate"]) == 2


@pytest.mark.science
def test_certify_writes_json_and_markdown(checkpoint, tmp_path, capsys):
    unlearned = tmp_path / "u.safetensors"
    assert (
        main(
            [
                "forget",
                "--checkpoint",
                str(checkpoint),
                "--classes",
                "3",
                "--set",
                "recipe=head",  # the anchored objective the certificate is about
                "--out",
                str(unlearned),
                "--quiet",
            ]
        )
        == 0
    )
    out = tmp_path / "cert"
    assert (
        main(
            [
                "certify",
                "--original",
                str(checkpoint),
                "--unlearned",
                str(unlearned),
                "--classes",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    payload = json.loads((out / "certificate.json").read_text())
    cert = payload["certificate"]
    assert cert["certified"] and cert["lam"] == 0.1 and payload["target"] == "retained"
    assert cert["head_only"] and cert["newton"]["cosine"] > 0.5
    assert set(cert["output_deviation"]) == {"retain", "test_retain", "test_forget"}
    assert all(b["holds"] for b in cert["head_logit_bound"].values())
    assert "Newton (influence) step" in (out / "certificate.md").read_text()
    assert "verdict: **certified**" in capsys.readouterr().out


def test_certify_needs_lambda_for_non_famr_runs(checkpoint, tmp_path, capsys):
    unlearned = tmp_path / "ga.safetensors"
    assert (
        main(
            [
                "forget",
                "--checkpoint",
                str(checkpoint),
                "--classes",
                "3",
                "--method",
                "finetune",  # gradient ascent collapses digits: refused
                "--epochs",
                "1",
                "--out",
                str(unlearned),
                "--quiet",
            ]
        )
        == 0
    )
    capsys.readouterr()
    _bad(
        [
            "certify",
            "--original",
            str(checkpoint),
            "--unlearned",
            str(unlearned),
            "--classes",
            "3",
            "--out",
            str(tmp_path / "c"),
        ],
        capsys,
        tmp_path,
        "records no lambda",
    )


@pytest.mark.science
def test_sweep_lambda(checkpoint, tmp_path):
    out = tmp_path / "sweep"
    assert (
        main(
            [
                "sweep-lambda",
                "--checkpoint",
                str(checkpoint),
                "--classes",
                "3",
                "--lams",
                "0.1,10",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert [r["lam"] for r in rows] == [0.1, 10.0]
    # famr's head recipe (the anchored objective), though the command hands it the retain set
    assert all(isinstance(r["certified"], bool) and r["final_bound"] for r in rows)
    assert rows[0]["distance"] > rows[1]["distance"]  # a stronger anchor moves less
    assert (out / "lambda_path.png").stat().st_size > 1000


@pytest.mark.parametrize("lams", ["abc", "-1,1", "nan", ""])
def test_sweep_lambda_bad_grid(checkpoint, tmp_path, capsys, lams):
    _bad(
        [
            "sweep-lambda",
            "--checkpoint",
            str(checkpoint),
            "--classes",
            "3",
            f"--lams={lams}",
            "--out",
            str(tmp_path / "s"),
        ],
        capsys,
        tmp_path,
        "--lams",
    )


def test_bf16_on_a_cpu_without_native_bf16_gets_a_speed_note(tmp_path, capsys, monkeypatch):
    from famr import io

    argv = ["train", "--epochs", "1", "--set", "bf16=true", "--quiet"]
    for native, expected in ((False, True), (True, False)):
        monkeypatch.setattr(io, "native_bf16", lambda native=native: native)
        out = tmp_path / f"m{int(native)}.safetensors"
        assert main([*argv, "--out", str(out)]) == 0
        err = capsys.readouterr().err
        assert ("no native bfloat16" in err and "drop bf16=true" in err) == expected


def test_the_demo_runs_every_method_at_its_digits_preset(tmp_path, monkeypatch):
    import famr.experiment
    from famr.experiment import comparable_methods
    from famr.presets import PRESETS, configs_for

    seen = {}

    class Stop(Exception):
        pass

    def instead(data, classes, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(famr.experiment, "run_class_forgetting", instead)
    with pytest.raises(Stop):
        main(["demo", "--out", str(tmp_path / "d"), "--quiet"])
    assert seen["methods"] == configs_for("digits", comparable_methods())
    assert set(PRESETS["digits"]) <= set(seen["methods"])
    for method, config in PRESETS["digits"].items():
        assert seen["methods"][method] == config
    assert not (tmp_path / "d").exists()  # nothing written by a run that did not finish


def test_python_dash_m_famr_runs_the_command_line():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "famr", "methods"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "famr_literal" in done.stdout and "finetune" in done.stdout

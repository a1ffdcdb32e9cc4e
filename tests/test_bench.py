"""famr.bench, what the benchmark scripts share: known answers for the selection rules that
decide what a table reports, the model cache, and scripts that run nothing at import."""

import importlib.util
import os
import re
from pathlib import Path

import pytest
import torch

import famr
from famr import bench

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_quantile_choice_is_the_smallest_estimated_gap_without_the_retrained_model():
    fast, slow = "famr_quantile", "famr_quantile_beta1"
    runs = {
        "original": {"retain_acc": 93.5},
        # reached the held-out level but overshot and lost the retained data
        fast: {"forget_acc": 82.5, "retain_acc": 83.5, "history": [{"stopped_at": 40}]},
        # stayed above the level, retain kept: (|89.5 - 86.5| + |92.5 - 93.5|) / 2 = 2
        slow: {"forget_acc": 89.5, "retain_acc": 92.5, "history": [{"stopped_at": None}]},
        "retrain": {"forget_acc": 0.0, "retain_acc": 0.0},  # must not matter
    }
    chosen = bench.choose_quantile(runs, holdout_acc=86.5, candidates=[fast, slow])
    assert chosen["run"] == slow
    assert chosen["estimated_gap"][slow] == pytest.approx(2.0)
    assert chosen["estimated_gap"][fast] == pytest.approx((4.0 + 10.0) / 2)
    assert chosen["reached_level"] == [fast]
    # a diverged run is never chosen
    runs[slow] = {"diverged": "step 3"}
    assert bench.choose_quantile(runs, holdout_acc=86.5, candidates=[fast, slow])["run"] == fast


# a one-epoch digits model: what the cache tests train
TINY_TRAINING = dict(
    arch="small_cnn",
    arch_args={"num_classes": 10, "in_channels": 1, "width": 4},
    train_config={"epochs": 1},
    seed=0,
    data_label="digits (test)",
    device=torch.device("cpu"),
    say=lambda message: None,
)


def test_a_trained_model_is_cached_by_its_whole_configuration(tmp_path, digits):
    common = dict(TINY_TRAINING)
    first, record = bench.trained_model(tmp_path, digits, **common)
    again, cached = bench.trained_model(tmp_path, digits, **common)
    assert not record["cached"] and cached["cached"]
    assert all(
        torch.equal(a, b) for a, b in zip(first.parameters(), again.parameters(), strict=True)
    )
    other, _ = bench.trained_model(tmp_path, digits, **{**common, "seed": 1})
    assert not torch.equal(next(first.parameters()), next(other.parameters()))
    # a reference retrained without a request: famr's retrain method, cached too
    without = famr.ClassForget(3)
    retrained, record = bench.trained_model(tmp_path, digits, **common, without=without)
    assert not record["cached"] and len(list(tmp_path.glob("*.safetensors"))) == 3


SHIPPED = bench.SHIPPED  # the repository's own, before the fixture below hides it


@pytest.fixture(autouse=True)
def _no_shipped_checkpoints(tmp_path_factory, monkeypatch):
    # every test here trains its own models: none is served from the repository's checkpoints
    monkeypatch.setattr(bench, "SHIPPED", tmp_path_factory.mktemp("no-shipped"))


def test_a_shipped_checkpoint_is_a_hit_and_nothing_is_trained(tmp_path, digits, monkeypatch):
    """A model in the shipped folder is loaded, not trained again, and the cache folder is left
    as it was; the cache folder's own copy is read first; a damaged shipped file is not used."""
    common = dict(TINY_TRAINING)
    shipped, cache = tmp_path / "shipped", tmp_path / "cache"
    first, _ = bench.trained_model(shipped, digits, **common)
    monkeypatch.setattr(bench, "SHIPPED", shipped)
    monkeypatch.setattr(bench, "train", lambda *a, **k: pytest.fail("trained again"))
    said = []
    again, record = bench.trained_model(cache, digits, **{**common, "say": said.append})
    assert record["cached"] and not cache.exists()
    assert all(
        torch.equal(a, b) for a, b in zip(first.parameters(), again.parameters(), strict=True)
    )
    assert str(shipped) in said[0]
    # a copy in the cache folder is read first
    cache.mkdir()
    for f in shipped.iterdir():
        (cache / f.name).write_bytes(f.read_bytes())
    said.clear()
    bench.trained_model(cache, digits, **{**common, "say": said.append})
    assert str(cache) in said[0] and str(shipped) not in said[0]
    # FAMR_NO_SHIPPED=1 (the timed whole benchmark): the shipped file is not read
    for f in cache.iterdir():
        f.unlink()
    monkeypatch.setenv("FAMR_NO_SHIPPED", "1")
    with pytest.raises(pytest.fail.Exception, match="trained again"):
        bench.trained_model(cache, digits, **common)
    monkeypatch.delenv("FAMR_NO_SHIPPED")
    # a damaged shipped file is trained again (here: the refusal to train says it was reached)
    for f in cache.iterdir():
        f.unlink()
    weights = next(shipped.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"damaged!")
    with pytest.raises(pytest.fail.Exception, match="trained again"):
        bench.trained_model(cache, digits, **common)


def test_the_shipped_checkpoints_are_hits_under_todays_training_code():
    """Each shipped checkpoint is named by the hash of the key stored beside it, made with
    today's training code: else no benchmark would ever load it (a stale file, to retrain)."""
    import json

    found = sorted(SHIPPED.glob("*.safetensors"))
    if not found:
        pytest.skip("no checkpoints shipped")
    today = bench.training_key("a", {}, {}, 0, [], "d", "cpu")
    for path in found:
        key = json.loads(famr.io.sidecar_path(path).read_text())["key"]
        assert bench.config_hash(key) == path.stem
        assert set(key) == set(today) and key["code"] == today["code"]


def test_a_lock_left_by_a_killed_run_does_not_block_the_next(tmp_path):
    key = {"arch": "small_cnn", "arch_args": {"num_classes": 10, "width": 4}, "label": "k"}
    # a run killed while training leaves its lock file behind, held by nobody
    (tmp_path / f"{bench.config_hash(key)}.lock").touch()
    said = []

    def build():
        return famr.create_model("small_cnn", num_classes=10, width=4), {"seconds": 0.0}

    model, record = bench.cached_training(tmp_path, key, build, say=said.append)
    assert not record["cached"] and not any("waiting" in m for m in said)
    assert bench.cached_training(tmp_path, key, build, say=said.append)[1]["cached"]


def test_the_tcmalloc_reexec_happens_only_for_a_script_run_as_a_command(monkeypatch):
    calls = []
    monkeypatch.delenv("FAMR_NO_TCMALLOC", raising=False)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.setattr(bench, "TCMALLOC", __file__)
    monkeypatch.setattr(os, "execve", lambda *args: calls.append(args))
    bench.reexec_with_tcmalloc(["--quick"])  # main([...]) called from Python: never
    assert calls == []
    bench.reexec_with_tcmalloc()
    assert len(calls) == 1 and calls[0][2]["LD_PRELOAD"] == __file__
    monkeypatch.setenv("FAMR_NO_TCMALLOC", "1")
    bench.reexec_with_tcmalloc()
    assert len(calls) == 1


def test_a_held_lock_makes_the_next_run_wait_and_then_load(tmp_path):
    import fcntl
    import threading

    key = {"arch": "small_cnn", "arch_args": {"num_classes": 10, "width": 4}, "label": "k"}
    built, said, got = [], [], {}

    def build():
        built.append(1)
        return famr.create_model("small_cnn", num_classes=10, width=4), {"seconds": 0.0}

    bench.cached_training(tmp_path, key, build, say=said.append)  # trained and cached
    (tmp_path / f"{bench.config_hash(key)}.safetensors").rename(tmp_path / "held.safetensors")
    holder = open(tmp_path / f"{bench.config_hash(key)}.lock", "a")  # another run trains it
    fcntl.flock(holder, fcntl.LOCK_EX)
    waiter = threading.Thread(
        target=lambda: got.update(r=bench.cached_training(tmp_path, key, build, say=said.append))
    )
    waiter.start()
    waiter.join(timeout=1.0)
    assert waiter.is_alive() and any("waiting" in m for m in said)  # it waits
    (tmp_path / "held.safetensors").rename(tmp_path / f"{bench.config_hash(key)}.safetensors")
    fcntl.flock(holder, fcntl.LOCK_UN)
    holder.close()
    waiter.join(timeout=30)
    assert not waiter.is_alive() and got["r"][1]["cached"] and built == [1]  # loaded, not rebuilt


def test_a_cache_hit_needs_no_write_access(tmp_path, monkeypatch):
    key = {"arch": "small_cnn", "arch_args": {"num_classes": 10, "width": 4}, "label": "k"}

    def build():
        return famr.create_model("small_cnn", num_classes=10, width=4), {"seconds": 0.0}

    bench.cached_training(tmp_path, key, build, say=lambda m: None)

    def refuse(*args, **kwargs):  # a read-only cache (a chmod would not stop root)
        raise PermissionError("read-only cache")

    monkeypatch.setattr(Path, "mkdir", refuse)
    monkeypatch.setattr(bench, "open", refuse, raising=False)
    assert bench.cached_training(tmp_path, key, build, say=lambda m: None)[1]["cached"]


def test_benchmarks_md_sections_are_replaced_in_place(tmp_path):
    path = tmp_path / "B.md"
    path.write_text("# Benchmarks\n\n<!-- a:start -->\nold\n<!-- a:end -->\n\ntail\n")
    bench.update_benchmarks_md("a", "new", path)
    bench.update_benchmarks_md("b", "added", path)
    text = path.read_text()
    assert "old" not in text and "<!-- a:start -->\nnew\n<!-- a:end -->" in text
    assert text.index("tail") < text.index("<!-- b:start -->")


@pytest.mark.parametrize("script", sorted(p.stem for p in BENCHMARKS.glob("*.py")))
def test_benchmark_scripts_run_nothing_at_import(script, monkeypatch):
    """Importing a script (as a test, or another script would) neither re-executes the
    process nor starts any work: that happens in main()."""
    monkeypatch.delenv("FAMR_NO_TCMALLOC", raising=False)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    # as if tcmalloc were installed, so that a re-exec at import would happen here
    monkeypatch.setattr(bench, "TCMALLOC", __file__)

    def refuse(*args, **kwargs):
        raise AssertionError(f"{script} re-executed the process at import")

    monkeypatch.setattr(os, "execve", refuse)
    assert callable(getattr(_load(script), "main", None))


def _load(script: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{script}", BENCHMARKS / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_scenarios_quantile_candidates_are_valid_famr_quantile_configs():
    from famr.config import make_config
    from famr.methods import METHODS

    runs = _load("scenarios").QUANTILE_RUNS
    assert "famr_quantile" in runs and len(runs) >= 2  # choose_quantile picks among them
    config = METHODS.get("famr_quantile").meta["config"]
    for overrides in runs.values():
        make_config(config, overrides)  # a typo or an out-of-range value raises


def test_famrs_recipes_are_the_cifar10_validation_study_choices():
    """famr's last_stage recipe (a retain set given) is the CIFAR-10 study's famr_last_stage
    choice, and every value it changes from famr_retain's defaults is one the study fixed; its
    head recipe (no retain set) is the digits study's choice."""
    import dataclasses
    import json

    from famr.methods import METHODS

    study = json.loads((BENCHMARKS / "results" / "famr_study_cpu.json").read_text())
    entry = METHODS.get("famr")
    config = entry.meta["config"]()
    last_stage = entry.meta["resolve"](config, {"retain"})
    chosen = dict(study["chosen"]["famr_last_stage"]["config"])
    assert chosen.pop("method") == "famr_retain" and last_stage.recipe == "last_stage"
    # the study names the modules for its ResNet-20 (last_blocks:2); the default names a rule
    # that gives the same modules there and is defined on every model (last_stage_but_first)
    from famr.loop import select_parameters

    resnet = famr.create_model("resnet20", 10)
    moved = {n for n, _ in select_parameters(resnet, chosen.pop("params"))}
    assert {n for n, _ in select_parameters(resnet, last_stage.params)} == moved
    assert {k: getattr(last_stage, k) for k in chosen} == chosen
    from famr.methods.famr_retain import FamrRetainConfig  # the famr_retain preset's values

    base = dataclasses.asdict(FamrRetainConfig())
    changed = {k for k in base if base[k] != getattr(last_stage, k)}
    # nothing to certify after a reset; the feature pull's target is read only with the pull
    # on, which the study left off (nearest: the better target there when it was on)
    unread = {"forget_features_target"} if last_stage.forget_features == 0 else set()
    assert changed <= set(chosen) | {"params", "certificate"} | unread
    # the head recipe's defaults are the digits validation study's (README, "How the
    # defaults were chosen"); on CIFAR-10 the benchmark runs the CIFAR-10 study's choice
    from famr.presets import PRESETS

    head = entry.meta["resolve"](config, set())
    chosen = dict(PRESETS["digits"]["famr_head"])
    assert (chosen.pop("method"), chosen.pop("recipe")) == ("famr", "head")
    assert head.recipe == "head" and {k: getattr(head, k) for k in chosen} == chosen


def test_the_digits_presets_are_the_validation_study_choices():
    import json

    from famr.presets import PRESETS

    study = json.loads((BENCHMARKS / "results" / "presets_digits.json").read_text())
    assert PRESETS["digits"] == {m: c["config"] for m, c in study["chosen"].items()}
    # chosen on the validation split of the demo's data, never its test set
    assert study["classes"] and "never on the test set" in study["rule"]


def test_parse_runs_checks_every_run_before_any_work():
    """--run LABEL JSON (the benchmarks' shared parser): a valid config comes back as given;
    bad JSON, a non-object, a config naming no method, a taken label, an unknown method or key
    and a bad value each stop with one line naming what is wrong."""
    good = [("famr_head", '{"method": "famr", "recipe": "head"}')]
    assert bench.parse_runs(good, ["famr"]) == {"famr_head": {"method": "famr", "recipe": "head"}}
    cases = [
        (("x", "{bad"), "not JSON"),
        (("x", '"famr"'), "give a JSON object naming its method"),
        (("x", '{"lr": 0.1}'), "give a JSON object naming its method"),
        (("famr", '{"method": "famr"}'), "the label is taken"),
        (("x", '{"method": "nope"}'), "unknown method 'nope'"),
        (("x", '{"method": "famr", "recpe": "head"}'), "recpe"),
        (("x", '{"method": "famr", "recipe": "hed"}'), "recipe='hed'"),
    ]
    for pair, message in cases:
        with pytest.raises(SystemExit, match=re.escape(message)):
            bench.parse_runs([pair], ["famr"])
    with pytest.raises(SystemExit, match="the label is taken"):
        bench.parse_runs([("a", '{"method": "famr"}'), ("a", '{"method": "famr"}')], [])
    assert bench.relearn_lr([0.01]) == 0.01 and bench.relearn_lr([0.01, 0.1]) == (0.01, 0.1)


def test_famrs_quantile_recipe_is_the_held_out_rules_choice_on_cifar10():
    """famr's quantile recipe (a sample request with held-out data) takes the famr_quantile
    run that the held-out rule chose on the CIFAR-10 random 10 % (never the retrained model)."""
    import json

    from famr.methods import METHODS

    results = json.loads((BENCHMARKS / "results" / "scenarios_cpu.json").read_text())
    chosen = results["blocks"]["random"]["chosen_famr_quantile"]["run"]
    overrides = _load("scenarios").QUANTILE_RUNS[chosen]
    entry = METHODS.get("famr")
    recipe = entry.meta["resolve"](entry.meta["config"](), {"retain", "holdout"}, "random")
    assert recipe.recipe == "quantile"
    from famr.methods.famr_quantile import FamrQuantileConfig  # the famr_quantile preset's

    expected = FamrQuantileConfig(**overrides)
    assert {k: getattr(recipe, k) for k in overrides} == overrides
    assert all(getattr(recipe, f) == getattr(expected, f) for f in expected.__dataclass_fields__)


def test_scenario_reruns_join_the_block_and_keep_its_stamp(monkeypatch, capsys):
    """scenarios.py --runs: the new runs join the block's earlier ones (the same label
    replaced), the block keeps the command and date it was measured with, lists the rerun with
    its own, and the table says so; without --runs a block is written fresh."""
    import argparse

    scenarios = _load("scenarios")
    earlier = {
        "runs": {"original": {"avg_gap": 3.0}, "famr": {"avg_gap": 9.0}, "salun": {"avg_gap": 11}},
        "command": "python benchmarks/scenarios.py --scenarios random",
        "date": "2026-12-06",
        "environment": {"torch": "2.14.1"},
        "attack_config": {"relearn": {"lr": 0.01}},
        "forget": {"count": 4500},
    }
    monkeypatch.setattr(scenarios, "previous_block", lambda data, name: earlier)
    args = argparse.Namespace(data="cifar10", runs=["famr"], relearn_lr=[0.01], replace=False)
    args.relearn_eval_limit = None
    new = {"runs": {"original": {"avg_gap": 3.0}, "famr": {"avg_gap": 0.5}}, "seed": 0}
    block = scenarios.merged(args, "random", new)
    assert block["runs"] == {
        "original": {"avg_gap": 3.0},
        "famr": {"avg_gap": 0.5},
        "salun": {"avg_gap": 11},
    }
    assert block["command"] == earlier["command"] and block["date"] == "2026-12-06"
    assert [r["runs"] for r in block["reruns"]] == [["famr"]]
    assert block["reruns"][0]["command"].startswith("python benchmarks/scenarios.py")
    lines = []
    monkeypatch.setattr(bench, "update_benchmarks_md", lambda name, text: lines.append(text))
    scenarios.write_table(
        {"data": "cifar10", "arch": "resnet20", "seed": 0, "blocks": {"random": block}}
    )
    assert "Rerun on " in lines[0] and "`famr`, with `python benchmarks/scenarios.py" in lines[0]
    args.replace = True  # --replace: the block holds only the new runs
    assert scenarios.merged(args, "random", new) is new
    args.runs, args.replace = None, False
    assert scenarios.merged(args, "random", new) is new
    # a rerun whose attack columns would mean something else is refused before any work
    argv = ["--data", "cifar10", "--scenarios", "random", "--runs", "famr", "--relearn-lr"]
    assert scenarios.parse_args([*argv, "0.01"]).runs == ["famr"]
    with pytest.raises(SystemExit):
        scenarios.parse_args([*argv, "0.03"])
    assert "--runs joins the earlier 'random' block" in capsys.readouterr().err
    earlier["seed"] = 1
    with pytest.raises(SystemExit):
        scenarios.parse_args([*argv, "0.01"])
    assert "measured with --seed 1" in capsys.readouterr().err


def test_a_rerun_is_listed_only_for_the_rows_it_still_gives():
    """The table names, for each row measured again, only the last rerun that measured it (the
    same command run twice is listed once); the JSON keeps every rerun."""
    scenarios = _load("scenarios")
    reruns = [
        {"runs": ["famr", "famr_sequential"], "command": "a"},
        {"runs": ["famr", "salun"], "command": "b"},
        {"runs": ["famr", "famr_sequential"], "command": "a"},
    ]
    shown = scenarios.current_reruns(reruns)
    assert [(r["command"], labels) for r, labels in shown] == [
        ("b", ["salun"]),
        ("a", ["famr", "famr_sequential"]),
    ]
    assert scenarios.current_reruns([]) == []


def test_epsilon_join_adds_rows_only_against_the_same_retrained_models(tmp_path, monkeypatch):
    """epsilon.py --join: rows join the file measured on the same data, request, N and setup
    (else it stops before any work), and only when the retrained models' calibration comes
    out the same; a method measured again replaces its row, and the table lists the rerun."""
    import json

    epsilon = _load("epsilon")
    args = epsilon.parse_args(["--join", "--methods", "famr"])
    setup = epsilon.setup_for(args)
    out = tmp_path / "epsilon_digits_random01.json"
    monkeypatch.setattr(epsilon, "results_path", lambda args: out)
    with pytest.raises(SystemExit, match="does not exist"):
        epsilon.earlier_results(args, setup)
    env = {"cpu_count": 2, "machine": "x86_64", "cpu_capability": "AVX512", "torch": "2.14.1"}
    calibration = {"forget_quality": 0.147, "score": 0.147}
    report = {"forget_quality": 0.1, "score": 0.1, "retain_acc": 99.0, "test_acc": 98.0}
    report.update(peaky_or_separated=0.0, unlearned_spread=1.0)
    earlier = {
        "command": "python benchmarks/epsilon.py --n 32",
        "date": "2026-11-30",
        "environment": env,
        "data": "digits",
        "request": "random:0.1",
        "n": 32,
        "setup": setup,
        "forget_count": 101,
        "rows": {
            "retrain": {"calibration": calibration},
            "famr": {p: {"refused": "no"} for p in ("one_original", "n_originals")},
            "finetune": {p: report for p in ("one_original", "n_originals")},
        },
    }
    out.write_text(json.dumps(earlier))
    assert epsilon.earlier_results(args, setup)["rows"].keys() == earlier["rows"].keys()
    other = epsilon.parse_args(["--join", "--n", "8"])
    with pytest.raises(SystemExit, match="its rows would not compare"):
        epsilon.earlier_results(other, epsilon.setup_for(other))
    payload = {
        "command": "python benchmarks/epsilon.py --join --methods famr",
        "date": "2026-12-07",
        "environment": env,
        "runs": {"famr": {"method": "famr"}},
        "rows": {
            "retrain": {"calibration": dict(calibration)},
            "famr": {p: report for p in ("one_original", "n_originals")},
        },
    }
    both = epsilon.joined(earlier, payload)
    assert both["rows"]["famr"] == payload["rows"]["famr"]
    assert both["rows"]["finetune"] == earlier["rows"]["finetune"]
    assert both["command"] == earlier["command"] and both["reruns"][0]["rows"] == ["famr"]
    table = epsilon.markdown(both, out.name)
    assert "measured again on 2026-12-07" in table and "`famr`" in table
    assert "refuses" not in table  # the famr row was replaced
    payload["rows"]["retrain"]["calibration"]["forget_quality"] = 0.15
    with pytest.raises(SystemExit, match="not the same models"):
        epsilon.joined(earlier, payload)


def test_a_rerun_keeps_which_earlier_quantile_runs_reached_the_level():
    """scenarios.rechosen: the file keeps no histories, so a quantile run not run again keeps
    whether it reached the held-out level from the block's earlier choice; one run again is
    read from its new history."""
    scenarios = _load("scenarios")
    runs = {
        "original": {"retain_acc": 93.5},
        "famr_quantile": {"forget_acc": 86.0, "retain_acc": 92.0},  # no history in the file
        "famr_quantile_beta1": {"forget_acc": 86.5, "retain_acc": 93.0, "history": [{}]},
        "famr_quantile_l2": {
            "forget_acc": 80.0,
            "retain_acc": 80.0,
            "history": [{"stopped_at": 25}],
        },
    }
    earlier = {"reached_level": ["famr_quantile", "famr_quantile_beta1"]}
    block = {"runs": runs, "chosen_famr_quantile": earlier}
    quantile = ["famr_quantile", "famr_quantile_beta1", "famr_quantile_l2"]
    chosen = scenarios.rechosen(
        block, 86.5, quantile, ran=["famr_quantile_beta1", "famr_quantile_l2"]
    )
    assert chosen["run"] == "famr_quantile_beta1"
    # kept: famr_quantile (not rerun); dropped: beta1 (rerun, did not stop); new: l2
    assert chosen["reached_level"] == ["famr_quantile", "famr_quantile_l2"]


def test_reuse_reference_needs_a_join_and_the_same_forget_set(monkeypatch, capsys):
    """scenarios.py --reuse-reference: only with --runs joining a block that holds original
    and retrain rows (refused before any work otherwise), and only for the same forget set
    (the indices' sha256), handing those two rows to compare_methods."""
    import argparse

    scenarios = _load("scenarios")
    rows = {"original": {"forget_acc": 99.0}, "retrain": {"forget_acc": 0.0}}
    earlier = {"runs": dict(rows), "forget": {"indices_sha256": "abc"}, "seed": 0, "device": "cpu"}
    earlier["attack_config"] = {"relearn": {"lr": 0.01}}
    monkeypatch.setattr(scenarios, "previous_block", lambda data, name: earlier)
    argv = ["--data", "cifar10", "--scenarios", "random", "--relearn-lr", "0.01"]
    for bad in ([], ["--runs", "famr", "--replace"]):
        with pytest.raises(SystemExit):
            scenarios.parse_args([*argv, *bad, "--reuse-reference"])
        assert "give --runs, without --replace" in capsys.readouterr().err
    args = scenarios.parse_args([*argv, "--runs", "famr", "--reuse-reference"])
    splits = argparse.Namespace(forget_indices_sha256=lambda: "abc")
    assert scenarios.known(args, "random", splits, "cpu") == rows
    with pytest.raises(SystemExit, match="ran on cpu, this command on cuda:0"):
        scenarios.known(args, "random", splits, "cuda:0")
    splits.forget_indices_sha256 = lambda: "def"
    with pytest.raises(SystemExit, match="forgot another set"):
        scenarios.known(args, "random", splits, "cpu")
    args.reuse_reference = False
    assert scenarios.known(args, "random", splits, "cpu") is None
    del earlier["runs"]["retrain"]
    with pytest.raises(SystemExit):
        scenarios.parse_args([*argv, "--runs", "famr", "--reuse-reference"])
    assert "no earlier 'random' block with original and retrain" in capsys.readouterr().err


def test_the_study_keeps_only_rows_measured_as_its_grid_is_now():
    """famr_study --missing: another method's rows stay as they are (its relearning rates
    included); a rerun grid keeps a configuration only when every class has a row measured at
    the relearning attack's rates now, and runs the rest for every class; a configuration
    since taken out of the grid loses its rows; without --missing the rerun grid starts over."""
    study = _load("famr_study")
    rates = {str(x): 0.0 for x in study.RELEARN_LR}
    last = study.GRID["famr_last_stage"]
    head = study.GRID["famr_head"]

    def row(method, config, cls, **extra):
        return {"method": method, "config": config, "class": cls, **extra}

    rows = [
        row("famr_last_stage", last[0], 3, val_relearned_by_lr=rates),
        row("famr_last_stage", last[0], 8, val_relearned_by_lr=rates),  # complete: kept
        row("famr_last_stage", last[1], 3, val_relearned_by_lr=rates),  # class 8 at one rate
        row("famr_last_stage", last[1], 8),
        row("famr_last_stage", last[2], 3, val_relearned_by_lr=rates),  # class 8 missing
        row("famr_last_stage", {"lr": 9.0}, 3, val_relearned_by_lr=rates),  # not in the grid
        row("famr_head", head[0], 3),
        row("renamed", head[0], 3),
    ]
    grid = {"famr_last_stage": last}
    kept, left = study.rows_kept(rows, grid, True, [3, 8])
    assert kept == rows[:2] + [rows[6]]
    assert left == {"famr_last_stage": last[1:]}
    # the one-rate rows of a grid not rerun are another method's: kept
    kept, left = study.rows_kept(rows, {"famr_head": head}, True, [3])
    assert kept == rows[:7] and left == {"famr_head": head[1:]}
    kept, left = study.rows_kept(rows, grid, False, [3, 8])
    assert kept == [rows[6]] and left == grid


def test_the_study_merges_the_rows_of_parallel_runs():
    """famr_study --merge: the rerun grids' rows of other results files (one class each, run
    in parallel) replace this file's rows of the same configuration and class; other methods'
    rows there are not taken, and this file's other rows stay."""
    study = _load("famr_study")
    last = study.GRID["famr_last_stage"]

    def row(method, config, cls, value):
        return {"method": method, "config": config, "class": cls, "val_relearned": value}

    mine = [row("famr_last_stage", last[0], 3, 1.0), row("famr_head", last[0], 3, 2.0)]
    three = [row("famr_last_stage", last[0], 3, 10.0), row("famr_head", last[0], 3, 20.0)]
    eight = [row("famr_last_stage", last[0], 8, 30.0)]
    grid = {"famr_last_stage": last}
    merged = study.merged_rows(mine, [three, eight], grid)
    assert merged == [mine[1], three[0], eight[0]]

"""Requests beyond one class: several classes at once vs one after the other, and a random 10 %.

Per scenario: the original model, a model retrained without the forget set (the reference),
FAMR and the strongest baselines, all evaluated against the reference in the demo's run layout.

- ``classes``: forget two classes at once (CIFAR-10: cat and dog; digits: 3 and 5), compared
  with forgetting them one after the other (the second step anchored to its input, the
  default, or to the original weights), against one model retrained without both.
- ``random``: forget a random 10 % of the training set (SalUn protocol). FAMR pushed to the
  uniform prediction over-forgets; ``famr_quantile`` gives each
  forgotten image the held-out confidence of its rank as its target and stops at the held-out
  accuracy (three anchor settings; the one reported as chosen has the smallest gap estimated from
  the held-out and retain accuracies, see ``famr.bench.choose_quantile``).

- ``concept``: coarse labels (CIFAR-10: road vehicles, air & sea, pets, large animals, small
  animals; digits: loops, strokes, curves); forget "dog" inside "pets" (digits: 8 inside
  "loops") against a coarse model retrained without it; siblings (cats) must stay.
- ``style``: 20 % of every split rendered as sketches (inverted edge magnitude); forget the
  sketched training images against a model retrained on the natural ones.

    python benchmarks/scenarios.py --data digits                       # seconds
    python benchmarks/scenarios.py --data cifar10 --data-root ../shared/data/cifar10

Results: benchmarks/results/scenarios_cpu.json (CIFAR-10) or scenarios_<data>_cpu.json, and
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

import famr
from famr import bench, io
from famr.api import Result, resolve_device
from famr.bench import log
from famr.data import (
    CIFAR10_COARSE,
    DIGITS_COARSE,
    add_style,
    coarsen,
    hold_out_validation,
)
from famr.experiment import compare_methods
from famr.metrics.gaps import gaps

HERE = Path(__file__).resolve()
PAIRS = {"digits": (3, 5), "cifar10": (3, 5)}  # CIFAR-10: cat, dog
DIGITS_TRAIN = {"epochs": 15, "seed": 0}
BASELINES = ("finetune", "neggrad_plus", "random_label", "salun", "l1_sparse")
# famr_quantile configurations; which one the random scenario reports as chosen is decided by
# famr.bench.choose_quantile, from held-out and retain accuracies only. Measured on CIFAR-10 before this
# grid was fixed (probes, not in the tables; lr 3e-4): with the l2 anchor at lam 0.1 the forget
# accuracy settles at 88.8-89.8 % for beta 0.3 to 10 (lr 5e-4 then collapses; lr 1e-3 with a
# one-cycle warm-up dips to 87.8 % and comes back to 89 %); at lam 0 it reaches the held-out
# level in about 9 epochs for beta 0.3 and 1, while beta 10 ends 25 epochs at 88.3 %.
QUANTILE_RUNS = {
    "famr_quantile": {},  # the defaults: lam 0, beta 0.3
    "famr_quantile_beta1": {"beta": 1.0},
    "famr_quantile_l2": {"lam": 0.1, "beta": 10.0},  # the defaults before this grid
    # added for famr's time target (3 % of a retraining; beta 1 at lr 3e-4 took 13 %): the
    # same run at a rate three times higher, judged by the same held-out rule
    "famr_quantile_beta1_lr1e3": {"beta": 1.0, "lr": 1e-3},
}
SCENARIOS = ("classes", "random", "concept", "style")
SEQUENTIAL = ("famr_sequential", "famr_head_sequential", "famr_head_sequential_anchor_original")
# famr's last_stage recipe with the stage before the last re-initialised too (the trailing
# stages holding 90 % of the body's parameters: ResNet-20's layer2 and layer3). Measured, not
# chosen: on the digits it came far nearer the retrained model for a concept and a style (avg
# gap 10.3 and 0.94 against 24.6 and 22.6 with the last stage alone, 2026-12-07 exploration),
# and no validation-split rule picks the depth for those requests yet; for classes, whether
# the probe falls further toward the retrained model's level.
DEEP = {
    "method": "famr",
    "params": "last_stage:0.9",
    "forget_target": "distilled",  # the recipe's default when it was measured
    "epochs": 8,
    "mirror": False,
    "temperature": 1.0,
    "forget_features": 0.0,
}  # as measured
# famr's last_stage recipe as it was before the 2026-12-07 validation study chose the stage
# without its first block: the whole stage, here at twice the passes over the retain buffer
# (16 for 8). Measured, not chosen (a 2026-12-07 exploration on the concept, linear probe
# only, gave avg gap 6.85 at 16 passes against 9.68 at 8). Its values are written out, so that
# the rows it labels keep their meaning when famr's defaults change.
LONG = {
    "method": "famr",
    "params": "last_stage",
    "forget_target": "distilled",
    "epochs": 16,
    "mirror": False,
    "temperature": 1.0,
    "forget_features": 0.0,
}
# every run label of every scenario, for --runs (a label none has is refused before any work)
LABELS = (
    "famr",
    "famr_head",
    "famr_retain",
    "famr_literal",
    "famr_all",
    "famr_last_stage",
    "famr_deep",
    "famr_16_epochs",
    *QUANTILE_RUNS,
    *BASELINES,
    *SEQUENTIAL,
)
GROUPS = {"digits": DIGITS_COARSE, "cifar10": CIFAR10_COARSE}
CONCEPT = {"digits": 8, "cifar10": 5}  # CIFAR-10: dog, inside "pets"
STYLE_FRACTION = 0.2


def concept_scenario(args, data, arch, arch_args, train_cfg, device):
    """Coarse labels; forget one fine class inside its coarse class, against a coarse model
    retrained without it. Adds ``sibling_acc``: accuracy on the test images of the concept's
    coarse siblings (e.g. cats), which must stay recognised."""
    coarse = coarsen(data, GROUPS[args.data])
    concept = CONCEPT[args.data]
    coarse_args = {**arch_args, "num_classes": len(coarse.groups)}
    variant = " coarse"
    original = trained(args, coarse.data, arch, coarse_args, train_cfg, device, None, variant)
    spec = famr.ConceptForget(
        concept, coarse.fine_train, coarse.fine_test, data.class_names[concept]
    )
    splits = spec.split(coarse.data.train, coarse.data.test, len(coarse.groups))
    known_rows = known(args, "concept", splits, device)  # refused before any training
    retrained = trained(args, coarse.data, arch, coarse_args, train_cfg, device, spec, variant)
    runs = {
        "famr": {"method": "famr"},  # the retain set given: its last_stage recipe
        "famr_deep": dict(DEEP),
        "famr_16_epochs": dict(LONG),
        # without retain data, pushed to the uniform prediction over all coarse classes
        "famr_head": {"method": "famr", "recipe": "head", "target": "uniform"},
        "famr_retain": {"method": "famr_retain"},
        "famr_literal": {"method": "famr_literal"},
    }
    runs.update({name: {"method": name} for name in BASELINES})
    runs = chosen(runs, args)
    log(f"scenario concept {data.class_names[concept]}: {len(runs)} runs")
    experiment = compare_methods(
        original,
        retrained,
        splits,
        coarse.data,
        runs,
        seed=args.seed,
        device=device,
        log=log,
        probe_data=coarse.data.validation,
        attack_config=attack_config(args),
        known=known_rows,
    )
    group = next(g for g in coarse.groups.values() if concept in g)
    siblings = torch.isin(coarse.fine_test, torch.tensor([c for c in group if c != concept]))
    tx, ty = coarse.data.test.tensors
    sibling_set = TensorDataset(tx[siblings], ty[siblings])
    for name, model in experiment.models.items():
        experiment.results["runs"][name]["sibling_acc"] = famr.evaluate(
            model, test_retain=sibling_set, metrics=["test_retain_acc"], device=device
        )["test_retain_acc"]
    experiment.results["concept"] = {
        "concept": data.class_names[concept],
        "groups": {k: [data.class_names[c] for c in v] for k, v in coarse.groups.items()},
    }
    return experiment.results


def style_scenario(args, data, arch, arch_args, train_cfg, device):
    """A fraction of every split rendered in the sketch style; forget the stylised training
    images, against a model retrained on the natural ones only."""
    styled = add_style(data, STYLE_FRACTION, seed=args.seed)
    variant = f" sketch {STYLE_FRACTION}"
    original = trained(args, styled.data, arch, arch_args, train_cfg, device, None, variant)
    spec = famr.StyleForget(styled.styled_train, styled.styled_test)
    splits = spec.split(styled.data.train, styled.data.test, data.num_classes)
    known_rows = known(args, "style", splits, device)  # refused before any training
    retrained = trained(args, styled.data, arch, arch_args, train_cfg, device, spec, variant)
    runs = {
        "famr": {"method": "famr"},  # the retain set given: its last_stage recipe
        "famr_deep": dict(DEEP),
        "famr_16_epochs": dict(LONG),
        "famr_head": {"method": "famr", "recipe": "head", "target": "uniform"},
        "famr_retain": {"method": "famr_retain"},
        "famr_literal": {"method": "famr_literal"},
        # every parameter, the head recipe's optimiser: a style lives in the body, not the head
        "famr_all": {
            "method": "famr",
            "recipe": "head",
            "target": "uniform",
            "params": "all",
            "lr": 1e-3,
        },
    }
    runs.update({name: {"method": name} for name in BASELINES})
    runs = chosen(runs, args)
    log(f"scenario style: {len(runs)} runs")
    experiment = compare_methods(
        original,
        retrained,
        splits,
        styled.data,
        runs,
        seed=args.seed,
        device=device,
        log=log,
        probe_data=styled.data.validation,
        attack_config=attack_config(args),
        known=known_rows,
    )
    experiment.results["style"] = {"style": "sketch", "fraction": STYLE_FRACTION}
    return experiment.results


def results_name(data: str) -> str:
    """The results file's and BENCHMARKS.md section's name: ``scenarios_cpu`` for the CIFAR-10
    benchmark, ``scenarios_<data>_cpu`` for the others (digits: the seconds-long smoke run)."""
    return "scenarios_cpu" if data == "cifar10" else f"scenarios_{data}_cpu"


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", choices=sorted(PAIRS), default="digits")
    p.add_argument("--data-root", default=str(HERE.parents[2] / "shared/data/cifar10"))
    p.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--cache", default=str(HERE.parent / "cache"))
    bench.add_relearn_argument(p)
    p.add_argument(
        "--relearn-eval-limit",
        type=int,
        default=None,
        help="read the relearning attack's accuracy on a seeded sample of at most this many of "
        "the measured images (default: all; a random 10 %% of CIFAR-10 measures 4,455 forget "
        "images after every step of every rate)",
    )
    p.add_argument(
        "--runs",
        nargs="+",
        metavar="LABEL",
        help="run only these of each scenario's runs (original and retrain always run; default: "
        "all); they join the block's earlier runs in the results file (a run of the same label "
        "is replaced), which then lists them as reruns with their own command and date",
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="with --runs: write each scenario's block afresh with only these runs, instead of "
        "joining the earlier block (one measured with other attacks, say)",
    )
    p.add_argument(
        "--reuse-reference",
        action="store_true",
        help="with --runs: take the original and retrained models' attack values from the "
        "block's earlier rows instead of attacking them again (their metrics are measured again "
        "and must equal the rows'); on CIFAR-10 the two attacks take most of the ~10 minutes "
        "the two reference rows cost a join",
    )
    p.add_argument(
        "--table-only", action="store_true", help="rewrite the BENCHMARKS.md section from the JSON"
    )
    args = p.parse_args(argv)
    if args.reuse_reference and (not args.runs or args.replace or args.table_only):
        p.error(
            "--reuse-reference reuses an earlier block's rows: give --runs, without --replace "
            "or --table-only"
        )
    if args.reuse_reference:
        for name in args.scenarios:
            rows = (previous_block(args.data, name) or {}).get("runs", {})
            if not {"original", "retrain"} <= set(rows):
                p.error(
                    f"--reuse-reference: no earlier {name!r} block with original and retrain "
                    "rows to reuse; run it without --reuse-reference"
                )
    unknown = sorted(set(args.runs or ()) - set(LABELS))
    if unknown:
        p.error(
            f"--runs {' '.join(unknown)}: no scenario has such a run; choose from {', '.join(LABELS)}"
        )
    if args.runs and not args.table_only and not args.replace:
        # reruns join an earlier block only where its columns mean the same
        wanted = json.loads(json.dumps(attack_config(args)))
        for name in args.scenarios:
            block = previous_block(args.data, name)
            if block is not None and block.get("seed", args.seed) != args.seed:
                p.error(
                    f"--runs joins the earlier {name!r} block, measured with --seed "
                    f"{block['seed']} (other retrained models); pass --seed {block['seed']}"
                )
            if block is not None and block.get("attack_config") != wanted:
                p.error(
                    f"--runs joins the earlier {name!r} block, whose attacks ran with "
                    f"{json.dumps(block.get('attack_config'))}; pass the same --relearn-lr and "
                    f"--relearn-eval-limit (this command: {json.dumps(wanted)})"
                )
    return args


def previous_block(data: str, name: str) -> dict | None:
    """The results file's block of scenario ``name`` (``None`` when it has none)."""
    out = HERE.parent / "results" / f"{results_name(data)}.json"
    if not out.exists():
        return None
    return json.loads(out.read_text()).get("blocks", {}).get(name)


def known(args, name: str, splits, device) -> dict | None:
    """With ``--reuse-reference``, the earlier block's ``original`` and ``retrain`` rows (for
    :func:`famr.experiment.compare_methods`'s ``known``), once its forget set and device are
    this command's (checked before any model is trained or run)."""
    if not args.reuse_reference:
        return None
    block = previous_block(args.data, name)
    if block.get("device") != str(device):
        raise SystemExit(
            f"--reuse-reference: the earlier {name!r} block ran on {block.get('device')}, this "
            f"command on {device}; nothing is reused"
        )
    stored = block.get("forget", {}).get("indices_sha256")
    if stored != splits.forget_indices_sha256():
        raise SystemExit(
            f"--reuse-reference: the earlier {name!r} block forgot another set (indices sha256 "
            f"{stored}, this request's {splits.forget_indices_sha256()}); nothing is reused"
        )
    return {label: block["runs"][label] for label in ("original", "retrain")}


def merged(args, name: str, results: dict) -> dict:
    """With ``--runs``, this command's runs join the block's earlier ones (a label run again
    replaces its earlier entry; ``original`` and ``retrain`` come from the same cached models):
    the block keeps the command, date and environment it was first measured with and lists each
    rerun with its own (:func:`write` adds them to a fresh block only)."""
    previous = previous_block(args.data, name) if args.runs and not args.replace else None
    if previous is None:
        return results
    if previous.get("device") != results.get("device"):
        raise SystemExit(
            f"--runs: the earlier {name!r} block ran on {previous.get('device')}, this command on "
            f"{results.get('device')}; nothing is joined"
        )
    rerun = {
        "runs": [r for r in results["runs"] if r not in ("original", "retrain")],
        **stamp(args),
    }
    return {
        **previous,
        **{k: v for k, v in results.items() if k != "runs"},
        "runs": {**previous["runs"], **results["runs"]},
        "reruns": [*previous.get("reruns", []), rerun],
        **{k: previous[k] for k in STAMP if k in previous},
    }


def current_reruns(reruns: list[dict]) -> list[tuple[dict, list[str]]]:
    """Each rerun with the labels whose rows it still gives: a label measured again by a later
    rerun is named there only, and a rerun left naming none is not listed (the block's JSON
    keeps every rerun)."""
    shown = []
    later: set[str] = set()
    for rerun in reversed(reruns):
        labels = [r for r in rerun["runs"] if r not in later]
        later.update(rerun["runs"])
        if labels:
            shown.append((rerun, labels))
    return shown[::-1]


def chosen(runs: dict[str, dict], args) -> dict[str, dict]:
    """The runs ``--runs`` keeps (all of them without it)."""
    if not args.runs:
        return runs
    return {label: config for label, config in runs.items() if label in args.runs}


def attack_config(args) -> dict:
    """The attacks' configuration for every run of every scenario (famr.attacks.attack)."""
    relearn = {"lr": bench.relearn_lr(args.relearn_lr)}
    if args.relearn_eval_limit is not None:
        relearn["eval_limit"] = args.relearn_eval_limit
    return {"relearn": relearn}


def setup(args, device):
    """(data, arch, arch_args, train config, original Result) for the chosen data set."""
    if args.data == "digits":
        data = hold_out_validation(famr.load_dataset("digits"), 0.2, seed=0)
        arch, arch_args = "small_cnn", {"num_classes": 10, "in_channels": 1, "width": 16}
        train_cfg = dict(DIGITS_TRAIN)
    else:
        arch, arch_args, train_cfg, data = bench.cifar10_protocol(args.data_root)
    original = trained(args, data, arch, arch_args, train_cfg, device, None)
    return data, arch, arch_args, train_cfg, original


DATA_LABELS = {
    "digits": "digits, 20 % of each class held out (seed 0)",
    "cifar10": bench.CIFAR10_DATA_LABEL,  # the class-wise benchmark's: one cache for both
}


def trained(args, data, arch, arch_args, train_cfg, device, spec, variant="") -> Result:
    """The original (``spec=None``) or the model retrained without ``spec``'s forget set, the
    one way every benchmark trains them (famr.bench.trained_model: cached by configuration;
    ``variant`` names a relabelled or stylised data set)."""
    model, record = bench.trained_model(
        Path(args.cache),
        data,
        arch=arch,
        arch_args=arch_args,
        train_config={k: v for k, v in train_cfg.items() if k != "seed"},
        seed=args.seed,
        data_label=DATA_LABELS[args.data] + variant,
        device=device,
        without=spec,
    )
    return bench.as_result(model, record, "retrain" if spec else "train")


def sequential_runs(
    original,
    splits_all,
    first,
    second,
    data,
    device,
    reference,
    retrain_seconds,
    attacks=None,
    only=None,
):
    """Forget ``first`` then ``second`` with famr, each entry in the run layout.

    ``famr_sequential``: famr as a user runs it, given the retain set (its last_stage recipe;
    the second step's retain set is the training set without both classes). ``famr_head_*``:
    the no-retain recipe, the second step anchored to its input (default) or to the original
    weights, with the composed deviation bound."""
    from famr.theory import parameter_distances

    runs = {}
    both = sorted(set(first.forget_classes) | set(second.forget_classes))
    plans = [
        plan
        for plan in (
            ("famr_sequential", "last_stage", None),
            ("famr_head_sequential", "head", None),
            ("famr_head_sequential_anchor_original", "head", original.model),
        )
        if only is None or plan[0] in only
    ]
    for name, recipe, anchor in plans:
        retain = splits_all.retain if recipe == "last_stage" else None
        step1 = famr.unlearn(
            original.model,
            first.forget,
            first.retain if retain is not None else None,
            method="famr",
            device=device,
            recipe=recipe,
            forget_classes=first.forget_classes,
        )
        # incremental: the new forget set, anchored to the previous model; anchored to the
        # original: the cumulative forget set, warm-started at the previous model. Either way
        # the first class stays out of the "retained" target.
        forget = second.forget if anchor is None else splits_all.forget
        step2 = famr.unlearn(
            step1.model,
            forget,
            retain,
            method="famr",
            device=device,
            anchor=anchor,
            forget_classes=both,
            recipe=recipe,
        )
        entry = famr.evaluate(step2.model, **splits_all.evaluation_sets(), device=device)
        entry.update(gaps(entry, reference))
        given = famr.AttackData(splits_all, data.validation, original=original.model)
        entry.update(famr.attack(step2.model, given, device=device, config=attacks))
        entry["method"] = f"famr ({recipe}), then famr ({recipe})" + (
            " (anchor: original)" if anchor is not None else ""
        )
        entry["config"] = {"recipe": recipe}
        entry["seconds"] = step1.seconds + step2.seconds
        entry["time_ratio"] = entry["seconds"] / retrain_seconds
        if step1.certificate is not None and step2.certificate is not None:
            b1, b2 = step1.certificate["final_bound"], step2.certificate["final_bound"]
            entry["deviation_bound_from_original"] = b2 if anchor is not None else b1 + b2
        entry["distance_from_original"] = parameter_distances(original.model, step2.model)[0]
        runs[name] = entry
        log(
            f"{name}: "
            + ", ".join(
                f"{k} {entry[k]:.2f}"
                for k in ("forget_acc", "test_retain_acc", "mia_efficacy", "avg_gap")
            )
        )
    return runs


def main(argv=None) -> int:
    bench.reexec_with_tcmalloc(argv)
    args = parse_args(argv)
    if args.table_only:
        out = HERE.parent / "results" / f"{results_name(args.data)}.json"
        write_table(json.loads(out.read_text()))
        return 0
    device = resolve_device(args.device)
    data, arch, arch_args, train_cfg, original = setup(args, device)

    def finish(name: str, block: dict) -> None:
        """Write the block now (histories dropped): a later scenario's failure loses none that
        finished."""
        for run in block["runs"].values():
            run.pop("history", None)
        write(args, arch, train_cfg, {name: block})

    if "classes" in args.scenarios:
        a, b = PAIRS[args.data]
        spec = famr.ClassForget([a, b])
        splits = spec.split(data.train, data.test, data.num_classes)
        known_rows = known(args, "classes", splits, device)  # refused before any training
        retrained = trained(args, data, arch, arch_args, train_cfg, device, spec)
        runs = {
            "famr": {"method": "famr"},  # the retain set given: its last_stage recipe
            "famr_deep": dict(DEEP),
            "famr_16_epochs": dict(LONG),
            "famr_head": {"method": "famr", "recipe": "head"},  # without retain data
            "famr_literal": {"method": "famr_literal"},
        }
        runs.update({name: {"method": name} for name in BASELINES})
        runs = chosen(runs, args)
        log(f"scenario classes {a}+{b}: {len(runs)} runs")
        experiment = compare_methods(
            original,
            retrained,
            splits,
            data,
            runs,
            seed=args.seed,
            device=device,
            log=log,
            probe_data=data.validation,
            attack_config=attack_config(args),
            known=known_rows,
        )
        results = experiment.results
        reference = {k: v for k, v in results["runs"]["retrain"].items() if isinstance(v, float)}
        first = famr.ClassForget(a).split(data.train, data.test, data.num_classes)
        second = famr.ClassForget(b).split(data.train, data.test, data.num_classes)
        results["runs"].update(
            sequential_runs(
                original,
                splits,
                first,
                second,
                data,
                device,
                reference,
                retrained.seconds,
                attack_config(args),
                args.runs,
            )
        )
        finish("classes", merged(args, "classes", results))
    if "random" in args.scenarios:
        spec = famr.RandomForget(0.1, seed=args.seed)
        splits = spec.split(data.train, data.test, data.num_classes)
        known_rows = known(args, "random", splits, device)  # refused before any training
        retrained = trained(args, data, arch, arch_args, train_cfg, device, spec)
        runs = {
            # famr, handed the retain set and the held-out split, resolves to its quantile recipe
            # (famr_quantile at beta 1, the held-out rule's choice below); without the held-out
            # split, to last_stage: the stage re-initialised and distilled on the retain buffer
            "famr": {"method": "famr"},
            "famr_last_stage": {"method": "famr", "recipe": "last_stage"},
            # the no-retain tier: the head, pushed to the uniform prediction over all K
            "famr_head": {"method": "famr", "recipe": "head", "target": "uniform"},
            **{
                name: {"method": "famr_quantile", **overrides}
                for name, overrides in QUANTILE_RUNS.items()
            },
            "famr_literal": {"method": "famr_literal"},
        }
        runs.update({name: {"method": name} for name in BASELINES})
        runs = chosen(runs, args)
        log(f"scenario random 10 %: {len(runs)} runs")
        experiment = compare_methods(
            original,
            retrained,
            splits,
            data,
            runs,
            seed=args.seed,
            device=device,
            log=log,
            holdout=data.validation,
            probe_data=data.validation,
            attack_config=attack_config(args),
            known=known_rows,
        )
        block = merged(args, "random", experiment.results)
        # the original's accuracy on the held-out split, through the registry's accuracy metric
        holdout_acc = famr.evaluate(
            original.model, test_retain=data.validation, metrics=["test_retain_acc"], device=device
        )["test_retain_acc"]
        quantile = [name for name in QUANTILE_RUNS if name in block["runs"]]
        if quantile and set(quantile) & set(runs):  # chosen again when one of them ran
            block["chosen_famr_quantile"] = rechosen(block, holdout_acc, quantile, runs)
        finish("random", block)
    if "concept" in args.scenarios:
        finish(
            "concept",
            merged(
                args, "concept", concept_scenario(args, data, arch, arch_args, train_cfg, device)
            ),
        )
    if "style" in args.scenarios:
        finish(
            "style",
            merged(args, "style", style_scenario(args, data, arch, arch_args, train_cfg, device)),
        )
    return 0


TABLE = [
    ("forget_acc", "forget acc"),
    ("retain_acc", "RA"),
    ("test_retain_acc", "TA"),
    ("test_forget_acc", "TA forgotten"),
    ("mia_efficacy", "MIA-efficacy"),
    ("avg_gap", "avg gap"),
    ("sibling_acc", "siblings"),
    ("probe_test_forget_acc", "probe forgotten"),
    ("probe_forget_acc", "probe forget set"),
    ("probe_test_acc", "probe TA"),
    ("relearn_forget_acc", "relearned"),
    ("relearn_steps_to_half", "steps to half"),
    ("seconds", "seconds"),
]


def rechosen(block: dict, holdout_acc: float, quantile: list[str], ran) -> dict:
    """``famr.bench.choose_quantile`` over the block's runs; the runs not run again keep whether
    they reached the held-out level from the block's earlier choice (the file does not keep
    their histories, which say so)."""
    chosen = bench.choose_quantile(block["runs"], holdout_acc, quantile)
    earlier = block.get("chosen_famr_quantile") or {}
    kept = {r for r in earlier.get("reached_level", []) if r not in ran}
    chosen["reached_level"] = [r for r in quantile if r in kept or r in chosen["reached_level"]]
    return chosen


STAMP = ("command", "date", "environment", "attack_config")


def stamp(args) -> dict:
    """What a block records of the command that measured it (the keys of ``STAMP``)."""
    return {
        "command": "python benchmarks/scenarios.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "environment": bench.environment(),
        "attack_config": attack_config(args),
    }


def write(args, arch, train_cfg, blocks) -> None:
    """Merge this run's blocks into the results file (each block keeps the command, date and
    environment it was measured with) and rewrite the BENCHMARKS.md section from the file."""
    out = HERE.parent / "results" / f"{results_name(args.data)}.json"
    # a merged block (merged) already carries the stamp it was first measured with
    blocks = {name: {**stamp(args), **block} for name, block in blocks.items()}
    previous = json.loads(out.read_text()) if out.exists() else {}
    payload = {
        "benchmark": "scenarios",
        "data": args.data,
        "arch": arch,
        "seed": args.seed,
        "train_config": train_cfg,
        "blocks": {**previous.get("blocks", {}), **blocks},  # keep scenarios not rerun
    }
    io.write_text_atomic(out, io.json_text(payload))
    write_table(payload)
    log(f"wrote {out} and BENCHMARKS.md")


def _threads(env: dict) -> str:
    count = env.get("torch_threads")
    return f"{count} thread{'' if count == 1 else 's'}"


def _cell(entry: dict, key: str) -> str:
    if key not in entry:
        return "-"
    if key == "relearn_steps_to_half":
        return "never" if entry[key] is None else f"{entry[key]}"
    return f"{entry[key]:.2f}"


def write_table(payload) -> None:
    """The BENCHMARKS.md section of one data set's scenario results."""
    lines = [
        f"## Scenarios beyond one class ({payload['data']}, CPU)",
        "",
        f"{payload['arch']}, seed {payload['seed']}, default configurations (not tuned per "
        "scenario). Accuracies and MIA-efficacy in %, avg gap in points against `retrain` "
        "(retrained without the forget set); seconds of the method alone (training time for "
        "`original` and `retrain`). Each block names the command and environment it ran in. The "
        "attacks (famr.attacks), fit or tuned on the validation split: *probe forgotten* / "
        "*probe forget set* / *probe TA* = accuracy of a linear probe on the frozen penultimate "
        "features, on the forgotten test images / the forget set / the retained test images; "
        "*relearned* = accuracy on the forgotten data after 30 fine-tuning steps on 1 % of the "
        "forget set (at least 10 images) mixed with 3x as many retained ones; the `retrain` row "
        "is the level real forgetting reaches. For a concept the probe predicts the coarse "
        "labels (the same task as the model).",
    ]
    titles = {
        "classes": "Two classes at once, and one after the other",
        "random": "A random 10 % of the training set",
        "concept": "A concept inside a coarse class (TA forgotten = concept test images still "
        "given their coarse label; siblings = the coarse class's other members)",
        "style": f"A style: {STYLE_FRACTION:.0%} of the images rendered as sketches (TA "
        "forgotten = sketch test images, TA = natural test images)",
    }
    for name, block in payload["blocks"].items():
        lines += [
            "",
            f"**{titles[name]}** (forget set: {block['forget']['count']} training images)",
            "",
        ]
        env = block.get("environment") or payload.get("environment", {})
        command = block.get("command") or payload.get("command", "")
        lines += [
            f"Command: `{command}`; {env.get('cpu_count')}-core {env.get('machine')} CPU "
            f"(kernels {env.get('cpu_capability', 'not recorded')}), torch "
            f"{env.get('torch')} ({_threads(env)}), "
            f"{block.get('date') or payload.get('date')}.",
            "",
        ]
        relearn = block.get("attack_config", {}).get("relearn", {})
        rates = relearn.get("lr", 0.01)
        rates = list(rates) if isinstance(rates, (list, tuple)) else [rates]
        if len(rates) > 1 or "eval_limit" in relearn:
            lines += [
                f"Relearning attack at lr {', '.join(f'{r:g}' for r in rates)}"
                + (" (one run per rate; *relearned* is the strongest)" if len(rates) > 1 else "")
                + (
                    f", its accuracy read on a seeded sample of {relearn['eval_limit']} of the "
                    "measured images (the same for every run)"
                    if "eval_limit" in relearn
                    else ""
                )
                + ".",
                "",
            ]
        at = [k for k, _ in TABLE].index("relearn_forget_acc") + 1
        per_rate = [(f"relearn_lr_{r:g}", f"relearned at lr {r:g}") for r in rates]
        table = TABLE[:at] + (per_rate if len(rates) > 1 else []) + TABLE[at:]
        lines += [
            "| run | " + " | ".join(t for _, t in table) + " |",
            "|---|" + "---:|" * len(table),
        ]
        for run, entry in block["runs"].items():
            if "diverged" in entry:
                lines.append(f"| {run} | diverged |" + " |" * (len(table) - 1))
                continue
            by_lr = {
                f"relearn_lr_{float(r):g}": v for r, v in entry.get("relearn_by_lr", {}).items()
            }
            cells = [_cell({**entry, **by_lr}, k) for k, _ in table]
            lines.append(f"| {run} | " + " | ".join(cells) + " |")
        for rerun, labels in current_reruns(block.get("reruns", [])):
            env = rerun.get("environment", {})
            lines.append(
                f"\nRerun on {rerun['date']} ({env.get('cpu_count')}-core {env.get('machine')} "
                f"CPU, kernels {env.get('cpu_capability', 'not recorded')}, torch "
                f"{env.get('torch')}, {_threads(env)}): "
                f"{', '.join(f'`{r}`' for r in labels)}, with `{rerun['command']}`."
            )
        chosen = block.get("chosen_famr_quantile")
        if chosen:
            estimates = ", ".join(
                f"{n} {v:.2f}" for n, v in chosen.get("estimated_gap", {}).items()
            )
            lines.append(
                f"\nChosen `famr_quantile` run: **{chosen['run'] or 'none'}** ({chosen['rule']}; "
                f"held-out accuracy {chosen.get('holdout_acc', float('nan')):.2f}; estimated "
                f"gaps: {estimates or '-'}; the held-out rule stopped: "
                f"{', '.join(chosen['reached_level']) or 'none'})."
            )
        if name == "classes":  # the sequential runs with a certificate (the head recipe)
            for run, e in block["runs"].items():
                if "deviation_bound_from_original" not in e:
                    continue
                lines.append(
                    f"\n`{run}`: ‖θ−θ₀‖ = {e['distance_from_original']:.3f} within the composed "
                    f"certificate bound {e['deviation_bound_from_original']:.3f}."
                )
    bench.update_benchmarks_md(results_name(payload["data"]), "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())

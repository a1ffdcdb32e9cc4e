"""``famr demo``: train, retrain and unlearn one digit with every method; attack each; report."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .. import io
from ..api import resolve_device
from ..data import ClassForget, hold_out_validation, load_dataset
from .common import _folder_outputs, _plan, _progress_factory

DEMO_LAMS = (0.01, 0.1, 1.0, 10.0, 100.0)

DEMO_VALIDATION = 0.2

DEMO_FILES = (
    "results.json",
    "report.md",
    "per_class_accuracy.png",
    "confidence.png",
    "lambda_path.png",
)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..experiment import comparable_methods, run_class_forgetting
    from ..presets import PRESETS_SOURCE, configs_for
    from ..report import markdown_table, plot_confidence, plot_per_class_accuracy, report_markdown

    out = Path(args.out)
    plan = _plan(args, _folder_outputs(args.out, DEMO_FILES))
    # a fifth of the training set is held out of all training: the attacks' linear probe is
    # fit on it (never on the test set)
    data = hold_out_validation(load_dataset("digits"), DEMO_VALIDATION, seed=args.seed)
    ClassForget(args.forget_class).validate(data.num_classes)
    resolve_device(args.device)
    # every method at its configuration chosen on the digits validation split (famr.presets)
    configs = configs_for("digits", comparable_methods())
    experiment = run_class_forgetting(
        data,
        [args.forget_class],
        arch=args.arch,
        methods=configs,
        seed=args.seed,
        device=args.device,
        progress=_progress_factory(not args.quiet),
    )
    from ..experiment import lambda_path
    from ..report import lambda_path_markdown, plot_lambda_path

    splits = ClassForget(args.forget_class).split(data.train, data.test, data.num_classes)
    path = lambda_path(
        experiment.models["original"], splits, DEMO_LAMS, device=args.device, seed=args.seed
    )
    results = {
        **experiment.results,
        "configurations": {"source": PRESETS_SOURCE, "configs": configs},
        "lambda_path": path,
        "environment": io.environment(),
    }
    command = (
        "famr " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        if sys.argv[1:2] == ["demo"]
        else "famr demo"
    )
    with plan:
        plan.write_text(out / "results.json", io.json_text(results))
        report = report_markdown(results, command)
        report += (
            "\n## The lambda path of `famr` (its head recipe: the anchored objective)\n\n"
            + lambda_path_markdown(path)
            + "\n\n![lambda path](lambda_path.png)\n"
        )
        plan.write_text(out / "report.md", report)
        figures = {
            "per_class_accuracy.png": plot_per_class_accuracy(results),
            "confidence.png": plot_confidence(experiment.confidences),
            "lambda_path.png": plot_lambda_path(path),
        }
        for name, figure in figures.items():
            figure.savefig(plan.path_for(out / name), dpi=110, format="png")
        plan.commit()
    print(markdown_table(results["runs"]))
    # the certificate bounds the anchored objective: famr's head recipe (no retain data)
    famr_run = results["runs"].get("famr_head")
    if famr_run and famr_run.get("certificate"):
        c = famr_run["certificate"]
        print(
            f"\nFAMR certificate (famr_head): {'certified' if c['certified'] else 'NOT certified'}; "
            f"||theta - theta_0|| = {c['distance']:.4g} <= {c['final_bound']:.4g} (a priori {c['a_priori_bound']:.4g})"
        )
    print(
        f"\nwrote {out}/results.json, report.md, per_class_accuracy.png, confidence.png, lambda_path.png"
    )
    return 0

"""Results -> Markdown tables and matplotlib figures (returned, not written: the CLI saves them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

COLUMNS = [
    ("forget_acc", "forget acc", "{:.1f}"),
    ("retain_acc", "retain acc", "{:.1f}"),
    ("test_retain_acc", "test acc (retained)", "{:.1f}"),
    ("test_forget_acc", "test acc (forgotten)", "{:.1f}"),
    ("ua", "UA", "{:.1f}"),
    ("mia_efficacy", "MIA-efficacy", "{:.1f}"),
    ("avg_gap", "avg gap", "{:.2f}"),
    ("tow", "ToW", "{:.3f}"),
    ("seconds", "seconds", "{:.2f}"),
    ("time_ratio", "time / retrain", "{:.3f}"),
]
# the attacks (famr.attacks), shown when a run has them: what a linear probe finds of the
# forgotten class in the features, and what 30 relearning steps bring back
ATTACK_COLUMNS = [
    ("probe_test_forget_acc", "probe (forgotten)", "{:.1f}"),
    ("probe_test_acc", "probe (retained)", "{:.1f}"),
    ("relearn_forget_acc", "relearned", "{:.1f}"),
    ("relearn_steps_to_half", "steps to half", "{:.0f}"),
]


def markdown_table(
    runs: Mapping[str, Mapping[str, Any]], columns: Sequence[tuple[str, str, str]] = COLUMNS
) -> str:
    """One row per run, one column per metric (``-`` where a run lacks the metric; the attack
    columns are added when any run has them, ``never`` where relearning never reached half)."""
    if columns is COLUMNS and any("relearn_forget_acc" in run for run in runs.values()):
        columns = [*COLUMNS[:-2], *ATTACK_COLUMNS, *COLUMNS[-2:]]
    header = "| run | " + " | ".join(title for _, title, _ in columns) + " |"
    rule = "|---|" + "|".join("---:" for _ in columns) + "|"
    lines = [header, rule]
    for name, run in runs.items():
        cells = []
        for key, _, fmt in columns:
            value = run.get(key)
            if key == "relearn_steps_to_half" and value is None and "relearn_curve" in run:
                cells.append("never")
                continue
            cells.append(fmt.format(value) if isinstance(value, (int, float)) else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def certificate_markdown(certificate: Mapping[str, Any]) -> str:
    """A short Markdown summary of a FAMR deviation certificate."""

    def num(key: str) -> str:
        value = certificate.get(key)
        return "n/a (lam = 0)" if value is None else f"{value:.4g}"

    verdict = (
        "certified"
        if certificate["certified"]
        else "NOT certified (the objective did not decrease)"
    )
    return "\n".join(
        [
            f"- verdict: **{verdict}**",
            f"- lambda: {certificate['lam']:.4g}",
            f"- uniform loss L_f: {num('uniform_loss_before')} -> {num('uniform_loss_after')} "
            f"(minimum {num('uniform_minimum')})",
            f"- objective F: {num('objective_before')} -> {num('objective_after')}",
            f"- ||theta - theta_0||: {num('distance')} "
            f"(a-priori bound {num('a_priori_bound')}, bound at the final theta {num('final_bound')})",
        ]
    )


def report_markdown(results: Mapping[str, Any], command: str = "") -> str:
    """The demo/benchmark report: setup, the comparison table, FAMR's certificate, plots."""
    runs = results["runs"]
    names = results.get("class_names") or []
    forgotten = ", ".join(
        f"{c} ({names[c]})" if c < len(names) else str(c) for c in results["forget"]["classes"]
    )
    parts = [
        f"# famr report: forgetting class {forgotten} of {results['dataset']}",
        "",
        f"Architecture `{results.get('arch', '?')}`, seed {results['seed']}, device `{results['device']}`.",
    ]
    if command:
        parts += ["", f"Command: `{command}`"]
    parts += [
        "",
        "Accuracies, UA and MIA-efficacy in %; avg gap in points against `retrain`; ToW in [0, 1];"
        " `original` and `retrain` seconds are training times.",
    ]
    if any("relearn_forget_acc" in run for run in runs.values()):
        parts += [
            "The attacks read the weights, not only the outputs: *probe* = test accuracy on the "
            "forgotten (retained) classes of a logistic-regression probe fit on the frozen "
            "penultimate features of a validation split; *relearned* = test accuracy on the "
            "forgotten class after 30 fine-tuning steps on a few of its images mixed with "
            "retained ones; *steps to half* = steps until that accuracy reached half the "
            "original's. The `retrain` row is the level real forgetting reaches.",
        ]
    parts += ["", markdown_table(runs)]
    if "configurations" in results:
        chosen = results["configurations"]
        parts += ["", f"Configurations: {chosen['source']}.", ""]
        parts += ["| run | configuration |", "|---|---|"]
        for name, config in chosen["configs"].items():
            shown = ", ".join(f"{k}={v}" for k, v in config.items()) or "defaults"
            parts.append(f"| {name} | {shown} |")
    recipes = {  # famr's own runs (its presets, famr_retain and famr_quantile, are named)
        name: run["config"]["recipe"]
        for name, run in runs.items()
        if run.get("method") == "famr"
        and isinstance(run.get("config"), dict)
        and run["config"].get("recipe")
    }
    if recipes:  # what famr's "auto" resolved to (or was told), from the recorded configs
        parts += [
            "",
            "famr's recipes as run: "
            + ", ".join(f"`{name}` {recipe}" for name, recipe in recipes.items())
            + " (resolved from the request unless a run names its recipe: last_stage when it "
            "holds a retain set, head when not).",
        ]
    for name, run in runs.items():
        if "certificate" in run:
            parts += ["", f"## Certificate: `{name}`", "", certificate_markdown(run["certificate"])]
    parts += [
        "",
        "## Plots",
        "",
        "![per-class test accuracy](per_class_accuracy.png)",
        "",
        "![true-label confidence](confidence.png)",
        "",
    ]
    return "\n".join(parts)


def plot_per_class_accuracy(
    results: Mapping[str, Any], runs: Sequence[str] = ("original", "retrain", "famr")
):
    """Grouped bars of per-class test accuracy for ``runs``; returns a matplotlib Figure."""
    from matplotlib.figure import Figure

    names = results.get("class_names") or [
        str(k) for k in range(len(results["runs"]["original"]["per_class_test_acc"]))
    ]
    fig = Figure(figsize=(8, 3.5), tight_layout=True)
    ax = fig.add_subplot()
    present = [r for r in runs if r in results["runs"]]
    width = 0.8 / max(1, len(present))
    for i, run in enumerate(present):
        values = results["runs"][run]["per_class_test_acc"]
        ax.bar(
            [k + (i - (len(present) - 1) / 2) * width for k in range(len(values))],
            values,
            width,
            label=run,
        )
    for c in results["forget"]["classes"]:
        ax.axvspan(c - 0.45, c + 0.45, color="grey", alpha=0.15, lw=0)
    ax.set_xticks(range(len(names)), names, rotation=45 if max(map(len, names)) > 3 else 0)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Per-class test accuracy (forgotten class shaded)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    return fig


def plot_confidence(
    confidences: Mapping[str, Mapping[str, Any]], runs: Sequence[str] = ("original", "famr")
):
    """Histograms of true-label confidence on forget vs test images, before and after FAMR."""
    from matplotlib.figure import Figure

    present = [r for r in runs if r in confidences]
    fig = Figure(figsize=(4 * len(present), 3.2), tight_layout=True)
    bins = [i / 25 for i in range(26)]
    for i, run in enumerate(present):
        ax = fig.add_subplot(1, len(present), i + 1)
        for split, label in (
            ("forget", "forget (train)"),
            ("test_forget", "forgotten class (test)"),
            ("test_retain", "retained classes (test)"),
        ):
            if split in confidences[run]:
                values = confidences[run][split].float().numpy()
                ax.hist(values, bins=bins, alpha=0.5, density=True, label=label)
        ax.set_title(run)
        ax.set_xlabel("softmax probability of the true label")
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
    return fig


def plot_lambda_path(rows: Sequence[Mapping[str, Any]]):
    """Forgetting vs retention along the lambda path, and ||theta - theta_0|| with its bound."""
    from matplotlib.figure import Figure

    lams = [r["lam"] for r in rows]
    # lambda = 0 (no anchor) has no place on a log axis: symlog keeps it, linear near zero
    xscale = ("symlog", {"linthresh": min((v for v in lams if v > 0), default=1.0)})
    xscale = xscale if any(v <= 0 for v in lams) else ("log", {})
    fig = Figure(figsize=(10, 3.6), tight_layout=True)
    left = fig.add_subplot(1, 2, 1)
    for key, label, style in (
        ("test_forget_acc", "test acc, forgotten class", "o-"),
        ("forget_acc", "forget-set acc", "o--"),
        ("mia_efficacy", "MIA-efficacy", "s-"),
        ("test_retain_acc", "test acc, retained classes", "^-"),
        ("retain_acc", "retain-set acc", "^--"),
    ):
        if all(key in r for r in rows):
            left.plot(lams, [r[key] for r in rows], style, label=label)
    left.set_xscale(xscale[0], **xscale[1])
    left.set_xlabel("anchor strength lambda")
    left.set_ylabel("%")
    left.set_title("Forgetting vs retention")
    left.legend(fontsize=7)
    right = fig.add_subplot(1, 2, 2)
    for key, label, style in (
        ("distance", "||theta - theta_0|| (achieved)", "o-"),
        ("final_bound", "bound at the final theta", "v--"),
        ("a_priori_bound", "a-priori bound", "x:"),
    ):
        # a log axis has no place for 0 or a missing value (no certificate): leave them out
        pts = [(r["lam"], r[key]) for r in rows if r.get(key) is not None and r[key] > 0]
        if pts:
            right.plot(*zip(*pts, strict=True), style, label=label)
    right.set_xscale(xscale[0], **xscale[1])
    right.set_yscale("log")
    right.set_xlabel("anchor strength lambda")
    right.set_title("Distance moved and the certificate bound")
    right.legend(fontsize=7)
    return fig


def lambda_path_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """A table of the lambda path."""
    cols = [
        ("lam", "lambda", "{:g}"),
        ("forget_acc", "forget acc", "{:.1f}"),
        ("test_forget_acc", "test acc (forgotten)", "{:.1f}"),
        ("mia_efficacy", "MIA-efficacy", "{:.1f}"),
        ("retain_acc", "retain acc", "{:.1f}"),
        ("test_retain_acc", "test acc (retained)", "{:.1f}"),
        ("distance", "||theta-theta_0||", "{:.4g}"),
        ("final_bound", "bound", "{:.4g}"),
        ("a_priori_bound", "a-priori bound", "{:.4g}"),
    ]
    return markdown_table({f"{r['lam']:g}": r for r in rows}, cols[1:]).replace(
        "| run |", "| lambda |"
    )


def attack_markdown(results: Mapping[str, Mapping[str, Any]], request: Mapping[str, Any]) -> str:
    """The attacks on each model (original, retrained, unlearned), with what they mean."""
    rows = [
        ("probe_test_forget_acc", "probe: forgotten class, test images (%)", "{:.1f}"),
        ("probe_forget_acc", "probe: forget set (%)", "{:.1f}"),
        ("probe_test_acc", "probe: retained test images (%)", "{:.1f}"),
        ("relearn_start_acc", "forgotten accuracy before relearning (%)", "{:.1f}"),
        ("relearn_forget_acc", "forgotten accuracy after relearning (%)", "{:.1f}"),
        ("relearn_steps_to_half", "relearning steps to half the original's level", "{:.0f}"),
    ]
    roles = list(results)
    lines = [
        f"# Attacks on the request {dict(request)}",
        "",
        "The retrained model's values are the level that real forgetting reaches; an unlearned "
        "model near the original's hides what it knows rather than forgetting it.",
        "",
        "| attack | " + " | ".join(roles) + " |",
        "|---|" + "|".join("---:" for _ in roles) + "|",
    ]
    for key, title, fmt in rows:
        if not any(key in r for r in results.values()):
            continue
        cells = []
        for role in roles:
            value = results[role].get(key)
            if key == "relearn_steps_to_half" and value is None and key in results[role]:
                cells.append("never")
            else:
                cells.append(fmt.format(value) if isinstance(value, (int, float)) else "-")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_attacks(results: Mapping[str, Mapping[str, Any]]):
    """Probe accuracy per model (bars) and the relearning curves."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6), tight_layout=True)
    left = fig.add_subplot(1, 2, 1)
    roles = list(results)
    keys = [
        (k, label)
        for k, label in (
            ("probe_test_forget_acc", "forgotten class (test)"),
            ("probe_forget_acc", "forget set"),
            ("probe_test_acc", "retained (test)"),
        )
        if any(k in r for r in results.values())
    ]
    width = 0.8 / max(1, len(keys))
    for i, (key, label) in enumerate(keys):
        values = [results[r].get(key, 0.0) for r in roles]
        left.bar([j + i * width for j in range(len(roles))], values, width, label=label)
    left.set_xticks([j + width * (len(keys) - 1) / 2 for j in range(len(roles))], roles)
    left.set_ylabel("linear-probe accuracy (%)")
    left.set_title("What a linear probe finds in the features")
    if keys:
        left.legend(fontsize=7)
    right = fig.add_subplot(1, 2, 2)
    for role in roles:
        curve = results[role].get("relearn_curve")
        if curve:
            right.plot(
                range(0, len(curve) + 1),
                [results[role]["relearn_start_acc"], *curve],
                "o-",
                markersize=3,
                label=role,
            )
    right.set_xlabel("relearning step")
    right.set_ylabel("accuracy on the forgotten data (%)")
    right.set_title("What a few fine-tuning steps bring back")
    if any(results[r].get("relearn_curve") for r in roles):
        right.legend(fontsize=7)
    return fig

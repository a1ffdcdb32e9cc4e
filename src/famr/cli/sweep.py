"""``famr sweep-lambda``: FAMR over a lambda grid, forgetting against retention."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from .. import io
from ..config import config_dict, make_config
from ..data.files import EVAL_SAMPLE, RETAIN_LIMIT, evaluation_sets, materialise, sample
from ..methods import METHODS
from .common import (
    UsageError,
    _check_data_fits,
    _config_values,
    _floats,
    _folder_outputs,
    _load_data,
    _parse_classes,
    _plan,
    _splits_for,
)

SWEEP_FILES = ("sweep.json", "sweep.md", "lambda_path.png")


def cmd_sweep_lambda(args: argparse.Namespace) -> int:
    from ..experiment import lambda_path
    from ..report import lambda_path_markdown, plot_lambda_path

    out = Path(args.out)
    plan = _plan(args, _folder_outputs(args.out, SWEEP_FILES))
    lams = _floats(args.lams, "lams") or []
    bad = [v for v in lams if not (v == v and 0 <= v < float("inf"))]
    if not lams or bad:
        raise UsageError(
            f"--lams {args.lams!r} is not valid; give finite numbers >= 0, e.g. 0.01,0.1,1"
        )
    entry = METHODS.get(args.method)
    values = _config_values(args, ())
    config = config_dict(make_config(entry.meta["config"], values, parse=True))
    config.pop("lam")
    model, meta = io.load_checkpoint(args.checkpoint)
    data = _load_data(args, meta.get("validation"))
    _check_data_fits(meta, data, "--checkpoint")
    splits = _splits_for(data, _parse_classes(args.classes))
    if data.path == "files":  # each set decoded once, the large ones as bounded samples
        sets = {k: materialise(v) for k, v in evaluation_sets(splits, EVAL_SAMPLE).items()}
        sets["retain"] = materialise(sample(splits.retain, RETAIN_LIMIT))
        splits = replace(splits, **sets)
    rows = lambda_path(model, splits, lams, method=args.method, device=args.device, **config)
    with plan:
        plan.write_text(
            out / "sweep.json",
            io.json_text({"method": args.method, "config": config, "rows": rows}),
        )
        plan.write_text(out / "sweep.md", lambda_path_markdown(rows) + "\n")
        plot_lambda_path(rows).savefig(
            plan.path_for(out / "lambda_path.png"), dpi=110, format="png"
        )
        plan.commit()
    print(lambda_path_markdown(rows))
    print(f"wrote {out}/sweep.json, sweep.md, lambda_path.png")
    return 0

"""``famr attack``: the attacks on an unlearned checkpoint, the original and a retrained one."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import io
from ..attacks import ATTACKS, AttackData, attack
from ..config import config_dict, make_config
from ..data.files import EVAL_SAMPLE, RETAIN_LIMIT, evaluation_sets, materialise, sample
from ..data.request import spec_from_record
from .common import (
    UsageError,
    _build_data,
    _check_data_fits,
    _data_request,
    _folder_outputs,
    _forget_spec,
    _plan,
)

ATTACK_FILES = ("attack.json", "attack.md", "attack.png")


def _attack_options(items: list[str] | None) -> dict[str, dict[str, Any]]:
    options: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        name, dot, field = key.partition(".")
        if not sep or not dot:
            raise UsageError(
                f"--set {item!r} is not valid; use ATTACK.KEY=VALUE, e.g. relearn.steps=20"
            )
        ATTACKS.get(name.strip())
        options.setdefault(name.strip(), {})[field.strip().replace("-", "_")] = value
    return {
        name: config_dict(make_config(ATTACKS.get(name).meta["config"], values, parse=True))
        for name, values in options.items()
    }


def cmd_attack(args: argparse.Namespace) -> int:
    from ..report import attack_markdown, plot_attacks

    out = Path(args.out)
    plan = _plan(args, _folder_outputs(args.out, ATTACK_FILES))
    names = None if args.attacks is None else [a.strip() for a in args.attacks.split(",")]
    if names is not None and not all(names):
        raise UsageError(
            f"--attacks {args.attacks!r} names no attack; choose from {ATTACKS.names()}"
        )
    for name in names or []:
        ATTACKS.get(name)
    options = _attack_options(args.set)
    paths = {"original": args.original, "retrained": args.retrained, "unlearned": args.unlearned}
    models, metas = {}, {}
    for role, path in paths.items():
        if path:
            models[role], metas[role] = io.load_checkpoint(path)
    validations = {role: meta.get("validation") for role, meta in metas.items()}
    if len({json.dumps(v, sort_keys=True) for v in validations.values()}) > 1:
        raise UsageError(
            f"the checkpoints were trained with different validation splits {validations}; "
            "train them with the same famr train --validation and --validation-seed"
        )
    validation = validation_record = validations["unlearned"]
    wants_probe = names is None or "linear_probe" in names
    if wants_probe and validation is None:
        raise UsageError(
            "the linear probe needs examples none of the models trained on: train them with "
            "famr train --validation 0.1 (the same for the retrained model), or pass "
            "--attacks relearn"
        )
    data, derived = _build_data(_data_request(args, validation), args.workers)
    for role, meta in metas.items():
        _check_data_fits(meta, data, f"--{role}")
    if args.classes or args.indices or args.concept or args.forget_style:
        spec = _forget_spec(args, derived)
    elif metas["unlearned"].get("forget"):
        spec = spec_from_record(metas["unlearned"]["forget"], derived)
    else:
        raise UsageError("--unlearned records no request: give --classes, --indices, ...")
    splits = spec.split(data.train, data.test, data.num_classes)
    validation = data.validation  # the held-out images themselves
    if data.path == "files":  # decode each set once, the large ones as bounded samples
        sets = {k: materialise(v) for k, v in evaluation_sets(splits, EVAL_SAMPLE).items()}
        sets["retain"] = materialise(sample(splits.retain, RETAIN_LIMIT))
        splits = replace(splits, **sets)
        validation = materialise(sample(validation, RETAIN_LIMIT))
    given = AttackData(splits, validation, original=models["original"])
    results = {
        role: attack(model, given, names, device=args.device, config=options)
        for role, model in models.items()
    }
    payload = {
        "request": spec.to_dict(),
        "checkpoints": {role: str(path) for role, path in paths.items() if path},
        "validation": validation_record,
        "attacks": names or [e.name for e in ATTACKS],
        "config": options,
        "results": results,
        "environment": io.environment(),
    }
    with plan:
        plan.write_text(out / "attack.json", io.json_text(payload))
        plan.write_text(out / "attack.md", attack_markdown(results, spec.to_dict()) + "\n")
        plot_attacks(results).savefig(plan.path_for(out / "attack.png"), dpi=110, format="png")
        plan.commit()
    print(attack_markdown(results, spec.to_dict()))
    print(f"wrote {out}/attack.json, attack.md, attack.png")
    return 0

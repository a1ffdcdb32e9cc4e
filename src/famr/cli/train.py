"""``famr train``: train a model (optionally without some classes, or with a validation split held out)."""

from __future__ import annotations

import argparse
from typing import Any

from .. import io
from ..api import evaluate, train
from ..config import TrainConfig, config_dict, make_config
from ..models import create_model
from .common import (
    UsageError,
    _checkpoint_out,
    _config_values,
    _load_data,
    _parse_classes,
    _plan,
    _progress_factory,
    _speed_note,
    _splits_for,
)

# the tensor path's preload limit (famr.data.imagefolder), for training on the file path too
MAX_TRAIN_GIB = 8.0


def _arch_args(items: list[str], fixed: dict[str, Any]) -> dict[str, Any]:
    """``--arch-arg KEY=VALUE`` as a dict (VALUE as JSON when it parses, else as text)."""
    import json

    values: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UsageError(f"--arch-arg {item!r} is not valid; use KEY=VALUE, e.g. img_size=64")
        if key in fixed:
            raise UsageError(f"--arch-arg {key}: famr sets it from the data ({fixed[key]!r})")
        try:
            values[key] = json.loads(text)
        except ValueError:
            values[key] = text
    return values


def cmd_train(args: argparse.Namespace) -> int:
    out = _checkpoint_out(args.out)
    plan = _plan(args, [out, io.sidecar_path(out)])
    values = _config_values(args, ("epochs", "lr", "batch_size", "seed"))
    cfg = make_config(TrainConfig, values, parse=True)
    _speed_note(cfg, args.device)
    validation = None
    if args.validation is not None:
        validation = {"fraction": args.validation, "seed": args.validation_seed}
    data = _load_data(args, validation)
    dataset = data.train
    if data.path == "files" and dataset.decoded_gib() > MAX_TRAIN_GIB:
        raise UsageError(
            f"famr train decodes every training image: {len(dataset)} images at "
            f"{data.image_size}x{data.image_size} need {dataset.decoded_gib():.1f} GiB as uint8, "
            f"over {MAX_TRAIN_GIB:g} GiB; lower --image-size or use --classes-file (famr forget "
            "reads such a tree on the file data path)"
        )
    excluded: list[int] = []
    if args.exclude_classes:
        excluded = _parse_classes(args.exclude_classes)
        dataset = _splits_for(data, excluded).retain
    arch_args: dict[str, Any] = {"num_classes": data.num_classes, "in_channels": data.in_channels}
    if data.mean is not None:
        arch_args.update(mean=list(data.mean), std=list(data.std))
    arch_args.update(_arch_args(args.arch_arg or [], arch_args))
    import torch

    if args.init and args.arch_arg:
        raise UsageError("--arch-arg describes a new model; with --init the checkpoint's own apply")
    if args.init:
        model, init_meta = io.load_checkpoint(args.init)
        if init_meta["arch"] != args.arch:
            raise UsageError(
                f"--init checkpoint is a {init_meta['arch']!r}, not --arch {args.arch!r}"
            )
        if init_meta["arch_args"].get("num_classes") != data.num_classes:
            raise UsageError(
                f"--init checkpoint has {init_meta['arch_args'].get('num_classes')} classes but "
                f"data set {args.data!r} has {data.num_classes}"
            )
        arch_args = init_meta["arch_args"]
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            try:
                model = create_model(args.arch, **arch_args)
            except (TypeError, AssertionError, RuntimeError) as err:  # an --arch-arg it refuses
                first = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise UsageError(f"--arch {args.arch} with {args.arch_arg}: {first}") from None
    result = train(
        model,
        dataset,
        device=args.device,
        progress=_progress_factory(not args.quiet)("train"),
        **config_dict(cfg),
    )
    test_metrics = evaluate(
        result.model, test_retain=data.test, metrics=["test_retain_acc"], device=args.device
    )
    meta = {
        "arch": args.arch,
        "arch_args": arch_args,
        "dataset": args.data,
        "excluded_classes": excluded,
        "validation": validation,
        "init_checkpoint": str(args.init) if args.init else None,
        "config": config_dict(cfg),
        "metrics": {"test_acc": test_metrics["test_retain_acc"], "seconds": result.seconds},
        "history": result.history,
        "environment": io.environment(),
    }
    with plan:
        io.save_checkpoint(out, result.model, meta, stage=plan)
        plan.commit()
    print(
        f"trained {args.arch} on {args.data} in {result.seconds:.1f} s: test accuracy "
        f"{test_metrics['test_retain_acc']:.2f} %; saved {out}"
    )
    return 0
